"""A Bake file's build: its LAYERCACHE_IMAGES parsed, recorded, measured and reported.

With a Bake file one build publishes several images; the build driver exports one JSON
result per image (buildspecs/bake_build.py, ImageResult.as_json). In single-Dockerfile
mode the variable is empty and nothing here changes what the recorder writes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from layercache import dimensions
from layercache.build_records import BuildStatus, to_attribute_values
from layercache.recording.build import (
    BuildFacts,
    ImageOutput,
    parse_images,
    parse_outputs,
    repository_name,
)
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.github import MAX_DESCRIPTION, commit_status_for
from layercache.recording.items import progress_fields, record_update
from layercache.recording.metrics import (
    emit_image_metrics,
    image_metric_sets,
    metric_dimensions,
    metric_points,
)
from layercache.recording.notify import failure_notification
from tests.conftest import emitted_metrics

EVENTS = Path(__file__).resolve().parents[3] / "events" / "build-recorder"
NOW = datetime(2024, 5, 14, 9, 40, tzinfo=UTC)
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def entry(image: str, **changes: Any) -> dict[str, Any]:
    """One image's result as the build driver exports it."""
    base: dict[str, Any] = {
        "image": image,
        "repository": f"{REGISTRY}/team/service/{image}",
        "digest": "sha256:" + (image.encode().hex() * 64)[:64],
        "tags": [SHA, "main-9fceb02"],
        "moving_tags": ["main", "latest"],
        "built_on": [],
        "cache_hit_ratio": 0.5,
        "cached_steps": 1,
        "total_steps": 2,
        "cache_ref_hit": f"{REGISTRY}/team/service/{image}:cache-main",
        "build_seconds": 0.4,
        "push_seconds": 0.4,
        "cache_export_seconds": 0.1,
        "cache_status": "warm",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def images_json(*entries: Any) -> str:
    return json.dumps(list(entries), separators=(",", ":"))


def bake_exports(*entries: Any) -> dict[str, str]:
    """The variables a Bake file's build exports: totals, no digest, and the images."""
    return {
        "LAYERCACHE_IMAGE_DIGEST": "",
        "LAYERCACHE_IMAGE_TAGS": "",
        "LAYERCACHE_MOVING_TAGS": "main,latest",
        "LAYERCACHE_CACHE_HIT_RATIO": "0.750",
        "LAYERCACHE_CACHE_REF_HIT": "cache-main",
        "LAYERCACHE_BUILD_SECONDS": "12.5",
        "LAYERCACHE_PUSH_SECONDS": "1.2",
        "LAYERCACHE_IMAGES": images_json(*entries),
    }


def facts_of(name: str, exported: dict[str, str] | None = None) -> BuildFacts:
    event = json.loads((EVENTS / f"{name}.json").read_text())
    facts = BuildStateChangeEvent.model_validate(event).facts()
    return replace(facts, exported=exported) if exported is not None else facts


# ---------------------------------------------------------------- parsing
def test_an_image_entry_is_parsed_into_typed_exact_values() -> None:
    [image] = parse_images(images_json(entry("api", built_on=["base"])))

    assert image == ImageOutput(
        image="api",
        repository="team/service/api",
        digest="sha256:" + (b"api".hex() * 64)[:64],
        tags=(SHA, "main-9fceb02"),
        moving_tags=("main", "latest"),
        built_on=("base",),
        cache_hit_ratio=Decimal("0.5"),
        cached_steps=1,
        total_steps=2,
        cache_ref_hit=f"{REGISTRY}/team/service/api:cache-main",
        build_seconds=Decimal("0.4"),
        push_seconds=Decimal("0.4"),
        cache_export_seconds=Decimal("0.1"),
        cache_status="warm",
    )


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        (f"{REGISTRY}/team/app/api", "team/app/api"),
        (f"{REGISTRY}/api", "api"),
        ("127.0.0.1:5000/team/api", "team/api"),
        ("localhost/api", "api"),
        ("team/api", "team/api"),  # no host: the whole path is the name
        (f"{REGISTRY}/team/api@sha256:" + "0" * 64, "team/api"),
        (f"{REGISTRY}/Team/API", None),  # not an ECR repository name
        (f"{REGISTRY}/", None),
        (f"{REGISTRY}/team//api", None),
    ],
)
def test_the_repository_name_is_the_uris_path_after_the_registry(
    uri: str, name: str | None
) -> None:
    assert repository_name(uri) == name


