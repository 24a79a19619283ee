"""The CodeBuild state-change event model, against the samples in events/build-recorder/."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from layercache.build_records import ENV_BRANCH, ENV_COMMIT, ENV_TRIGGER, BuildStatus
from layercache.recording.build import build_id_of, console_url
from layercache.recording.events import BuildStateChangeEvent, parse_event_time

EVENTS = Path(__file__).resolve().parents[3] / "events" / "build-recorder"
BUILD_ID = "layercache-image-build:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("in-progress", BuildStatus.IN_PROGRESS),
        ("succeeded", BuildStatus.SUCCEEDED),
        ("failed", BuildStatus.FAILED),
        ("stopped", BuildStatus.STOPPED),
    ],
)
def test_every_sample_parses_with_its_status(name: str, status: BuildStatus) -> None:
    facts = BuildStateChangeEvent.model_validate(sample(name)).facts()

    assert facts.status is status
    assert facts.project == "layercache-image-build"
    assert facts.build_id.startswith("layercache-image-build:")
    assert facts.build_arn.endswith(facts.build_id)
    assert facts.account == "123456789012"
    assert facts.region == "us-east-1"
    assert facts.started_at is not None
    assert facts.environment[ENV_BRANCH] in ("main", "feature/login")


def test_in_progress_sample_has_no_end_or_failed_phase() -> None:
    facts = BuildStateChangeEvent.model_validate(sample("in-progress")).facts()

    assert facts.build_id == BUILD_ID
    assert facts.build_number == 42
    assert facts.started_at == datetime(2024, 5, 14, 9, 30, 2, tzinfo=UTC)
    assert facts.ended_at is None
    assert facts.duration_seconds is None
    assert facts.failed_phase is None
    assert facts.environment[ENV_COMMIT] == "9fceb02d0ae598e95dc970b74767f19372d61af8"


def test_succeeded_sample_times_and_phases() -> None:
    facts = BuildStateChangeEvent.model_validate(sample("succeeded")).facts()

    assert facts.build_id == BUILD_ID
    assert facts.ended_at == datetime(2024, 5, 14, 9, 32, 13, tzinfo=UTC)
    assert facts.duration_seconds == 131
    assert facts.queued_seconds == 1
    assert [phase.name for phase in facts.phases][:3] == ["SUBMITTED", "QUEUED", "PROVISIONING"]
    assert facts.failed_phase is None


def test_failed_sample_names_the_phase_and_its_reason() -> None:
    facts = BuildStateChangeEvent.model_validate(sample("failed")).facts()

    failed = facts.failed_phase
    assert failed is not None
    assert failed.name == "BUILD"
    assert failed.status == "FAILED"
    assert failed.seconds == 87
    assert "exit status 1" in failed.messages[0]


def test_stopped_nightly_sample_has_no_commit() -> None:
    facts = BuildStateChangeEvent.model_validate(sample("stopped")).facts()

    assert ENV_COMMIT not in facts.environment
    assert facts.environment[ENV_TRIGGER] == "nightly"
    failed = facts.failed_phase
    assert failed is not None
    assert (failed.name, failed.status) == ("BUILD", "STOPPED")


def test_console_link_encodes_the_build_id() -> None:
    facts = BuildStateChangeEvent.model_validate(sample("succeeded")).facts()

    assert facts.console_url == (
        "https://us-east-1.console.aws.amazon.com/codesuite/codebuild/123456789012/projects/"
        "layercache-image-build/build/layercache-image-build%3A6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d/"
    )
    assert console_url("eu-west-1", "1", "p", "p:a/b").endswith("/build/p%3Aa%2Fb/")


def test_build_id_from_arn_or_id() -> None:
    arn = f"arn:aws:codebuild:us-east-1:123456789012:build/{BUILD_ID}"
    assert build_id_of(arn) == BUILD_ID
    assert build_id_of(BUILD_ID) == BUILD_ID


def test_minimal_event_without_additional_information() -> None:
    event = sample("in-progress")
    del event["detail"]["additional-information"]

    facts = BuildStateChangeEvent.model_validate(event).facts()

    assert facts.environment == {}
    assert facts.phases == ()
    assert facts.started_at is None


def test_unknown_fields_are_ignored() -> None:
    event = sample("succeeded")
    event["detail"]["something-new"] = {"x": 1}
    event["detail"]["additional-information"]["phases"][1]["novel"] = True

    assert BuildStateChangeEvent.model_validate(event).facts().queued_seconds == 1


@pytest.mark.parametrize(
    "break_it",
    [
        lambda e: e.update(source="aws.codecommit"),
        lambda e: e.update({"detail-type": "CodeBuild Build Phase Change"}),
        lambda e: e["detail"].update({"build-status": "EXPLODED"}),
        lambda e: e["detail"].pop("build-id"),
        lambda e: e["detail"].pop("project-name"),
        lambda e: e.pop("detail"),
        lambda e: e.update(time="yesterday"),
    ],
    ids=["source", "detail-type", "status", "no-build-id", "no-project", "no-detail", "bad-time"],
)
def test_malformed_or_foreign_events_are_rejected(break_it: Any) -> None:
    event = sample("succeeded")
    break_it(event)

    with pytest.raises(ValidationError):
        BuildStateChangeEvent.model_validate(event)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sep 1, 2017 4:12:29 PM", datetime(2017, 9, 1, 16, 12, 29, tzinfo=UTC)),
        ("May 14, 2024 12:05:00 AM", datetime(2024, 5, 14, 0, 5, 0, tzinfo=UTC)),
        ("Dec 31, 2023 11:59:59 PM", datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("not a time", None),
        ("", None),
        (None, None),
    ],
)
def test_event_time_format(text: str | None, expected: datetime | None) -> None:
    assert parse_event_time(text) == expected
