"""What the recorder tells people and CloudWatch: SNS text, commit status, metrics, retries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from layercache.build_records import BuildStatus
from layercache.recording.build import seconds_text
from layercache.recording.github import RetryPolicy, commit_status_for, retry_delay
from layercache.recording.metrics import MetricPoint, metric_dimensions, metric_points
from layercache.recording.notify import failure_notification

URL = "https://us-east-1.console.aws.amazon.com/codesuite/codebuild/123456789012/projects/p/build/p%3A1/"


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "build_id": "p:1",
        "build_number": Decimal(7),
        "image": "team/service",
        "branch": "feature/login",
        "commit": "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e",
        "trigger": "github",
        "mode": "normal",
        "requested_at": "2024-05-14T11:02:40.087Z",
        "duration_seconds": Decimal(111),
        "queued_seconds": Decimal(2),
        "failed_phase": "BUILD",
        "failure_message": "COMMAND_EXECUTION_ERROR: Reason: exit status 1",
        "console_url": URL,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def test_failure_message_is_readable() -> None:
    note = failure_notification(record(), BuildStatus.FAILED)

    assert note is not None
    assert note.subject == "layercache: build of team/service on feature/login at 1b2c3d4e failed"
    assert "Branch:        feature/login" in note.message
    assert "Commit:        1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e" in note.message
    assert "Failed phase:  BUILD" in note.message
    assert "exit status 1" in note.message
    assert "Duration:      1m51s" in note.message
    assert note.message.rstrip().endswith(URL)


@pytest.mark.parametrize(
    ("status", "word"),
    [
        (BuildStatus.STOPPED, "was stopped"),
        (BuildStatus.TIMED_OUT, "timed out"),
        (BuildStatus.FAULT, "faulted"),
    ],
)
def test_other_unsuccessful_statuses_notify(status: BuildStatus, word: str) -> None:
    note = failure_notification(record(commit=None, branch=None), status)

    assert note is not None
    assert note.subject == f"layercache: build of team/service {word}"
    assert "Commit:        unknown" in note.message


@pytest.mark.parametrize("status", [BuildStatus.SUCCEEDED, BuildStatus.IN_PROGRESS])
def test_no_notification_for_success_or_start(status: BuildStatus) -> None:
    assert failure_notification(record(), status) is None


def test_subject_fits_sns_limits() -> None:
    note = failure_notification(record(branch="é" * 200 + "\nx"), BuildStatus.FAILED)

    assert note is not None
    assert len(note.subject) <= 100
    assert note.subject.isascii()
    assert "\n" not in note.subject


@pytest.mark.parametrize(
    ("status", "state", "words"),
    [
        (BuildStatus.IN_PROGRESS, "pending", "Image build started"),
        (BuildStatus.SUCCEEDED, "success", "Image built in 1m51s, cache hits 88%"),
        (BuildStatus.FAILED, "failure", "Image build failed in 1m51s (BUILD phase)"),
        (BuildStatus.STOPPED, "error", "Image build stopped"),
        (BuildStatus.TIMED_OUT, "error", "Image build timed out"),
        (BuildStatus.FAULT, "error", "Image build faulted"),
    ],
)
def test_commit_status_per_build_status(status: BuildStatus, state: str, words: str) -> None:
    changes: dict[str, Any] = {"cache_hit_ratio": Decimal("0.875")}
    if status in (BuildStatus.SUCCEEDED, BuildStatus.IN_PROGRESS):
        changes["failed_phase"] = None
    if status is BuildStatus.IN_PROGRESS:
        changes["duration_seconds"] = None

    status_ = commit_status_for(record(**changes), status)

    assert status_ is not None
    assert status_.state == state
    assert status_.description.startswith(words)
    assert status_.sha == "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e"
    assert status_.target_url == URL
    assert status_.context == "layercache/team/service"
    assert len(status_.description) <= 140


def test_no_commit_status_without_commit() -> None:
    assert commit_status_for(record(commit=None), BuildStatus.SUCCEEDED) is None


def test_metrics_of_a_successful_build() -> None:
    points = metric_points(record(cache_hit_ratio=Decimal("0.5")), BuildStatus.SUCCEEDED)

    assert points == [
        MetricPoint("BuildDuration", MetricUnit.Seconds, 111.0),
        MetricPoint("QueueTime", MetricUnit.Seconds, 2.0),
        MetricPoint("CacheHitRatio", MetricUnit.NoUnit, 0.5),
        MetricPoint("BuildSucceeded", MetricUnit.Count, 1),
    ]
    assert metric_dimensions(record()) == {"trigger": "github", "mode": "normal"}


def test_metrics_count_failures_and_stops_apart_and_skip_unknowns() -> None:
    failed = metric_points(record(duration_seconds=None, queued_seconds=None), BuildStatus.FAILED)
    stopped = metric_points(record(), BuildStatus.STOPPED)

    assert failed == [MetricPoint("BuildFailed", MetricUnit.Count, 1)]
    assert stopped[-1] == MetricPoint("BuildStopped", MetricUnit.Count, 1)
    assert metric_points(record(), BuildStatus.IN_PROGRESS) == []
    assert metric_dimensions({}) == {"trigger": "unknown", "mode": "unknown"}


POLICY = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=10.0)


@pytest.mark.parametrize(
    ("attempt", "status", "headers", "expected"),
    [
        (0, 502, {}, 0.5),
        (1, 500, {}, 1.0),
        (2, 503, {}, 2.0),
        (3, 503, {}, None),  # last attempt
        (0, None, {}, 0.5),  # no answer at all
        (0, 429, {"Retry-After": "3"}, 3.0),
        (0, 429, {}, 0.5),
        (0, 403, {"retry-after": "2"}, 2.0),
        (0, 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1007"}, 7.0),
        (0, 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "999"}, 0.0),
        (0, 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "4600"}, None),
        (0, 429, {"Retry-After": "3600"}, None),
        (0, 403, {"x-ratelimit-remaining": "17"}, None),  # a real permission error
        (0, 401, {}, None),
        (0, 404, {}, None),
        (0, 422, {}, None),
    ],
)
def test_retry_delay(
    attempt: int, status: int | None, headers: dict[str, str], expected: float | None
) -> None:
    assert retry_delay(POLICY, attempt, status, headers, now=1000.0) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "?"), (0, "0s"), (59.6, "1m00s"), (Decimal(185), "3m05s"), (3720, "1h02m")],
)
def test_seconds_text(seconds: float | Decimal | None, text: str) -> None:
    assert seconds_text(seconds) == text
