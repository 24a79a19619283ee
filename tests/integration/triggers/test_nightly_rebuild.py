"""NightlyRebuildFunction on moto, driven through the template's Handler.

It hands one BuildRequestMessage per branch to BuildRequestQueue, for `refs/heads/<branch>`
(never a bare name, which git resolves to a tag first), and accepts only the scheduler's
input or a run by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from layercache.build_records import BuildMode, Trigger
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.functions import function_handler_callable
from layercache_dev.kit.lambda_context import FakeLambdaContext
from tests.conftest import emitted_metrics
from tests.integration.conftest import RecordedCall

from .conftest import (
    Outage,
    assert_nothing_built,
    queued,
    queued_requests,
    sample,
)

FUNCTION = "NightlyRebuildFunction"
SCHEDULE = sample("nightly-rebuild", "schedule.json")
NIGHT = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


@pytest.fixture
def invoke(
    stack: Stack,
    function_env: Any,
    lambda_context: FakeLambdaContext,
    aws_calls: list[RecordedCall],
    queue_outage: Outage,
) -> Any:
    function_env(FUNCTION, WATCHED_BRANCHES="main,release/2.x")
    handler = function_handler_callable(FUNCTION)

    def call(event: Any) -> dict[str, Any]:
        result: dict[str, Any] = handler(event, lambda_context)
        return result

    return call


def test_the_schedule_hands_on_a_refresh_of_every_watched_branch(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    result = invoke(SCHEDULE)

    messages = queued(stack)
    assert result == {
        "mode": "refresh",
        "builds": [
            {
                "branch": message.request.branch,
                "requested": True,
                "request_id": message.message_id,
                "reason": "requested",
            }
            for message in messages
        ],
    }
    assert [message.request.branch for message in messages] == ["main", "release/2.x"]
    for message in messages:
        request = message.request
        assert request.image == stack.repository_name
        assert request.commit is None
        assert request.before is None
        assert request.source_version == f"refs/heads/{request.branch}"
        assert request.trigger is Trigger.NIGHTLY
        assert request.mode is BuildMode.REFRESH
        assert request.build is True
        assert request.occasion == "nightly@2026-11-29T03:00:00.000Z"
        assert request.requested_at == NIGHT, "keyed by the scheduled time, not the clock"
        assert request.pushed_at is None
        assert message.group_id == request.group_id
    assert messages[0].group_id != messages[1].group_id
    assert_nothing_built(stack, aws_calls)


def test_the_nightly_build_of_main_checks_out_the_branch_not_a_tag_named_main(
    invoke: Any, stack: Stack
) -> None:
    invoke(SCHEDULE)
    main = next(request for request in queued_requests(stack) if request.branch == "main")
    assert main.source_version == "refs/heads/main"


def test_a_retried_schedule_delivery_hands_on_the_same_requests(invoke: Any, stack: Stack) -> None:
    """Byte-identical requests: SQS keeps them once, and the starter's claim once more."""
    first = invoke(SCHEDULE)
    second = invoke(SCHEDULE)

    assert [build["requested"] for build in second["builds"]] == [True, True]
    messages = queued(stack)
    assert len(messages) == 2, "the retry's identical messages were deduplicated"
    assert [message.message_id for message in messages] == [
        build["request_id"] for build in first["builds"]
    ]


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_run_that_failed_half_way_is_retried_without_doubling_a_branch(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    sent: list[int] = []

    def second_send_fails(**_: Any) -> None:
        sent.append(1)
        if len(sent) == 2:
            raise EndpointConnectionError(endpoint_url="https://unreachable.example")

    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register_first("before-call.sqs.SendMessage", second_send_fails)
    with pytest.raises(EndpointConnectionError):
        invoke(SCHEDULE)

    invoke(SCHEDULE)  # Lambda's retry of the asynchronous invocation

    assert sorted(request.branch for request in queued_requests(stack)) == ["main", "release/2.x"]
    assert_nothing_built(stack, aws_calls)


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_manual_run_retried_after_failing_half_way_requests_each_branch_once(
    invoke: Any, stack: Stack
) -> None:
    sent: list[int] = []

    def second_send_fails(**_: Any) -> None:
        sent.append(1)
        if len(sent) == 2:
            raise EndpointConnectionError(endpoint_url="https://unreachable.example")

    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register_first("before-call.sqs.SendMessage", second_send_fails)
    with pytest.raises(EndpointConnectionError):
        invoke({"manual": True, "mode": "clean"})
    time.sleep(0.01)  # the retry comes later (same invocation: same aws_request_id)

    invoke({"manual": True, "mode": "clean"})

    requests = queued_requests(stack)
    assert len({request.claim_pk for request in requests if request.branch == "main"}) == 1


def test_the_next_night_hands_on_new_requests(invoke: Any, stack: Stack) -> None:
    invoke(SCHEDULE)
    invoke({"mode": "refresh", "scheduled_time": "2026-11-30T03:00:00Z"})

    occasions = [request.occasion for request in queued_requests(stack)]

    assert occasions == [
        "nightly@2026-11-29T03:00:00.000Z",
        "nightly@2026-11-29T03:00:00.000Z",
        "nightly@2026-11-30T03:00:00.000Z",
        "nightly@2026-11-30T03:00:00.000Z",
    ]


def test_a_scheduled_time_in_another_zone_is_the_same_night(invoke: Any, stack: Stack) -> None:
    invoke({"mode": "refresh", "scheduled_time": "2026-11-29T04:00:00+01:00"})
    assert {request.occasion for request in queued_requests(stack)} == {
        "nightly@2026-11-29T03:00:00.000Z"
    }


def test_manual_clean_rebuild_of_one_branch(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    before_run = datetime.now(UTC)

    result = invoke(sample("nightly-rebuild", "manual-clean.json"))

    (message,) = queued(stack)
    assert result == {
        "mode": "clean",
        "builds": [
            {
                "branch": "main",
                "requested": True,
                "request_id": message.message_id,
                "reason": "requested",
            }
        ],
    }
    request = message.request
    assert (request.branch, request.commit) == ("main", None)
    assert request.source_version == "refs/heads/main"
    assert request.trigger is Trigger.MANUAL
    assert request.mode is BuildMode.CLEAN
    assert request.reason == "manual clean rebuild"
    assert before_run <= request.requested_at <= datetime.now(UTC)
    assert request.occasion.startswith("manual@")
    assert_nothing_built(stack, aws_calls)


def test_a_manual_run_without_branches_rebuilds_every_watched_branch(
    invoke: Any, stack: Stack
) -> None:
    result = invoke({"manual": True})
    assert result["mode"] == "refresh"
    assert sorted(request.branch for request in queued_requests(stack)) == ["main", "release/2.x"]


def test_a_branch_that_is_not_watched_is_not_handed_on(invoke: Any, stack: Stack) -> None:
    result = invoke({"manual": True, "branches": ["main", "experiment"]})

    (request,) = queued_requests(stack)
    assert request.branch == "main"
    assert result["builds"][1] == {
        "branch": "experiment",
        "requested": False,
        "request_id": None,
        "reason": "not a watched branch",
    }


EVENTBRIDGE_SCHEDULED_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-29T03:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/nightly"],
    "detail": {},
}


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"mode": "refresh"},
        {"mode": "clean", "branches": ["main"]},
        EVENTBRIDGE_SCHEDULED_EVENT,
        sample("codecommit-trigger", "reference-updated.json"),
        {**SCHEDULE, "source": "aws.events"},
        {"manual": True, "branches": ["main"], "force": True},
        {"manual": False},
        {"manual": True, "scheduled_time": "2026-11-29T03:00:00Z"},
        {"mode": "yesterday", "scheduled_time": "2026-11-29T03:00:00Z"},
        {"mode": "refresh", "scheduled_time": "<aws.scheduler.scheduled-time>"},
        {"manual": True, "branches": "main"},
        [],
        "refresh",
    ],
    ids=[
        "empty",
        "mode only",
        "branches without manual",
        "eventbridge scheduled event",
        "codecommit event",
        "schedule with an extra key",
        "manual with an extra key",
        "manual false",
        "manual and scheduled",
        "unknown mode",
        "placeholder time",
        "branches not a list",
        "a list",
        "a string",
    ],
)
def test_anything_but_the_schedule_or_a_manual_run_is_refused(
    invoke: Any, stack: Stack, event: Any, aws_calls: list[RecordedCall]
) -> None:
    result = invoke(event)

    assert result == {"builds": [], "reason": "malformed request"}
    assert queued(stack) == []
    assert [call for call in aws_calls if call.operation == "sqs:SendMessage"] == []
    assert_nothing_built(stack, aws_calls)


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_queue_that_refuses_the_requests_surfaces_for_the_async_retry(
    invoke: Any, stack: Stack, queue_outage: Outage
) -> None:
    queue_outage.on = True
    with pytest.raises(EndpointConnectionError):
        invoke(SCHEDULE)
    assert queued(stack) == []


def test_requested_builds_are_counted(invoke: Any, capsys: pytest.CaptureFixture[str]) -> None:
    invoke(SCHEDULE)
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert document["BuildsRequested"] in (2.0, [2.0])
    assert document["trigger"] == "nightly"


def test_a_run_by_hand_is_counted_as_manual(
    invoke: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke({"manual": True})
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert document["BuildsRequested"] in (2.0, [2.0])
    assert document["trigger"] == "manual"


def test_a_refused_request_is_counted(invoke: Any, capsys: pytest.CaptureFixture[str]) -> None:
    invoke({})
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert document["EventsRejected"] in (1.0, [1.0])
