"""GitHubWebhookFunction end to end on moto, driven through the template's Handler.

The webhook verifies, decides and hands one BuildRequestMessage to BuildRequestQueue; it never
reaches CodeBuild or the builds table. So each test reads what is on the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from layercache.build_records import BuildMode, Trigger
from layercache.triggers.models import (
    GITHUB_MAX_FILES_PER_COMMIT,
    GITHUB_MAX_LISTED_COMMITS,
    GitHubPushEvent,
)
from layercache.triggers.signature import sign
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.functions import function_handler_callable
from layercache_dev.kit.github_events import (
    LOCAL_WEBHOOK_SECRET,
    ZERO_SHA,
    fake_sha,
    function_url_event,
    push_payload,
)
from layercache_dev.kit.lambda_context import FakeLambdaContext
from tests.conftest import emitted_metrics
from tests.integration.conftest import RecordedCall

from .conftest import (
    Outage,
    assert_nothing_built,
    failed_requests,
    queued,
    queued_requests,
    sample,
)

FUNCTION = "GitHubWebhookFunction"
Invoke = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


@pytest.fixture
def secrets_outage(aws_calls: list[RecordedCall]) -> Outage:
    return Outage("before-call.secrets-manager.GetSecretValue")


@pytest.fixture
def env(stack: Stack, function_env: Any) -> Callable[..., None]:
    """Apply the function's template environment, with overrides; call again to change it
    before the first delivery (the service is built once per container, then cached)."""

    def apply(**overrides: str) -> None:
        function_env(FUNCTION, **overrides)

    apply()
    return apply


@pytest.fixture
def invoke(
    env: Any,
    lambda_context: FakeLambdaContext,
    aws_calls: list[RecordedCall],
    secrets_outage: Outage,
    queue_outage: Outage,
) -> Invoke:
    handler = function_handler_callable(FUNCTION)

    def call(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = handler(event, lambda_context)
        assert response["headers"] == {"content-type": "application/json"}
        return response["statusCode"], json.loads(response["body"])

    return call


def signed(body: str, *, event_type: str = "push", form: bool = False) -> dict[str, Any]:
    """A delivery whose body is exactly `body`, correctly signed."""
    event = function_url_event(event_type, push_payload(), form=form)
    event["body"] = body
    event["headers"]["x-hub-signature-256"] = sign(LOCAL_WEBHOOK_SECRET.encode(), body.encode())
    return event


def no_request_queued(stack: Stack, calls: list[RecordedCall]) -> None:
    assert queued(stack) == []
    assert [call for call in calls if call.operation == "sqs:SendMessage"] == []
    assert_nothing_built(stack, calls)


# ------------------------------------------------------------------ a push that builds


def test_push_to_a_watched_branch_hands_on_one_build_request(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    event = sample("github-webhook", "push-main.json")
    payload = json.loads(event["body"])
    before_call = datetime.now(UTC)

    status, body = invoke(event)

    assert status == 202
    assert body["message"] == "build requested"
    (message,) = queued(stack)
    assert body == {"message": "build requested", "request_id": message.message_id}
    request = message.request
    assert request.image == stack.repository_name
    assert request.branch == "main"
    assert request.commit == payload["after"]
    assert request.before == payload["before"]
    assert request.build is True
    assert request.reason == "push to main"
    assert request.trigger is Trigger.GITHUB
    assert request.mode is BuildMode.NORMAL
    assert request.occasion == payload["after"]
    assert request.delivery_id == event["headers"]["x-github-delivery"]
    assert request.forced is False
    assert request.source_version == payload["after"], "the exact commit, never a branch name"
    assert before_call <= request.requested_at <= datetime.now(UTC)
    assert message.group_id == request.group_id
    assert_nothing_built(stack, aws_calls)
    assert failed_requests(stack) == 0


def test_form_encoded_delivery_hands_on_the_same_request(invoke: Invoke, stack: Stack) -> None:
    event = sample("github-webhook", "push-main-form.json")

    status, body = invoke(event)

    assert (status, body["message"]) == (202, "build requested")
    (request,) = queued_requests(stack)
    assert request.commit == push_payload(message="Bump the base image")["after"]
    assert request.build is True


def test_pushed_at_of_the_repository_becomes_the_requests_pushed_at(
    invoke: Invoke, stack: Stack
) -> None:
    payload = push_payload()
    payload["repository"]["pushed_at"] = 1795853643  # epoch seconds, as GitHub sends it

    assert invoke(function_url_event("push", payload))[0] == 202

    (request,) = queued_requests(stack)
    assert request.pushed_at == datetime(2026, 11, 28, 8, 14, 3, tzinfo=UTC)


def test_a_push_without_pushed_at_has_none(invoke: Invoke, stack: Stack) -> None:
    invoke(sample("github-webhook", "push-main.json"))
    (request,) = queued_requests(stack)
    assert request.pushed_at is None


def test_a_force_push_is_handed_on_as_forced(invoke: Invoke, stack: Stack) -> None:
    """The starter lets a force push move the branch back to an older commit."""
    payload = push_payload(after=fake_sha("older"), before=fake_sha("newer"))
    payload["forced"] = True

    assert invoke(function_url_event("push", payload))[0] == 202

    (request,) = queued_requests(stack)
    assert (request.forced, request.commit, request.before) == (
        True,
        fake_sha("older"),
        fake_sha("newer"),
    )


def test_a_new_branch_has_no_before_commit(invoke: Invoke, stack: Stack) -> None:
    payload = push_payload(before=ZERO_SHA, created=True)

    assert invoke(function_url_event("push", payload))[0] == 202

    (request,) = queued_requests(stack)
    assert request.before is None
    assert request.commit == payload["after"]


def test_a_replayed_delivery_hands_on_a_second_request(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    """The webhook keeps no delivery records: the starter tells replays apart."""
    event = sample("github-webhook", "push-main.json")

    first = invoke(event)
    second = invoke(event)

    assert first[0] == second[0] == 202
    messages = queued(stack)
    assert [message.message_id for message in messages] == [
        first[1]["request_id"],
        second[1]["request_id"],
    ]
    one, two = (message.request for message in messages)
    assert one.commit == two.commit
    assert one.delivery_id == two.delivery_id
    assert one.claim_pk == two.claim_pk, "the starter sees both as one occasion"
    assert messages[0].group_id == messages[1].group_id
    assert messages[0].deduplication_id != messages[1].deduplication_id
    assert_nothing_built(stack, aws_calls)


def test_a_branchs_pushes_share_one_message_group_in_push_order(
    invoke: Invoke, env: Any, stack: Stack
) -> None:
    env(WATCHED_BRANCHES="main,release/2.x")
    first = push_payload(after=fake_sha("a"))
    other = push_payload(ref="refs/heads/release/2.x", after=fake_sha("c"))
    second = push_payload(after=fake_sha("b"), before=first["after"])
    for payload in (first, other, second):
        assert invoke(function_url_event("push", payload))[0] == 202

    messages = {message.request.commit: message for message in queued(stack)}

    assert messages[second["after"]].request.before == first["after"]
    assert messages[first["after"]].group_id == messages[second["after"]].group_id
    assert messages[other["after"]].group_id != messages[first["after"]].group_id
    assert messages[other["after"]].request.branch == "release/2.x"


# ------------------------------------------------------------------ refused or ignored


@pytest.mark.parametrize(
    "event",
    [
        function_url_event("push", push_payload(), secret="wrong secret"),
        function_url_event("push", push_payload(), secret=None),
        function_url_event("ping", {"zen": "hi"}, secret="wrong secret"),
    ],
    ids=["wrong signature", "no signature", "ping with wrong signature"],
)
def test_unsigned_or_badly_signed_delivery_is_401_and_hands_nothing_on(
    invoke: Invoke, stack: Stack, event: dict[str, Any], aws_calls: list[RecordedCall]
) -> None:
    status, body = invoke(event)
    assert status == 401
    assert body == {"message": "invalid signature"}
    no_request_queued(stack, aws_calls)


def test_bad_signature_sample_is_refused(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    assert invoke(sample("github-webhook", "bad-signature.json"))[0] == 401
    no_request_queued(stack, aws_calls)


def test_a_tampered_body_is_refused(invoke: Invoke, stack: Stack) -> None:
    event = sample("github-webhook", "push-main.json")
    event["body"] = event["body"].replace("refs/heads/main", "refs/heads/evil")
    assert invoke(event)[0] == 401
    assert queued(stack) == []


def test_ping_is_200(invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]) -> None:
    status, body = invoke(sample("github-webhook", "ping.json"))
    assert (status, body) == (200, {"message": "pong"})
    no_request_queued(stack, aws_calls)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("push-other-branch", "no build: branch feature/login is not watched"),
        ("push-tag", "no build: tag push v1.4.0"),
        ("delete-branch", "no build: branch main was deleted"),
    ],
)
def test_pushes_that_move_no_watched_branch_are_202_and_hand_nothing_on(
    invoke: Invoke, stack: Stack, name: str, reason: str, aws_calls: list[RecordedCall]
) -> None:
    status, body = invoke(sample("github-webhook", f"{name}.json"))
    assert (status, body) == (202, {"message": reason})
    no_request_queued(stack, aws_calls)


def test_skip_ci_hands_on_a_request_that_builds_nothing(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    """The push still moves the branch: the starter orders later pushes by it."""
    event = sample("github-webhook", "push-skip-ci.json")

    status, body = invoke(event)

    assert (status, body) == (202, {"message": "no build: head commit asks to skip CI"})
    (request,) = queued_requests(stack)
    assert request.build is False
    assert request.reason == "head commit asks to skip CI"
    assert request.commit == json.loads(event["body"])["after"]
    assert_nothing_built(stack, aws_calls)


def test_other_event_types_are_202_not_errors(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    status, body = invoke(function_url_event("issues", {"action": "opened"}))
    assert status == 202
    assert body == {"message": "ignored: layercache builds on push, not issues"}
    no_request_queued(stack, aws_calls)


def test_push_of_another_repository_is_ignored(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    payload = push_payload(repository="someone/else")
    status, body = invoke(function_url_event("push", payload))
    assert (status, body) == (202, {"message": "ignored: push to someone/else"})
    no_request_queued(stack, aws_calls)


def test_the_repository_name_is_compared_without_case(invoke: Invoke, stack: Stack) -> None:
    payload = push_payload(repository="Octo-Org/Service")
    assert invoke(function_url_event("push", payload))[1]["message"] == "build requested"
    assert len(queued_requests(stack)) == 1


def test_a_push_without_delivery_id_is_400(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    event = sample("github-webhook", "push-main.json")
    del event["headers"]["x-github-delivery"]
    status, body = invoke(event)
    assert (status, body) == (400, {"message": "missing X-GitHub-Delivery"})
    no_request_queued(stack, aws_calls)


@pytest.mark.parametrize(
    ("body", "form"),
    [
        ("{not json", False),
        (json.dumps({"ref": "refs/heads/main"}), False),
        (json.dumps(["refs/heads/main"]), False),
        ("payload=", True),
        ("x=1", True),
        ("payload=%7Bnot+json", True),
    ],
    ids=["not json", "missing fields", "a list", "empty form", "form without payload", "bad form"],
)
def test_signed_but_malformed_push_is_400(
    invoke: Invoke, stack: Stack, body: str, form: bool, aws_calls: list[RecordedCall]
) -> None:
    status, answer = invoke(signed(body, form=form))
    assert (status, answer) == (400, {"message": "malformed push payload"})
    no_request_queued(stack, aws_calls)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )


def _not_watched_branch_pushes() -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed push payloads that do not move a watched branch of this repository."""
    names = st.text(min_size=1, max_size=30)
    ref = st.one_of(
        names.map(lambda name: "refs/tags/" + name),
        names.filter(lambda name: name != "main").map(lambda name: "refs/heads/" + name),
        st.text(max_size=30).filter(lambda ref: not ref.startswith("refs/heads/")),
    )
    unwatched = st.builds(lambda ref: push_payload(ref=ref), ref)
    deleted = st.just(push_payload(deleted=True))

    def elsewhere(full_name: str) -> dict[str, Any]:
        payload = push_payload()
        payload["repository"]["full_name"] = full_name
        return payload

    other_repository = st.text(max_size=40).filter(lambda name: name.lower() != "octo-org/service")
    return st.one_of(unwatched, deleted, other_repository.map(elsewhere))


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_not_watched_branch_pushes())
def test_any_push_not_to_a_watched_branch_hands_nothing_on(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall], payload: dict[str, Any]
) -> None:
    status, body = invoke(function_url_event("push", payload))
    assert status == 202
    assert body["message"].startswith(("no build: ", "ignored: push to "))
    assert "request_id" not in body
    no_request_queued(stack, aws_calls)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_json_values())