@pytest.mark.parametrize(
    "text",
    ["not json", "{", '{"image": "api"}', '"api"', "42", "null"],
    ids=["garbage", "truncated", "an-object", "a-string", "a-number", "null"],
)
def test_unreadable_images_yield_none_and_a_warning(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_images(text) == ()
    assert "LAYERCACHE_IMAGES" in caplog.text


def test_an_empty_variable_is_single_dockerfile_mode_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_images("") == ()
        assert parse_outputs({"LAYERCACHE_IMAGES": " "}).images == ()
        assert parse_outputs({}).images == ()
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"image": None}, "no image name"),
        ({"image": "  "}, "no image name"),
        ({"image": 7}, "no image name"),
        ({"repository": None}, "no repository"),
        ({"repository": f"{REGISTRY}/Team/Bad"}, "names no ECR repository"),
        ({"digest": None}, "no image digest"),
        ({"digest": ""}, "no image digest"),
        ({"digest": "latest"}, "no image digest"),
        ({"digest": ["sha256:00"]}, "no image digest"),
    ],
)
def test_entries_without_image_repository_or_digest_are_dropped(
    broken: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {**entry("worker"), **broken}

    with caplog.at_level(logging.WARNING):
        images = parse_images(images_json(entry("api"), bad, "not an object"))

    assert [image.image for image in images] == ["api"]
    assert reason in caplog.text
    assert "not a JSON object" in caplog.text


def test_a_repeated_image_or_repository_keeps_the_first(caplog: pytest.LogCaptureFixture) -> None:
    first = entry("api")
    again = entry("api", digest="sha256:" + "1" * 64)
    same_repository = entry("api2", repository=first["repository"])

    with caplog.at_level(logging.WARNING):
        images = parse_images(images_json(first, again, same_repository, entry("worker")))

    assert [(image.image, image.digest) for image in images] == [
        ("api", first["digest"]),
        ("worker", entry("worker")["digest"]),
    ]
    assert caplog.text.count("repeats the image api") == 2


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"cache_hit_ratio": 1.5}, {"cache_hit_ratio": None}),
        ({"cache_hit_ratio": -0.1}, {"cache_hit_ratio": None}),
        ({"cache_hit_ratio": True}, {"cache_hit_ratio": None}),
        ({"cache_hit_ratio": "half"}, {"cache_hit_ratio": None}),
        ({"cache_hit_ratio": "0.25"}, {"cache_hit_ratio": Decimal("0.25")}),
        ({"cache_hit_ratio": 1}, {"cache_hit_ratio": Decimal(1)}),
        ({"build_seconds": -3}, {"build_seconds": None}),
        ({"push_seconds": -0.5}, {"push_seconds": None}),
        ({"push_seconds": 1e300}, {"push_seconds": None}),
        ({"build_seconds": 0.12345678901234567}, {"build_seconds": Decimal("0.123457")}),
        ({"cached_steps": 3, "total_steps": 2}, {"cached_steps": None, "total_steps": None}),
        ({"cached_steps": -1}, {"cached_steps": None, "total_steps": 2}),
        ({"total_steps": 2.5}, {"total_steps": None}),
        ({"total_steps": "2"}, {"total_steps": 2}),
        ({"tags": "main"}, {"tags": ()}),
        ({"tags": ["a", 7, " ", "a", "b"]}, {"tags": ("a", "b")}),
        ({"cache_status": 3}, {"cache_status": None}),
    ],
)
def test_numbers_are_checked_like_the_builds_totals(
    changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    [image] = parse_images(images_json(entry("api", **changes)))

    for name, value in expected.items():
        assert getattr(image, name) == value


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_left_out(constant: str) -> None:
    text = images_json(entry("api")).replace(
        '"cache_hit_ratio":0.5', f'"cache_hit_ratio":{constant}'
    )

    [image] = parse_images(text)

    assert image.cache_hit_ratio is None


@pytest.mark.parametrize(
    ("cached", "total", "expected"),
    [(2, 2, True), (1, 2, False), (0, 0, False), (None, 2, False), (2, None, False)],
)
def test_an_image_is_fully_cached_when_every_step_was(
    cached: int | None, total: int | None, expected: bool
) -> None:
    [image] = parse_images(images_json(entry("api", cached_steps=cached, total_steps=total)))

    assert image.fully_cached is expected


# ---------------------------------------------------------------- the build item
def test_the_item_records_each_image_and_keeps_the_totals() -> None:
    exported = bake_exports(
        entry("base", cached_steps=2, total_steps=2, cache_hit_ratio=1.0),
        entry("api", built_on=["base"], cache_status=None, build_seconds=None),
    )

    fields = progress_fields(facts_of("succeeded", exported), NOW)

    assert fields["cache_hit_ratio"] == Decimal("0.750")  # the build's totals, as today
    assert fields["build_seconds"] == Decimal("12.5")
    assert "image_digest" not in fields  # empty with a Bake file: not written
    assert "image_tags" not in fields
    base, api = fields["images"]
    assert base == {
        "image": "base",
        "repository": "team/service/base",
        "digest": entry("base")["digest"],
        "tags": [SHA, "main-9fceb02"],
        "built_on": [],
        "cache_hit_ratio": Decimal("1.0"),
        "cached_steps": 2,
        "total_steps": 2,
        "cache_ref_hit": f"{REGISTRY}/team/service/base:cache-main",
        "build_seconds": Decimal("0.4"),
        "push_seconds": Decimal("0.4"),
        "cache_status": "warm",
    }
    assert api["built_on"] == ["base"]
    assert "cache_status" not in api  # absent, not null
    assert "build_seconds" not in api


def test_the_update_holds_no_floats_at_any_depth() -> None:
    exported = bake_exports(entry("api"), entry("worker", cache_hit_ratio=0.333))

    update = record_update(facts_of("succeeded", exported), "team/service", NOW)

    def floats(value: Any) -> list[float]:
        if isinstance(value, float):
            return [value]
        if isinstance(value, dict):
            return [found for item in value.values() for found in floats(item)]
        if isinstance(value, list | tuple):
            return [found for item in value for found in floats(item)]
        return []

    assert floats(update.values) == []
    to_attribute_values(update.values)  # DynamoDB takes every value as it is
    [alias] = [alias for alias, name in update.names.items() if name == "images"]
    images = update.values[alias.replace("#", ":")]
    assert [image["image"] for image in images] == ["api", "worker"]
    assert images[1]["cache_hit_ratio"] == Decimal("0.333")


def test_a_single_dockerfile_build_writes_no_images() -> None:
    exported = {"LAYERCACHE_IMAGE_DIGEST": "sha256:" + "ab" * 32, "LAYERCACHE_IMAGES": ""}

    fields = progress_fields(facts_of("succeeded", exported), NOW)

    assert "images" not in fields
    assert fields["image_digest"] == "sha256:" + "ab" * 32


def test_the_exported_images_are_parsed_once_per_facts(caplog: pytest.LogCaptureFixture) -> None:
    facts = facts_of("succeeded", {"LAYERCACHE_IMAGES": "not json"})

    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert facts.outputs.images == ()

    assert caplog.text.count("is not JSON") == 1


# ---------------------------------------------------------------- commit status
def bake_record(*images: dict[str, Any], **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "image": "team/service",
        "commit": SHA,
        "trigger": "github",
        "mode": "normal",
        "duration_seconds": Decimal(65),
        "cache_hit_ratio": Decimal("0.75"),
        "console_url": "https://console/build",
        "images": [ImageOutput(**image).as_item() for image in images],
    }
    record.update(changes)
    return record


def image(name: str, cached: int, total: int) -> dict[str, Any]:
    return {
        "image": name,
        "repository": f"team/service/{name}",
        "digest": "sha256:" + "0" * 64,
        "cached_steps": cached,
        "total_steps": total,
        "cache_hit_ratio": Decimal(cached) / Decimal(total) if total else None,
        "build_seconds": Decimal("0.4"),
        "push_seconds": Decimal("1.5"),
    }


def test_a_bake_builds_status_counts_its_images_and_the_cached_ones() -> None:
    record = bake_record(image("base", 2, 2), image("api", 1, 2), image("worker", 3, 3))

    status = commit_status_for(record, BuildStatus.SUCCEEDED)

    assert status is not None
    assert (status.state, status.context) == ("success", "layercache/team/service")
    assert status.description == "Succeeded in 1m05s, 3 images, 2 cached"


def test_an_image_of_no_steps_is_not_cached_and_one_image_is_singular() -> None:
    record = bake_record(image("empty", 0, 0), duration_seconds=None)

    status = commit_status_for(record, BuildStatus.SUCCEEDED)

    assert status is not None
    assert status.description == "Succeeded, 1 image, 0 cached"


def test_the_description_of_many_images_fits_githubs_limit() -> None:
    record = bake_record(*(image(f"image{n}", 1, 1) for n in range(10_000)))
    record["duration_seconds"] = Decimal(10**9)

    status = commit_status_for(record, BuildStatus.SUCCEEDED)

    assert status is not None
    assert len(status.description) <= MAX_DESCRIPTION
    assert status.description.endswith("10000 images, 10000 cached")


def test_failures_and_the_start_of_a_bake_build_read_as_today() -> None:
    record = bake_record(image("api", 1, 2), failed_phase="BUILD")

    failed = commit_status_for(record, BuildStatus.FAILED)
    pending = commit_status_for({**record, "failed_phase": None}, BuildStatus.IN_PROGRESS)

    assert failed is not None
    assert failed.description == "Image build failed in 1m05s (BUILD phase)"
    assert pending is not None
    assert pending.description == "Image build started"


def test_a_failure_notification_names_the_images_it_knows() -> None:
    record = bake_record(image("base", 1, 1), image("api", 0, 2), failed_phase="POST_BUILD")
    record.update(branch="main", build_id="p:1")

    notification = failure_notification(record, BuildStatus.FAILED)

    assert notification is not None
    assert "Images:        base, api\n" in notification.message
    without = failure_notification({**record, "images": None}, BuildStatus.FAILED)
    assert without is not None
    assert "Images:" not in without.message


# ---------------------------------------------------------------- metrics
def test_each_image_gets_its_own_metric_set_by_trigger_mode_and_image() -> None:
    record = bake_record(image("base", 2, 2), image("api", 1, 2))

    sets = image_metric_sets(record, BuildStatus.SUCCEEDED)

    assert [metric_set.dimensions for metric_set in sets] == [
        {"trigger": "github", "mode": "normal", "image": "base"},
        {"trigger": "github", "mode": "normal", "image": "api"},
    ]
    assert {name for metric_set in sets for name in metric_set.dimensions} <= dimensions.ALL
    assert [(p.name, p.value) for p in sets[1].points] == [
        ("CacheHitRatio", 0.5),
        ("ImageBuildSeconds", 0.4),
        ("ImagePushSeconds", 1.5),
    ]
    assert all(isinstance(p.value, float) for s in sets for p in s.points)
    # The build's own metrics and dimensions are as they were.
    assert metric_dimensions(record) == {"trigger": "github", "mode": "normal"}
    assert [p.name for p in metric_points(record, BuildStatus.SUCCEEDED)] == [
        "BuildDuration",
        "CacheHitRatio",
        "BuildSucceeded",
    ]


def test_no_image_metrics_without_images_or_before_the_end() -> None:
    record = bake_record(image("api", 1, 2))

    assert image_metric_sets(record, BuildStatus.IN_PROGRESS) == []
    assert image_metric_sets({**record, "images": None}, BuildStatus.SUCCEEDED) == []
    assert image_metric_sets({**record, "images": "api"}, BuildStatus.SUCCEEDED) == []
    bare = {"image": "api", "repository": "team/service/api", "digest": "sha256:" + "0" * 64}
    unnamed = {**bare, "image": ""}
    numbers = {"build_seconds": Decimal(1)}
    assert (
        image_metric_sets({**record, "images": [bare, unnamed | numbers]}, BuildStatus.FAILED) == []
    )


def test_image_metrics_are_valid_emf_one_document_per_image(
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = bake_record(image("base", 2, 2), image("api", 1, 2))

    emit_image_metrics(image_metric_sets(record, BuildStatus.SUCCEEDED))

    documents = emitted_metrics(capsys.readouterr().out)
    assert [document["image"] for document in documents] == ["base", "api"]
    for document in documents:
        [directive] = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "layercache"
        # One dimension set: the image's values never count under the build's dimensions.
        assert [sorted(names) for names in directive["Dimensions"]] == [
            ["image", "mode", "service", "trigger"]
        ]
        assert {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]} == {
            "CacheHitRatio": "None",
            "ImageBuildSeconds": "Seconds",
            "ImagePushSeconds": "Seconds",
        }
        assert (document["trigger"], document["mode"], document["service"]) == (
            "github",
            "normal",
            "layercache",
        )
    assert documents[1]["CacheHitRatio"] in (0.5, [0.5])
