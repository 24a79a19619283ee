"""The CloudWatch metrics (EMF) of a finished build, dimensioned by trigger and mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

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
