"""The SNS message of failed and stopped builds, read back from a subscribed SQS queue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from layercache_dev.kit.functions import Handler, fresh_service
from layercache_dev.kit.lambda_context import FakeLambdaContext

from .conftest import RECORDER, sample, trigger_write

CONSOLE = (
    "https://us-east-1.console.aws.amazon.com/codesuite/codebuild/123456789012/projects/"
    "layercache-image-build/build/layercache-image-build%3A"
)


@pytest.fixture
def handler(stack: Any, function_env: Any, notifications: Any) -> Iterator[Handler]:
    function_env(RECORDER)
    with fresh_service(RECORDER) as recorder:
        yield recorder


def test_failed_build_notifies_once_with_branch_commit_phase_and_link(
    handler: Any, stack: Any, notifications: Any
) -> None:
    trigger_write(stack.table_name, sample("failed"))

    results = [handler(sample("failed"), FakeLambdaContext()) for _ in range(2)]  # + a duplicate

    assert [result["notified"] for result in results] == [True, False]
    [message] = notifications.received()
    assert message["TopicArn"] == notifications.topic_arn
    assert message["Subject"] == (
        "layercache: build of team/service on feature/login at 1b2c3d4e failed"
    )
    text = message["Message"]
    assert "Branch:        feature/login" in text
    assert "Commit:        1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e" in text
    assert "Failed phase:  BUILD" in text
    assert "Reason:        COMMAND_EXECUTION_ERROR: Error while executing command" in text
    assert (
        "Build:         layercache-image-build:0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d (#43)" in text
    )
    assert f"{CONSOLE}0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d/" in text


def test_stopped_nightly_build_notifies_without_commit(handler: Any, notifications: Any) -> None:
    handler(sample("stopped"), FakeLambdaContext())

    [message] = notifications.received()
    assert message["Subject"] == "layercache: build of team/service on main was stopped"
    assert "Commit:        unknown" in message["Message"]
    assert "Trigger:       nightly (mode refresh)" in message["Message"]
    assert "Failed phase:  BUILD" in message["Message"]


@pytest.mark.parametrize("status", ["TIMED_OUT", "FAULT"])
def test_timed_out_and_fault_notify(status: str, handler: Any, notifications: Any) -> None:
    event = sample("failed")
    event["detail"]["build-status"] = status

    handler(event, FakeLambdaContext())

    [message] = notifications.received()
    assert message["Subject"].startswith("layercache: build of team/service on feature/login")


def test_success_and_start_do_not_notify(handler: Any, notifications: Any) -> None:
    handler(sample("in-progress"), FakeLambdaContext())
    handler(sample("succeeded"), FakeLambdaContext())

    assert notifications.received() == []