def test_any_json_that_is_not_a_push_payload_is_400_and_hands_nothing_on(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall], value: Any
) -> None:
    try:
        GitHubPushEvent.model_validate(value)
    except ValidationError:
        pass
    else:
        assume(False)
    status, _ = invoke(signed(json.dumps(value)))
    assert status == 400
    no_request_queued(stack, aws_calls)


# ------------------------------------------------------------------ path filters


class TestPathFilters:
    @pytest.fixture
    def invoke_filtered(self, invoke: Invoke, env: Any) -> Invoke:
        env(PATH_FILTERS="app/,Dockerfile")
        return invoke

    def request_for(
        self, invoke: Invoke, stack: Stack, payload: dict[str, Any]
    ) -> tuple[str, bool, str]:
        status, body = invoke(function_url_event("push", payload))
        assert status == 202
        (request,) = queued_requests(stack)
        assert request.commit == payload["after"]
        return body["message"], request.build, request.reason

    def test_change_under_a_filter_builds(self, invoke_filtered: Invoke, stack: Stack) -> None:
        payload = push_payload(changed=["docs/a.md", "app/api/routes.py"])
        assert self.request_for(invoke_filtered, stack, payload) == (
            "build requested",
            True,
            "app/api/routes.py changed",
        )

    def test_change_outside_the_filters_hands_on_no_build(
        self, invoke_filtered: Invoke, stack: Stack, aws_calls: list[RecordedCall]
    ) -> None:
        payload = push_payload(changed=["docs/index.md", "README.md"])
        assert self.request_for(invoke_filtered, stack, payload) == (
            "no build: no changed file under the path filters",
            False,
            "no changed file under the path filters",
        )
        assert_nothing_built(stack, aws_calls)

    def test_a_25_commit_push_outside_the_filters_does_not_build(
        self, invoke_filtered: Invoke, stack: Stack
    ) -> None:
        """GitHub's 20-commit cap is for timeline events; a delivery lists all 25."""
        payload = push_payload(changed=["docs/index.md"], commit_count=25)
        assert len(payload["commits"]) == 25
        _, build, reason = self.request_for(invoke_filtered, stack, payload)
        assert (build, reason) == (False, "no changed file under the path filters")

    def test_a_change_in_an_early_commit_of_a_long_push_builds(
        self, invoke_filtered: Invoke, stack: Stack
    ) -> None:
        payload = push_payload(changed=["docs/index.md"], commit_count=40)
        payload["commits"][0]["added"] = ["Dockerfile"]
        _, build, reason = self.request_for(invoke_filtered, stack, payload)
        assert (build, reason) == (True, "Dockerfile changed")

    def test_just_under_githubs_commit_limit_the_lists_are_trusted(
        self, invoke_filtered: Invoke, stack: Stack
    ) -> None:
        payload = push_payload(changed=["docs/x.md"], commit_count=GITHUB_MAX_LISTED_COMMITS - 1)
        _, build, _ = self.request_for(invoke_filtered, stack, payload)
        assert build is False

    def test_a_2048_commit_push_may_be_cut_and_builds(
        self, invoke_filtered: Invoke, stack: Stack
    ) -> None:
        payload = push_payload(changed=["docs/x.md"], commit_count=GITHUB_MAX_LISTED_COMMITS)
        assert len(payload["commits"]) == 2048
        message, build, reason = self.request_for(invoke_filtered, stack, payload)
        assert (message, build) == ("build requested", True)
        assert reason == "changed files unknown; building to be safe"

    def test_a_commit_with_3000_changed_files_may_be_cut_and_builds(
        self, invoke_filtered: Invoke, stack: Stack
    ) -> None:
        files = [f"docs/page-{index}.md" for index in range(GITHUB_MAX_FILES_PER_COMMIT)]
        payload = push_payload(changed=files)
        assert len(files) == 3000
        _, build, reason = self.request_for(invoke_filtered, stack, payload)
        assert (build, reason) == (True, "changed files unknown; building to be safe")

    def test_a_commit_with_2999_changed_files_is_read_whole(
        self, invoke_filtered: Invoke, stack: Stack
    ) -> None:
        files = [f"docs/page-{index}.md" for index in range(GITHUB_MAX_FILES_PER_COMMIT - 1)]
        _, build, _ = self.request_for(invoke_filtered, stack, push_payload(changed=files))
        assert build is False

    def test_commits_without_file_lists_build(self, invoke_filtered: Invoke, stack: Stack) -> None:
        payload = push_payload()
        for commit in payload["commits"]:
            for key in ("added", "removed", "modified"):
                del commit[key]
        _, build, _ = self.request_for(invoke_filtered, stack, payload)
        assert build is True

    def test_skip_ci_wins_over_a_matching_change(
        self, invoke_filtered: Invoke, stack: Stack
    ) -> None:
        payload = push_payload(changed=["app/x.py"], message="WIP [ci skip]")
        _, build, reason = self.request_for(invoke_filtered, stack, payload)
        assert (build, reason) == (False, "head commit asks to skip CI")


