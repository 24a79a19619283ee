"""CodeCommitTriggerFunction on moto, driven through the template's Handler.

The trigger decides and hands one BuildRequestMessage to BuildRequestQueue; it never reaches
CodeBuild or the builds table. CodeCommit's commit and diff APIs (absent from moto) are
answered by botocore's Stubber, which also fails the test on any call not expected.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layercache.build_records import BuildMode, Trigger
from layercache.handlers import codecommit_trigger
from layercache.triggers import wiring
from layercache.triggers.settings import CodeCommitTriggerSettings
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.functions import invoke_function
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

if TYPE_CHECKING:
    from mypy_boto3_codecommit import CodeCommitClient

FUNCTION = "CodeCommitTriggerFunction"
UPDATED = sample("codecommit-trigger", "reference-updated.json")
CREATED = sample("codecommit-trigger", "reference-created.json")
COMMIT = UPDATED["detail"]["commitId"]
OLD_COMMIT = UPDATED["detail"]["oldCommitId"]
EVENT_TIME = datetime(2026, 11, 28, 8, 14, 3, tzinfo=UTC)


@pytest.fixture
def codecommit(aws: None) -> Iterator[Stubber]:
    client = boto3.client("codecommit", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def invoke(
    stack: Stack,
    function_env: Any,
    lambda_context: FakeLambdaContext,
    codecommit: Stubber,
    monkeypatch: pytest.MonkeyPatch,
    aws_calls: list[RecordedCall],
    queue_outage: Outage,
) -> Any:
    def call(event: dict[str, Any], **env: str) -> dict[str, Any]:
        function_env(FUNCTION, SOURCE_REPOSITORY="service", **env)
        service = wiring.make_codecommit_trigger_service(
            CodeCommitTriggerSettings.from_env(),
            codecommit=cast("CodeCommitClient", codecommit.client),
        )
        monkeypatch.setattr(codecommit_trigger, "codecommit_trigger_service", lambda: service)
        result: dict[str, Any] = invoke_function(FUNCTION, event, lambda_context)
        return result

    return call


def expect_commit(stubber: Stubber, commit_id: str, message: str) -> None:
    stubber.add_response(
        "get_commit",
        {"commit": {"commitId": commit_id, "message": message, "parents": [OLD_COMMIT]}},
        {"repositoryName": "service", "commitId": commit_id},
    )


def expect_differences(stubber: Stubber, *pages: list[str], more: bool = False) -> None:
    for index, paths in enumerate(pages):
        expected: dict[str, Any] = {
            "repositoryName": "service",
            "beforeCommitSpecifier": OLD_COMMIT,
            "afterCommitSpecifier": COMMIT,
        }
        if index:
            expected["NextToken"] = f"page-{index}"
        response: dict[str, Any] = {
            "differences": [
                {"afterBlob": {"blobId": "b" * 40, "path": path, "mode": "100644"}}
                for path in paths
            ]
        }
        if index < len(pages) - 1 or more:
            response["NextToken"] = f"page-{index + 1}"
        stubber.add_response("get_differences", response, expected)


def nothing_handed_on(stack: Stack, calls: list[RecordedCall]) -> None:
    assert queued(stack) == []
    assert [call for call in calls if call.operation == "sqs:SendMessage"] == []
    assert_nothing_built(stack, calls)


def test_branch_update_hands_on_a_build_of_that_commit(
    invoke: Any, codecommit: Stubber, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    expect_commit(codecommit, COMMIT, "Add health check")

    result = invoke(UPDATED)

    (message,) = queued(stack)
    assert result == {"build": True, "reason": "push to main", "request_id": message.message_id}
    request = message.request
    assert request.image == stack.repository_name
    assert request.branch == "main"
    assert request.commit == COMMIT
    assert request.before == OLD_COMMIT
    assert request.trigger is Trigger.CODECOMMIT
    assert request.mode is BuildMode.NORMAL
    assert request.build is True
    assert request.occasion == COMMIT
    assert request.pushed_at == EVENT_TIME, "the event's time"
    assert request.delivery_id is None
    assert request.source_version == COMMIT
    assert message.group_id == request.group_id
    assert_nothing_built(stack, aws_calls)


def test_created_branch_has_no_before_commit_and_builds(
    invoke: Any, codecommit: Stubber, stack: Stack
) -> None:
    commit = CREATED["detail"]["commitId"]
    expect_commit(codecommit, commit, "Start the branch")

    result = invoke(CREATED)

    assert result["build"] is True
    (request,) = queued_requests(stack)
    assert (request.commit, request.before, request.build) == (commit, None, True)


def test_a_repeated_event_hands_on_a_second_request(
    invoke: Any, codecommit: Stubber, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    """EventBridge delivers at least once; the starter, not the trigger, deduplicates."""
    expect_commit(codecommit, COMMIT, "Add health check")
    expect_commit(codecommit, COMMIT, "Add health check")

    first = invoke(UPDATED)
    second = invoke(UPDATED)

    messages = queued(stack)
    assert [message.message_id for message in messages] == [
        first["request_id"],
        second["request_id"],
    ]
    assert {message.request.claim_pk for message in messages} == {messages[0].request.claim_pk}
    assert_nothing_built(stack, aws_calls)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("reference-updated-other-branch", "branch feature/login is not watched"),
        ("tag-created", "tag push v1.4.0"),
    ],
    ids=["other branch", "tag"],
)
def test_updates_that_move_no_watched_branch_hand_nothing_on_and_read_nothing(
    invoke: Any, stack: Stack, name: str, reason: str, aws_calls: list[RecordedCall]
) -> None:
    result = invoke(sample("codecommit-trigger", f"{name}.json"))
    assert result == {"build": False, "reason": reason, "request_id": None}
    nothing_handed_on(stack, aws_calls)
    assert not [call for call in aws_calls if call.operation.startswith("codecommit:")]


def test_a_deleted_branch_hands_nothing_on(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    event = sample("codecommit-trigger", "reference-updated.json")
    event["detail"]["event"] = "referenceDeleted"
    del event["detail"]["commitId"]

    result = invoke(event)

    assert result == {"build": False, "reason": "main was deleted", "request_id": None}
    nothing_handed_on(stack, aws_calls)


def test_skip_ci_hands_on_a_request_that_builds_nothing(
    invoke: Any, codecommit: Stubber, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    """The update still moves the branch: the starter orders later pushes by it."""
    expect_commit(codecommit, COMMIT, "Tidy docs\n\n[ci skip]")

    result = invoke(UPDATED)

    (message,) = queued(stack)
    assert result == {
        "build": False,
        "reason": "head commit asks to skip CI",
        "request_id": message.message_id,
    }
    assert (message.request.build, message.request.commit) == (False, COMMIT)
    assert message.request.reason == "head commit asks to skip CI"
    assert_nothing_built(stack, aws_calls)


def test_event_of_another_repository_is_ignored(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    event = sample("codecommit-trigger", "reference-updated.json")
    event["detail"]["repositoryName"] = "other"
    result = invoke(event)
    assert result == {"build": False, "reason": "event of repository other", "request_id": None}
    nothing_handed_on(stack, aws_calls)


@pytest.mark.parametrize(
    "damage",
    [
        lambda event: event["detail"].pop("referenceName"),
        lambda event: event["detail"].update(event="commentOnCommitCreated"),
        lambda event: event.pop("time"),
        lambda event: event.update(detail="referenceUpdated"),
    ],
    ids=["no reference name", "other event kind", "no time", "detail not an object"],
)
def test_malformed_event_is_rejected_without_retry(
    invoke: Any, stack: Stack, damage: Any, aws_calls: list[RecordedCall]
) -> None:
    event = sample("codecommit-trigger", "reference-updated.json")
    damage(event)
    result = invoke(event)
    assert result == {"build": False, "reason": "malformed event"}
    nothing_handed_on(stack, aws_calls)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["branch", "tag"]),
    name=st.text(min_size=1, max_size=30),
    event=st.sampled_from(["referenceCreated", "referenceUpdated"]),
)
def test_any_update_of_a_ref_that_is_not_a_watched_branch_hands_nothing_on(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall], kind: str, name: str, event: str
) -> None:
    if kind == "branch" and name == "main":
        name = "main-2"
    update = sample("codecommit-trigger", "reference-updated.json")
    prefix = "refs/heads/" if kind == "branch" else "refs/tags/"
    update["detail"].update(
        event=event, referenceType=kind, referenceName=name, referenceFullName=prefix + name
    )

    result = invoke(update)

    assert (result["build"], result["request_id"]) == (False, None)
    nothing_handed_on(stack, aws_calls)
    assert not [call for call in aws_calls if call.operation.startswith("codecommit:")]


class TestPathFilters:
    def test_change_under_a_filter_builds(
        self, invoke: Any, codecommit: Stubber, stack: Stack
    ) -> None:
        expect_commit(codecommit, COMMIT, "Change the API")
        expect_differences(codecommit, ["README.md"], ["app/api.py"])
        result = invoke(UPDATED, PATH_FILTERS="app/")
        assert (result["build"], result["reason"]) == (True, "app/api.py changed")
        (request,) = queued_requests(stack)
        assert request.build is True

    def test_change_outside_the_filters_hands_on_no_build(
        self, invoke: Any, codecommit: Stubber, stack: Stack, aws_calls: list[RecordedCall]
    ) -> None:
        expect_commit(codecommit, COMMIT, "Docs")
        expect_differences(codecommit, ["README.md", "docs/guide.md"])
        result = invoke(UPDATED, PATH_FILTERS="app/,Dockerfile")
        assert (result["build"], result["reason"]) == (
            False,
            "no changed file under the path filters",
        )
        (request,) = queued_requests(stack)
        assert (request.build, request.commit, request.before) == (False, COMMIT, OLD_COMMIT)
        assert_nothing_built(stack, aws_calls)

    def test_a_diff_too_large_to_read_builds_anyway(
        self, invoke: Any, codecommit: Stubber, stack: Stack
    ) -> None:
        expect_commit(codecommit, COMMIT, "Vendor everything")
        expect_differences(codecommit, ["vendor/a"], ["vendor/b"], more=True)
        result = invoke(UPDATED, PATH_FILTERS="app/", MAX_DIFFERENCE_PAGES="2")
        assert (result["build"], result["reason"]) == (
            True,
            "changed files unknown; building to be safe",
        )
        assert queued_requests(stack)[0].build is True

    def test_a_diff_read_to_its_last_page_decides(
        self, invoke: Any, codecommit: Stubber, stack: Stack
    ) -> None:
        expect_commit(codecommit, COMMIT, "Docs")
        expect_differences(codecommit, ["docs/a"], ["docs/b"])
        result = invoke(UPDATED, PATH_FILTERS="app/", MAX_DIFFERENCE_PAGES="2")
        assert result["build"] is False

    def test_new_branch_has_no_diff_and_builds(
        self, invoke: Any, codecommit: Stubber, stack: Stack
    ) -> None:
        expect_commit(codecommit, CREATED["detail"]["commitId"], "New branch")
        assert invoke(CREATED, PATH_FILTERS="app/")["build"] is True
        assert queued_requests(stack)[0].build is True


def test_codecommit_failure_surfaces_for_the_async_retry(
    invoke: Any, codecommit: Stubber, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    codecommit.add_client_error("get_commit", "ServiceUnavailableException", http_status_code=503)
    with pytest.raises(codecommit.client.exceptions.ClientError):
        invoke(UPDATED)
    nothing_handed_on(stack, aws_calls)


def test_a_queue_that_refuses_the_request_surfaces_for_the_async_retry(
    invoke: Any,
    codecommit: Stubber,
    stack: Stack,
    queue_outage: Outage,
    aws_calls: list[RecordedCall],
) -> None:
    """Lambda retries the event, then parks it in TriggerFailureQueue: never lost quietly."""
    expect_commit(codecommit, COMMIT, "Add health check")
    expect_commit(codecommit, COMMIT, "Add health check")
    queue_outage.on = True
    with pytest.raises(EndpointConnectionError):
        invoke(UPDATED)
    assert queued(stack) == []
    assert_nothing_built(stack, aws_calls)

    queue_outage.on = False
    assert invoke(UPDATED)["build"] is True
    assert [request.commit for request in queued_requests(stack)] == [COMMIT]


def test_a_requested_build_is_counted(
    invoke: Any, codecommit: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    expect_commit(codecommit, COMMIT, "Add health check")
    invoke(UPDATED)
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert document["BuildsRequested"] in (1.0, [1.0])
    assert document["trigger"] == "codecommit"


def test_an_update_that_builds_nothing_is_not_counted_as_a_build(
    invoke: Any, codecommit: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    expect_commit(codecommit, COMMIT, "[skip ci]")
    invoke(UPDATED)
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert "BuildsRequested" not in document
    assert document["EventsReceived"] in (1.0, [1.0])
