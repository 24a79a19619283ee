"""The CloudWatch metrics (EMF) of a finished build, dimensioned by trigger and mode.

With a Bake file, each image also gets its own metric set, dimensioned by trigger, mode
and `image` (`image_metric_sets`). Those go out as one EMF document per image
(`emit_image_metrics`), apart from the build's document: an EMF document gives every
dimension set to every metric in it, so per-image values in the build's document would
be counted again under the build's dimensions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from layercache import dimensions
from layercache.build_records import BuildStatus


@dataclass(frozen=True)
class MetricPoint:
    name: str
    unit: MetricUnit
    value: float


def metric_dimensions(record: Mapping[str, Any]) -> dict[str, str]:
    return {
        dimensions.TRIGGER: str(record.get("trigger") or "unknown"),
        dimensions.MODE: str(record.get("mode") or "unknown"),
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


def metric_points(record: Mapping[str, Any], status: BuildStatus) -> list[MetricPoint]:
    """BuildDuration, QueueTime, CacheHitRatio (0..1) where known, and one outcome count.

    STOPPED counts as BuildStopped, not BuildFailed: superseded builds are stopped on
    purpose.
    """
    if not status.is_final:
        return []
    points: list[MetricPoint] = []
    for name, attribute, unit in (
        ("BuildDuration", "duration_seconds", MetricUnit.Seconds),
        ("QueueTime", "queued_seconds", MetricUnit.Seconds),
        ("CacheHitRatio", "cache_hit_ratio", MetricUnit.NoUnit),
    ):
        value = _number(record.get(attribute))
        if value is not None:
            points.append(MetricPoint(name, unit, value))
    if status is BuildStatus.SUCCEEDED:
        outcome = "BuildSucceeded"
    elif status is BuildStatus.STOPPED:
        outcome = "BuildStopped"
    else:
        outcome = "BuildFailed"
    points.append(MetricPoint(outcome, MetricUnit.Count, 1))
    return points


@dataclass(frozen=True)
class ImageMetricSet:
    """The metrics of one image of a Bake file's build, with their dimensions."""

    dimensions: dict[str, str] = field(default_factory=dict)
    points: tuple[MetricPoint, ...] = ()


def image_metric_sets(record: Mapping[str, Any], status: BuildStatus) -> list[ImageMetricSet]:
    """Per image of a finished build's record (its `images`): CacheHitRatio (0..1),
    ImageBuildSeconds and ImagePushSeconds where known, by trigger, mode and image."""
    if not status.is_final:
        return []
    images = record.get("images")
    if not isinstance(images, list):
        return []
    build_dimensions = metric_dimensions(record)
    sets: list[ImageMetricSet] = []
    for entry in images:
        name = entry.get("image") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            continue
        points = [
            MetricPoint(metric, unit, value)
            for metric, attribute, unit in (
                ("CacheHitRatio", "cache_hit_ratio", MetricUnit.NoUnit),
                ("ImageBuildSeconds", "build_seconds", MetricUnit.Seconds),
                ("ImagePushSeconds", "push_seconds", MetricUnit.Seconds),
            )
            if (value := _number(entry.get(attribute))) is not None
        ]
        if points:
            sets.append(ImageMetricSet({**build_dimensions, dimensions.IMAGE: name}, tuple(points)))
    return sets


def emit_image_metrics(sets: Iterable[ImageMetricSet]) -> None:
    """Print one EMF document per image (namespace and `service` as Powertools' Metrics)."""
    for metric_set in sets:
        emf = EphemeralMetrics()
        for name, value in metric_set.dimensions.items():
            emf.add_dimension(name=name, value=value)
        for point in metric_set.points:
            emf.add_metric(name=point.name, unit=point.unit, value=point.value)
        emf.flush_metrics()