# ------------------------------------------------------------------ the secret


def test_secret_is_fetched_once_for_many_deliveries(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    for index in range(3):
        invoke(function_url_event("push", push_payload(after=fake_sha(str(index)))))
    fetches = [call for call in aws_calls if call.operation == "secretsmanager:GetSecretValue"]
    assert len(fetches) == 1
    assert len(queued_requests(stack)) == 3


def test_secrets_manager_down_on_a_cold_container_is_503_and_hands_nothing_on(
    invoke: Invoke, stack: Stack, secrets_outage: Outage, aws_calls: list[RecordedCall]
) -> None:
    secrets_outage.on = True
    event = sample("github-webhook", "push-main.json")

    status, body = invoke(event)

    assert (status, body) == (503, {"message": "webhook secret unavailable; redeliver later"})
    no_request_queued(stack, aws_calls)

    # Once Secrets Manager is back, GitHub's Redeliver of the same delivery builds.
    secrets_outage.on = False
    status, body = invoke(event)
    assert (status, body["message"]) == (202, "build requested")
    assert len(queued_requests(stack)) == 1


def test_secrets_manager_down_on_a_warm_container_uses_the_remembered_secret(
    invoke: Invoke,
    env: Any,
    stack: Stack,
    secrets_outage: Outage,
    aws_calls: list[RecordedCall],
) -> None:
    env(SECRET_MAX_AGE_SECONDS="0")  # every delivery reads the secret again
    invoke(function_url_event("push", push_payload(after=fake_sha("warm-up"))))
    assert len(queued_requests(stack)) == 1
    secrets_outage.on = True
    reads_before = sum(1 for call in aws_calls if call.operation == "secretsmanager:GetSecretValue")

    status, body = invoke(sample("github-webhook", "push-main.json"))

    assert (status, body["message"]) == (202, "build requested")
    (request,) = queued_requests(stack)
    assert request.commit == json.loads(sample("github-webhook", "push-main.json")["body"])["after"]
    reads = sum(1 for call in aws_calls if call.operation == "secretsmanager:GetSecretValue")
    assert reads > reads_before, "the secret was asked for, and the outage answered"
    # The remembered secret still refuses what it did not sign.
    assert invoke(sample("github-webhook", "bad-signature.json"))[0] == 401
    assert queued(stack) == []


# ------------------------------------------------------------------ the hand-over failing


def test_a_queue_that_refuses_the_request_fails_the_delivery_loudly(
    invoke: Invoke, stack: Stack, queue_outage: Outage, aws_calls: list[RecordedCall]
) -> None:
    """No 2xx for a request that was not handed on: GitHub shows the failure, and its
    Redeliver hands the push on once SQS takes it."""
    event = sample("github-webhook", "push-main.json")
    queue_outage.on = True

    with pytest.raises(EndpointConnectionError):
        invoke(event)
    assert queued(stack) == []
    assert_nothing_built(stack, aws_calls)

    queue_outage.on = False
    status, body = invoke(event)
    assert (status, body["message"]) == (202, "build requested")
    assert len(queued_requests(stack)) == 1


def test_the_answer_does_not_wait_on_codebuild(
    invoke: Invoke, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    """A throttled CodeBuild cannot slow the answer down: the webhook never calls it."""

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "StartBuild")

    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register_first("before-call.codebuild.*", throttled)
    assert invoke(sample("github-webhook", "ping.json"))[0] == 200  # a warm container
    started = datetime.now(UTC)

    status, _ = invoke(sample("github-webhook", "push-main.json"))

    assert status == 202
    assert datetime.now(UTC) - started < timedelta(seconds=1)
    assert len(queued_requests(stack)) == 1
    assert_nothing_built(stack, aws_calls)


# ------------------------------------------------------------------ metrics


def test_rejected_delivery_is_counted_by_reason(
    invoke: Invoke, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke(function_url_event("push", push_payload(), secret="wrong"))
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert document["DeliveriesRejected"] in (1.0, [1.0])
    assert document["reason"] == "signature"


def test_a_requested_build_is_counted(invoke: Invoke, capsys: pytest.CaptureFixture[str]) -> None:
    invoke(sample("github-webhook", "push-main.json"))
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert document["BuildsRequested"] in (1.0, [1.0])
    assert document["trigger"] == "github"
    assert "DeliveriesRejected" not in document


def test_a_push_that_builds_nothing_is_not_counted_as_a_build(
    invoke: Invoke, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke(sample("github-webhook", "push-skip-ci.json"))
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert "BuildsRequested" not in document
    assert document["DeliveriesReceived"] in (1.0, [1.0])
