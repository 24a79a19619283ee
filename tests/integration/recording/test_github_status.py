"""The GitHub commit status client against a local fake GitHub: errors, rate limits, token."""

from __future__ import annotations

import socket
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from layercache.build_records import BuildsTable
from layercache.github_token import SecretToken, TokenUnavailable
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.github import (
    CommitStatus,
    GitHubStatusClient,
    RetryPolicy,
)
from layercache.recording.service import BuildRecorder
from layercache.recording.store import BuildRecordStore
from layercache_dev.kit.functions import invoke_function

from .conftest import (
    IMAGE,
    RECORDER,
    REGION,
    FakeGitHub,
    StubbedCodeBuild,
    batch_get_build,
    fixed_clock,
    sample,
)

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
STATUS = CommitStatus(
    sha=SHA,
    state="success",
    target_url="https://us-east-1.console.aws.amazon.com/codesuite/codebuild/1/projects/p/build/p%3A1/",
    description="Image built in 2m11s",
    context="layercache/team/service",
)
NOW = 1_700_000_000.0


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(url: str, sleeps: Sleeps, token: Any = lambda: "t0ken") -> GitHubStatusClient:
    return GitHubStatusClient(
        "octo-org/service", token, url, sleep=sleeps, clock=lambda: NOW, timeout=2.0
    )


def test_posts_the_status(fake_github: FakeGitHub) -> None:
    sleeps = Sleeps()

    assert client(fake_github.url, sleeps).post(STATUS)

    [request] = fake_github.requests
    assert request["path"] == f"/repos/octo-org/service/statuses/{SHA}"
    assert request["headers"]["Authorization"] == "Bearer t0ken"
    assert request["headers"]["Accept"] == "application/vnd.github+json"
    assert request["body"] == {
        "state": "success",
        "target_url": STATUS.target_url,
        "description": "Image built in 2m11s",
        "context": "layercache/team/service",
    }
    assert sleeps == []


def test_server_errors_are_retried_with_backoff(fake_github: FakeGitHub) -> None:
    fake_github.answers = [(502, {}), (503, {}), (500, {})]
    sleeps = Sleeps()

    assert client(fake_github.url, sleeps).post(STATUS)

    assert len(fake_github.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_persistent_errors_give_up_after_bounded_attempts(
    fake_github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    fake_github.answers = [(500, {})] * 10
    sleeps = Sleeps()

    assert not client(fake_github.url, sleeps).post(STATUS)

    assert len(fake_github.requests) == RetryPolicy().max_attempts
    assert sum(sleeps) <= 4
    assert "GitHub commit status not posted" in caplog.text


def test_secondary_rate_limit_waits_retry_after(fake_github: FakeGitHub) -> None:
    fake_github.answers = [(429, {"Retry-After": "3"}), (403, {"Retry-After": "1"})]
    sleeps = Sleeps()

    assert client(fake_github.url, sleeps).post(STATUS)

    assert sleeps == [3.0, 1.0]
    assert len(fake_github.requests) == 3


def test_primary_rate_limit_waits_until_reset(fake_github: FakeGitHub) -> None:
    fake_github.answers = [
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 4)})
    ]
    sleeps = Sleeps()

    assert client(fake_github.url, sleeps).post(STATUS)

    assert sleeps == [4.0]


def test_rate_limit_reset_far_away_is_not_waited_for(
    fake_github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    fake_github.answers = [
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 3600)})
    ]
    sleeps = Sleeps()

    assert not client(fake_github.url, sleeps).post(STATUS)

    assert sleeps == []
    assert len(fake_github.requests) == 1
    [logged] = [record for record in caplog.records if record.levelname == "ERROR"]
    assert logged.getMessage() == "GitHub commit status not posted"
    assert getattr(logged, "http_status", None) == 403


@pytest.mark.parametrize("code", [401, 404, 422])
def test_client_errors_are_not_retried(code: int, fake_github: FakeGitHub) -> None:
    fake_github.answers = [(code, {})]
    sleeps = Sleeps()

    assert not client(fake_github.url, sleeps).post(STATUS)

    assert len(fake_github.requests) == 1
    assert sleeps == []


def test_unreachable_github_is_retried_then_given_up() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()

    assert not client(f"http://127.0.0.1:{port}", sleeps).post(STATUS)

    assert sleeps == [0.5, 1.0, 2.0]


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        GitHubStatusClient("o/r", lambda: "t", "file:///etc/passwd")


def test_a_status_overtaken_between_attempts_is_not_retried(fake_github: FakeGitHub) -> None:
    fake_github.answers = [(502, {})]
    asked: list[int] = []

    def overtaken() -> bool:
        asked.append(len(fake_github.requests))
        return len(asked) > 1  # the final status was recorded during the backoff

    assert not client(fake_github.url, Sleeps()).post(STATUS, unless=overtaken)

    assert asked == [0, 1]
    assert len(fake_github.requests) == 1


def test_a_status_whose_guard_cannot_be_read_is_not_posted(
    fake_github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    def unreadable() -> bool:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "GetItem")

    assert not client(fake_github.url, Sleeps()).post(STATUS, unless=unreadable)

    assert fake_github.requests == []
    assert "Can't tell whether the commit status is still due" in caplog.text


