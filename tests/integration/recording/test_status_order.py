"""GitHub never ends on `pending` for a finished build (issue 11, #7).

The IN_PROGRESS and the final event are handled by different invocations at once: a
`pending` retried after a 5xx, or one GitHub takes after the final status, must not be
the last status GitHub shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3

from layercache.build_records import BuildsTable
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.github import GitHubStatusClient
from layercache.recording.service import BuildRecorder
from layercache.recording.store import BuildRecordStore
from layercache_dev.kit.embedded_aws import Stack

from .conftest import (
    EXPORTED,
    IMAGE,
    REGION,
    FakeGitHub,
    StubbedCodeBuild,
    batch_get_build,
    fixed_clock,
    sample,
    trigger_write,
)


def recorder(
    stack: Stack,
    codebuild: StubbedCodeBuild,
    url: str,
    sleep: Callable[[float], None] = lambda _: None,
) -> BuildRecorder:
    return BuildRecorder(
        image=IMAGE,
        store=BuildRecordStore(
            BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))
        ),
        codebuild=codebuild.client,
        github=GitHubStatusClient("octo-org/service", lambda: "t0ken", url, sleep=sleep),
        clock=fixed_clock(),
    )


def final_event_handled(stack: Stack, codebuild: StubbedCodeBuild, url: str) -> Callable[..., Any]:
    """Handle the SUCCEEDED event in another invocation, once, whenever called."""
    done: list[bool] = []

    def handle(*_: Any) -> None:
        if done:
            return
        done.append(True)
        event = sample("succeeded")
        codebuild.will_return(batch_get_build(event, EXPORTED))
        outcome = recorder(stack, codebuild, url).record(
            BuildStateChangeEvent.model_validate(event)
        )
        assert outcome.reported
        assert outcome.status_posted

    return handle


def test_a_pending_retried_after_the_final_status_is_not_posted(
    stack: Stack, codebuild_stub: StubbedCodeBuild, fake_github: FakeGitHub
) -> None:
    trigger_write(stack.table_name, sample("in-progress"))
    fake_github.answers = [(502, {})]  # the first `pending` attempt
    # The final event is handled while the pending post backs off before its retry.
    backoff = final_event_handled(stack, codebuild_stub, fake_github.url)

    outcome = recorder(stack, codebuild_stub, fake_github.url, sleep=backoff).record(
        BuildStateChangeEvent.model_validate(sample("in-progress"))
    )

    assert outcome.recorded
    assert not outcome.status_posted
    assert fake_github.statuses() == ["pending", "success"]  # no pending after the 502
    assert fake_github.accepted == ["success"]


def test_a_pending_github_takes_after_the_final_status_is_followed_by_it_again(
    stack: Stack, codebuild_stub: StubbedCodeBuild, fake_github: FakeGitHub
) -> None:
    trigger_write(stack.table_name, sample("in-progress"))
    handle_final = final_event_handled(stack, codebuild_stub, fake_github.url)

    def while_pending_is_in_flight(body: dict[str, Any]) -> None:
        if body["state"] == "pending":
            handle_final()  # GitHub takes `success` before the pending it is answering

    fake_github.on_request = while_pending_is_in_flight

    outcome = recorder(stack, codebuild_stub, fake_github.url).record(
        BuildStateChangeEvent.model_validate(sample("in-progress"))
    )

    assert outcome.status_posted
    assert fake_github.accepted == ["success", "pending", "success"]


def test_pending_alone_is_posted_once(
    stack: Stack, codebuild_stub: StubbedCodeBuild, fake_github: FakeGitHub
) -> None:
    trigger_write(stack.table_name, sample("in-progress"))

    outcome = recorder(stack, codebuild_stub, fake_github.url).record(
        BuildStateChangeEvent.model_validate(sample("in-progress"))
    )

    assert outcome.status_posted
    assert fake_github.accepted == ["pending"]
