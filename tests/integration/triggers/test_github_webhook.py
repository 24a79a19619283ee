"""GitHubWebhookFunction end to end on moto, driven through the template's Handler."""

from __future__ import annotations

import json
from typing import Any

import pytest

from layercache_dev.embedded_aws import Stack
from layercache_dev.github_events import (
    LOCAL_WEBHOOK_SECRET,
    fake_sha,
    function_url_event,
    push_payload,
)
from layercache_dev.lambda_context import FakeLambdaContext
from tests.conftest import emitted_metrics
from tests.integration.conftest import RecordedCall

from .conftest import builds_started, sample, table_items, template_handler

FUNCTION = "GitHubWebhookFunction"


@pytest.fixture
def invoke(
    stack: Stack,
    function_env: Any,
    lambda_context: FakeLambdaContext,
    aws_calls: list[RecordedCall],
) -> Any:
    import boto3

    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    secrets.put_secret_value(
        SecretId=stack.refs["WebhookSecret"], SecretString=LOCAL_WEBHOOK_SECRET
    )
    function_env(FUNCTION)
    handler = template_handler(FUNCTION)

    def call(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = handler(event, lambda_context)
        return response["statusCode"], json.loads(response["body"])

    return call


def start_build_calls(calls: list[RecordedCall]) -> list[dict[str, Any]]:
    return [call.params for call in calls if call.operation == "codebuild:StartBuild"]


def test_push_to_watched_branch_starts_one_build(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    event = sample("github-webhook", "push-main.json")
    after = json.loads(event["body"])["after"]

    status, body = invoke(event)

    assert status == 201
    assert builds_started(stack.project_name) == [body["build_id"]]
    (params,) = start_build_calls(aws_calls)
    assert params["projectName"] == stack.project_name
    assert params["sourceVersion"] == after
    env = {item["name"]: item["value"] for item in params["environmentVariablesOverride"]}
    assert env["LAYERCACHE_BRANCH"] == "main"
    assert env["LAYERCACHE_COMMIT"] == after
    assert env["LAYERCACHE_TRIGGER"] == "github"
    assert env["LAYERCACHE_MODE"] == "normal"
    assert env["LAYERCACHE_REQUESTED_AT"].endswith("Z")
    (build,) = table_items(stack.table_name, "BUILD#")
    assert build["build_id"]["S"] == body["build_id"]
    assert build["commit"]["S"] == after
    assert build["branch_key"]["S"] == f"{stack.repository_name}#main"
    assert build["trigger"]["S"] == "github"
    assert build["status"]["S"] == "IN_PROGRESS"
    assert len(table_items(stack.table_name, "DELIVERY#")) == 1
    (claim,) = table_items(stack.table_name, "CLAIM#")
    assert claim["build_id"]["S"] == body["build_id"]


def test_form_encoded_delivery_starts_a_build(invoke: Any, stack: Stack) -> None:
    status, body = invoke(sample("github-webhook", "push-main-form.json"))
    assert status == 201
    assert builds_started(stack.project_name) == [body["build_id"]]


def test_redelivery_starts_no_second_build(invoke: Any, stack: Stack) -> None:
    event = sample("github-webhook", "push-main.json")
    assert invoke(event)[0] == 201

    status, body = invoke(event)

    assert status == 200
    assert "duplicate delivery" in body["message"]
    assert len(builds_started(stack.project_name)) == 1


def test_second_delivery_of_a_built_commit_starts_none(invoke: Any, stack: Stack) -> None:
    payload = push_payload(after=fake_sha("one commit"))
    invoke(function_url_event("push", payload, delivery_id="delivery-1"))

    # moto reports the first build as SUCCEEDED: a new delivery for it builds nothing.
    status, body = invoke(function_url_event("push", payload, delivery_id="delivery-2"))

    assert status == 200
    assert "SUCCEEDED" in body["message"]
    assert len(builds_started(stack.project_name)) == 1


def test_new_commit_builds_again(invoke: Any, stack: Stack) -> None:
    invoke(function_url_event("push", push_payload(after=fake_sha("a"))))
    status, _ = invoke(function_url_event("push", push_payload(after=fake_sha("b"))))
    assert status == 201
    assert len(builds_started(stack.project_name)) == 2


@pytest.mark.parametrize(
    "event",
    [
        function_url_event("push", push_payload(), secret="wrong secret"),
        function_url_event("push", push_payload(), secret=None),
        function_url_event("ping", {"zen": "hi"}, secret="wrong secret"),
    ],
    ids=["wrong signature", "no signature", "ping with wrong signature"],
)
def test_unsigned_or_badly_signed_delivery_is_401_and_builds_nothing(
    invoke: Any, stack: Stack, event: dict[str, Any], aws_calls: list[RecordedCall]
) -> None:
    status, body = invoke(event)
    assert status == 401
    assert body == {"message": "invalid signature"}
    assert builds_started(stack.project_name) == []
    assert table_items(stack.table_name, "") == []


def test_bad_signature_sample_is_refused(invoke: Any, stack: Stack) -> None:
    assert invoke(sample("github-webhook", "bad-signature.json"))[0] == 401
    assert builds_started(stack.project_name) == []


def test_a_tampered_body_is_refused(invoke: Any, stack: Stack) -> None:
    event = sample("github-webhook", "push-main.json")
    event["body"] = event["body"].replace("refs/heads/main", "refs/heads/evil")
    assert invoke(event)[0] == 401


def test_ping_is_200(invoke: Any, stack: Stack) -> None:
    status, body = invoke(sample("github-webhook", "ping.json"))
    assert (status, body["message"]) == (200, "pong")
    assert builds_started(stack.project_name) == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("push-other-branch", "feature/login is not watched"),
        ("push-tag", "tag push v1.4.0"),
        ("delete-branch", "main was deleted"),
        ("push-skip-ci", "skip CI"),
    ],
)
def test_pushes_we_do_not_build_are_202_with_the_reason(
    invoke: Any, stack: Stack, name: str, reason: str
) -> None:
    status, body = invoke(sample("github-webhook", f"{name}.json"))
    assert status == 202
    assert reason in body["message"]
    assert builds_started(stack.project_name) == []