def test_token_is_read_once_from_secrets_manager(
    aws: None, github_token_secret: str, fake_github: FakeGitHub
) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    token = SecretToken(github_token_secret, secrets)
    github = client(fake_github.url, Sleeps(), token)

    assert github.post(STATUS)
    secrets.delete_secret(SecretId=github_token_secret, ForceDeleteWithoutRecovery=True)
    assert github.post(STATUS)  # cached: the secret is not read again

    assert [r["headers"]["Authorization"] for r in fake_github.requests] == [
        "Bearer ghp_fake0token"
    ] * 2


def test_token_as_json_and_missing_secret(aws: None, fake_github: FakeGitHub) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="json-token", SecretString='{"token": "ghp_json"}')["ARN"]
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf"

    assert client(fake_github.url, Sleeps(), SecretToken(arn, secrets)).post(STATUS)
    assert not client(fake_github.url, Sleeps(), SecretToken(missing, secrets)).post(STATUS)

    assert [r["headers"]["Authorization"] for r in fake_github.requests] == ["Bearer ghp_json"]


def test_token_is_read_again_after_its_max_age(
    aws: None, github_token_secret: str, fake_github: FakeGitHub
) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    token = SecretToken(github_token_secret, secrets, max_age_seconds=0)
    github = client(fake_github.url, Sleeps(), token)

    assert github.post(STATUS)
    secrets.put_secret_value(SecretId=github_token_secret, SecretString="ghp_rotated")
    assert github.post(STATUS)

    assert [r["headers"]["Authorization"] for r in fake_github.requests] == [
        "Bearer ghp_fake0token",
        "Bearer ghp_rotated",
    ]


def test_a_token_read_before_outlives_a_secrets_manager_failure(
    aws: None, github_token_secret: str
) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    token = SecretToken(github_token_secret, secrets, max_age_seconds=0)

    assert token() == "ghp_fake0token"
    secrets.delete_secret(SecretId=github_token_secret, ForceDeleteWithoutRecovery=True)
    assert token() == "ghp_fake0token"  # remembered, and the failure logged

    cold = SecretToken(github_token_secret, secrets, max_age_seconds=0)
    with pytest.raises(TokenUnavailable):
        cold()


@pytest.mark.usefixtures("fresh_recorder")
def test_handler_picks_up_a_rotated_token(
    stack: Any,
    function_env: Any,
    notifications: Any,
    github_token_secret: str,
    fake_github: FakeGitHub,
) -> None:
    function_env(
        RECORDER,
        GITHUB_TOKEN_SECRET_ARN=github_token_secret,
        GITHUB_API_URL=fake_github.url,
        GITHUB_TOKEN_MAX_AGE_SECONDS="0",
    )
    secrets = boto3.client("secretsmanager", region_name=REGION)

    invoke_function(RECORDER, sample("in-progress"))
    secrets.put_secret_value(SecretId=github_token_secret, SecretString="ghp_rotated")
    invoke_function(RECORDER, sample("succeeded"))  # the same warm container

    assert fake_github.statuses() == ["pending", "success"]
    assert [r["headers"]["Authorization"] for r in fake_github.requests] == [
        "Bearer ghp_fake0token",
        "Bearer ghp_rotated",
    ]


def test_failing_status_calls_never_lose_the_record(
    stack: Any, codebuild_stub: StubbedCodeBuild, fake_github: FakeGitHub
) -> None:
    fake_github.answers = [(503, {})] * 20
    github = GitHubStatusClient("octo-org/service", lambda: "t", fake_github.url, sleep=Sleeps())
    service = BuildRecorder(
        image=IMAGE,
        store=BuildRecordStore(
            BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))
        ),
        codebuild=codebuild_stub.client,
        github=github,
        clock=fixed_clock(),
    )
    event = sample("succeeded")
    codebuild_stub.will_return(batch_get_build(event))

    outcome = service.record(BuildStateChangeEvent.model_validate(event))

    assert outcome.recorded
    assert not outcome.status_posted
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=stack.table_name, Key={"pk": {"S": "BUILD#" + outcome.build_id}}
    )["Item"]
    assert item["status"] == {"S": "SUCCEEDED"}
    assert "reported_at" in item


@pytest.mark.usefixtures("fresh_recorder")
def test_handler_posts_pending_then_success_with_the_configured_token(
    stack: Any,
    function_env: Any,
    notifications: Any,
    github_token_secret: str,
    fake_github: FakeGitHub,
) -> None:
    function_env(
        RECORDER,
        GITHUB_TOKEN_SECRET_ARN=github_token_secret,
        GITHUB_API_URL=fake_github.url,
    )

    first = invoke_function(RECORDER, sample("in-progress"))
    second = invoke_function(RECORDER, sample("succeeded"))
    fake_github.answers = [(422, {})]  # a status GitHub refuses: logged, the record stays
    third = invoke_function(RECORDER, sample("failed"))

    assert [first["commit_status_posted"], second["commit_status_posted"]] == [True, True]
    assert third["recorded"]
    assert not third["commit_status_posted"]
    assert fake_github.statuses() == ["pending", "success", "failure"]
    assert fake_github.requests[0]["path"] == f"/repos/octo-org/service/statuses/{SHA}"


@pytest.mark.usefixtures("fresh_recorder")
def test_handler_posts_nothing_without_a_token(
    stack: Any, function_env: Any, notifications: Any, fake_github: FakeGitHub
) -> None:
    function_env(RECORDER, GITHUB_API_URL=fake_github.url)  # parameter default ""

    result = invoke_function(RECORDER, sample("succeeded"))

    assert result["recorded"]
    assert fake_github.requests == []
