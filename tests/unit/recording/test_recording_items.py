"""Mapping a build's facts onto its BuildsTable item."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from layercache.build_records import (
    ENV_BRANCH,
    ENV_COMMIT,
    ENV_MODE,
    ENV_REQUESTED_AT,
    ENV_TRIGGER,
    BuildStatus,
)
from layercache.recording.build import BuildFacts, merge_batch_get, parse_outputs
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.items import identity_fields, progress_fields, record_update

EVENTS = Path(__file__).resolve().parents[3] / "events" / "build-recorder"
NOW = datetime(2024, 5, 14, 9, 40, tzinfo=UTC)
IMAGE = "team/service"


def facts_of(name: str) -> BuildFacts:
    event = json.loads((EVENTS / f"{name}.json").read_text())
    return BuildStateChangeEvent.model_validate(event).facts()


def test_identity_comes_from_the_build_environment() -> None:
    fields = identity_fields(facts_of("succeeded"), IMAGE)

    assert fields == {
        "build_id": "layercache-image-build:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d",
        "build_arn": "arn:aws:codebuild:us-east-1:123456789012:build/"
        "layercache-image-build:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d",
        "build_number": 42,
        "image": "team/service",
        "branch": "main",
        "branch_key": "team/service#main",
        "commit": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "trigger": "github",
        "mode": "normal",
        "requested_at": "2024-05-14T09:30:01.412Z",
        "day": "2024-05-14",
    }


def test_nightly_build_has_no_commit_attribute() -> None:
    fields = identity_fields(facts_of("stopped"), IMAGE)

    assert "commit" not in fields  # absent, not "": commit is the ByCommit index key
    assert (fields["trigger"], fields["mode"]) == ("nightly", "refresh")


def test_build_started_by_hand_falls_back_to_manual_and_build_start() -> None:
    facts = replace(facts_of("succeeded"), environment={"UNRELATED": "x"})

    fields = identity_fields(facts, IMAGE)

    assert (fields["trigger"], fields["mode"]) == ("manual", "normal")
    assert fields["requested_at"] == "2024-05-14T09:30:02.000Z"
    assert fields["day"] == "2024-05-14"
    assert "branch" not in fields
    assert "branch_key" not in fields
    assert "commit" not in fields


def test_unreadable_environment_values_fall_back() -> None:
    facts = replace(
        facts_of("succeeded"),
        environment={
            ENV_TRIGGER: "carrier-pigeon",
            ENV_MODE: "turbo",
            ENV_REQUESTED_AT: "last tuesday",
            ENV_BRANCH: "  ",
            ENV_COMMIT: "",
        },
        started_at=None,
    )

    fields = identity_fields(facts, IMAGE)

    assert (fields["trigger"], fields["mode"]) == ("manual", "normal")
    assert fields["requested_at"] == "2024-05-14T09:32:14.000Z"  # the event's time
    assert "branch" not in fields
    assert "commit" not in fields


def test_requested_at_is_normalised_to_utc_millis() -> None:
    facts = replace(
        facts_of("succeeded"),
        environment={ENV_REQUESTED_AT: "2024-05-14T23:30:01+02:00"},
    )

    fields = identity_fields(facts, IMAGE)

    assert fields["requested_at"] == "2024-05-14T21:30:01.000Z"
    assert fields["day"] == "2024-05-14"


def test_progress_of_in_progress_event_is_status_and_start_only() -> None:
    fields = progress_fields(facts_of("in-progress"), NOW)

    assert fields["status"] == "IN_PROGRESS"
    assert fields["recorded_status"] == "IN_PROGRESS"
    assert fields["started_at"] == "2024-05-14T09:30:02.000Z"
    assert "ended_at" not in fields
    assert "duration_seconds" not in fields


def test_progress_of_failed_event() -> None:
    fields = progress_fields(facts_of("failed"), NOW)

    assert fields["status"] == "FAILED"
    assert fields["duration_seconds"] == 111
    assert fields["queued_seconds"] == 2
    assert fields["failed_phase"] == "BUILD"
    assert "exit status 1" in fields["failure_message"]
    assert fields["phases"]["BUILD"] == {"status": "FAILED", "seconds": 87}
    assert "COMPLETED" not in fields["phases"]
    assert "cache_hit_ratio" not in fields  # no exported variables: no such attributes


def batch_get_build() -> dict[str, Any]:
    start = datetime(2024, 5, 14, 9, 30, 1, 500000, tzinfo=UTC)
    return {
        "id": "layercache-image-build:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d",
        "buildNumber": 42,
        "startTime": start,
        "endTime": datetime(2024, 5, 14, 9, 32, 20, tzinfo=UTC),
        "buildStatus": "SUCCEEDED",
        "resolvedSourceVersion": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "phases": [
            {"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED", "durationInSeconds": 0},
            {"phaseType": "QUEUED", "phaseStatus": "SUCCEEDED", "durationInSeconds": 4},
            {
                "phaseType": "BUILD",
                "phaseStatus": "SUCCEEDED",
                "durationInSeconds": 110,
                "startTime": start,
                "endTime": start,
                "contexts": [{"statusCode": "", "message": ""}],
            },
            {"phaseType": "COMPLETED", "startTime": start},
        ],
        "exportedEnvironmentVariables": [
            {"name": "LAYERCACHE_IMAGE_DIGEST", "value": "sha256:" + "ab" * 32},
            {"name": "LAYERCACHE_IMAGE_TAGS", "value": "main, 9fceb02, latest,"},
            {"name": "LAYERCACHE_CACHE_HIT_RATIO", "value": "0.875"},
            {"name": "LAYERCACHE_CACHE_REF_HIT", "value": "cache-main"},
            {"name": "LAYERCACHE_BUILD_SECONDS", "value": "96.4"},
            {"name": "LAYERCACHE_PUSH_SECONDS", "value": "3.25"},
        ],
    }


def test_batch_get_builds_adds_times_phases_and_outputs() -> None:
    facts = merge_batch_get(facts_of("succeeded"), batch_get_build())

    fields = progress_fields(facts, NOW)

    assert fields["started_at"] == "2024-05-14T09:30:01.500Z"
    assert fields["ended_at"] == "2024-05-14T09:32:20.000Z"
    assert fields["duration_seconds"] == 138
    assert fields["queued_seconds"] == 4
    assert fields["image_digest"] == "sha256:" + "ab" * 32
    assert fields["image_tags"] == ["main", "9fceb02", "latest"]
    assert fields["cache_hit_ratio"] == Decimal("0.875")
    assert fields["cache_ref_hit"] == "cache-main"
    assert fields["build_seconds"] == Decimal("96.4")
    assert fields["push_seconds"] == Decimal("3.25")
    assert fields["source_version"] == "9fceb02d0ae598e95dc970b74767f19372d61af8"
    # The event's status stands even if the build has moved on since.
    assert merge_batch_get(facts_of("in-progress"), batch_get_build()).ended_at is None


@pytest.mark.parametrize(
    ("exported", "expected"),
    [
        ({}, {"cache_hit_ratio": None, "image_tags": (), "build_seconds": None}),
        ({"LAYERCACHE_CACHE_HIT_RATIO": "1.5"}, {"cache_hit_ratio": None}),
        ({"LAYERCACHE_CACHE_HIT_RATIO": "-0.1"}, {"cache_hit_ratio": None}),
        ({"LAYERCACHE_CACHE_HIT_RATIO": "NaN"}, {"cache_hit_ratio": None}),
        ({"LAYERCACHE_CACHE_HIT_RATIO": "half"}, {"cache_hit_ratio": None}),
        ({"LAYERCACHE_CACHE_HIT_RATIO": "0"}, {"cache_hit_ratio": Decimal(0)}),
        ({"LAYERCACHE_BUILD_SECONDS": "-3"}, {"build_seconds": None}),
        ({"LAYERCACHE_IMAGE_TAGS": " , "}, {"image_tags": ()}),
        ({"LAYERCACHE_IMAGE_DIGEST": ""}, {"image_digest": None}),
    ],
)
def test_exported_variables_are_optional_and_checked(
    exported: dict[str, str], expected: dict[str, Any]
) -> None:
    outputs = parse_outputs(exported)

    for name, value in expected.items():
        assert getattr(outputs, name) == value


def test_update_sets_identity_only_if_absent_and_progress_plainly() -> None:
    update = record_update(facts_of("succeeded"), IMAGE, NOW)

    assert update.key == {"pk": "BUILD#layercache-image-build:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d"}
    by_name = {update.names[alias]: alias for alias in update.names}
    identity = by_name["branch"]
    assert f"{identity} = if_not_exists({identity}, " in update.update_expression
    status = by_name["status"]
    assert f"{status} = :" in update.update_expression
    assert "if_not_exists(" + status not in update.update_expression
    assert update.values[":status"] == "SUCCEEDED"
    assert "attribute_not_exists(#recorded)" in update.condition_expression
    assert "#recorded = :in_progress" in update.condition_expression
    # Serializable as DynamoDB values: no floats.
    assert not any(isinstance(value, float) for value in update.values.values())


def test_in_progress_update_only_applies_before_anything_was_recorded() -> None:
    update = record_update(facts_of("in-progress"), IMAGE, NOW)

    assert update.condition_expression == "attribute_not_exists(#recorded)"
    assert ":in_progress" not in update.values


def test_final_statuses_are_final() -> None:
    for name in ("succeeded", "failed", "stopped"):
        assert facts_of(name).status.is_final
    assert not BuildStatus.IN_PROGRESS.is_final