def test_other_event_types_are_202_not_errors(invoke: Any, stack: Stack) -> None:
    status, body = invoke(function_url_event("issues", {"action": "opened"}))
    assert status == 202
    assert "not issues" in body["message"]


def test_push_of_another_repository_is_ignored(invoke: Any, stack: Stack) -> None:
    payload = push_payload(repository="someone/else")
    status, body = invoke(function_url_event("push", payload))
    assert status == 202
    assert "someone/else" in body["message"]
    assert builds_started(stack.project_name) == []


@pytest.mark.parametrize(
    "body",
    ["{not json", json.dumps({"ref": "refs/heads/main"}), "payload=", "x=1"],
    ids=["not json", "missing fields", "empty form", "form without payload"],
)
def test_signed_but_malformed_push_is_400(invoke: Any, stack: Stack, body: str) -> None:
    from layercache.triggers.signature import sign

    event = function_url_event("push", push_payload(), form=body.startswith(("payload", "x=")))
    event["body"] = body
    event["headers"]["x-hub-signature-256"] = sign(LOCAL_WEBHOOK_SECRET.encode(), body.encode())
    status, _ = invoke(event)
    assert status == 400
    assert builds_started(stack.project_name) == []


class TestPathFilters:
    @pytest.fixture
    def invoke_filtered(self, invoke: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
        monkeypatch.setenv("PATH_FILTERS", "app/,Dockerfile")
        return invoke

    def test_change_under_a_filter_builds(self, invoke_filtered: Any, stack: Stack) -> None:
        payload = push_payload(changed=["app/api/routes.py"])
        assert invoke_filtered(function_url_event("push", payload))[0] == 201

    def test_change_outside_the_filters_does_not(self, invoke_filtered: Any, stack: Stack) -> None:
        payload = push_payload(changed=["docs/index.md", "README.md"])
        status, body = invoke_filtered(function_url_event("push", payload))
        assert status == 202
        assert "path filters" in body["message"]
        assert builds_started(stack.project_name) == []

    def test_more_commits_than_github_lists_builds_anyway(
        self, invoke_filtered: Any, stack: Stack
    ) -> None:
        payload = push_payload(changed=["docs/index.md"], commit_count=20)
        assert invoke_filtered(function_url_event("push", payload))[0] == 201


def test_secret_is_fetched_once_for_many_deliveries(
    invoke: Any, aws_calls: list[RecordedCall]
) -> None:
    for index in range(3):
        invoke(function_url_event("push", push_payload(after=fake_sha(str(index)))))
    fetches = [call for call in aws_calls if call.operation == "secretsmanager:GetSecretValue"]
    assert len(fetches) == 1


def test_failed_start_surfaces_and_lets_the_redelivery_build(
    invoke: Any, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.exceptions import ClientError

    event = sample("github-webhook", "push-main.json")
    error = ClientError({"Error": {"Code": "AccountLimitExceededException"}}, "StartBuild")

    refusals = [error]

    def refuse_once(**_: Any) -> None:
        if refusals:
            raise refusals.pop()

    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register_first("before-call.codebuild.StartBuild", refuse_once)
    with pytest.raises(ClientError):
        invoke(event)
    assert table_items(stack.table_name, "") == [], "no claim or delivery left behind"

    status, body = invoke(event)

    assert status == 201
    assert builds_started(stack.project_name) == [body["build_id"]]


def test_rejected_delivery_is_counted_by_reason(
    invoke: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke(function_url_event("push", push_payload(), secret="wrong"))
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert document["DeliveriesRejected"] in (1.0, [1.0])
    assert document["Reason"] == "signature"


def test_started_build_is_counted(invoke: Any, capsys: pytest.CaptureFixture[str]) -> None:
    invoke(sample("github-webhook", "push-main.json"))
    (document,) = emitted_metrics(capsys.readouterr().out)
    assert document["BuildsStarted"] in (1.0, [1.0])
    assert document["Trigger"] == "github"
    assert "DeliveriesRejected" not in document
