"""BuildStarter's exactly-once and supersede rules: BuildsTable on moto, CodeBuild stubbed
(moto reports every build SUCCEEDED, so running and failed builds need the Stubber)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.stub import ANY, Stubber

from layercache.build_records import BuildMode, Trigger
from layercache.triggers.builds import BuildRequest, BuildStarter
from layercache.triggers.store import BuildsStore
from layercache_dev.embedded_aws import Stack

from .conftest import table_items

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codebuild() -> Iterator[Stubber]:
    client: CodeBuildClient = boto3.client("codebuild", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def make_starter(
    stack: Stack, codebuild: Stubber, clock: Clock, supersede: bool = True
) -> BuildStarter:
    store = BuildsStore(stack.table_name, boto3.client("dynamodb", region_name="us-east-1"))
    client = cast("CodeBuildClient", codebuild.client)
    return BuildStarter(stack.project_name, store, client, supersede=supersede, clock=clock)


def push(commit: str, clock: Clock, branch: str = "main") -> BuildRequest:
    return BuildRequest(
        image="team/service",
        branch=branch,
        commit=commit,
        trigger=Trigger.GITHUB,
        mode=BuildMode.NORMAL,
        requested_at=clock(),
        occasion=commit,
    )


def expect_start(stubber: Stubber, build_id: str, source_version: str) -> None:
    stubber.add_response(
        "start_build",
        {
            "build": {
                "id": build_id,
                "arn": f"arn:aws:codebuild:us-east-1:123456789012:build/{build_id}",
                "buildNumber": 7,
                "buildStatus": "IN_PROGRESS",
            }
        },
        {
            "projectName": "layercache-image-build",
            "sourceVersion": source_version,
            "environmentVariablesOverride": ANY,
            "idempotencyToken": ANY,
        },
    )


def record_tokens(stubber: Stubber) -> list[str]:
    """The idempotency tokens of the StartBuild calls the stubbed client receives."""
    tokens: list[str] = []

    def keep_token(params: dict[str, Any], **_: Any) -> None:
        tokens.append(params["idempotencyToken"])

    stubber.client.meta.events.register("provide-client-params.codebuild.StartBuild", keep_token)
    return tokens


def expect_statuses(stubber: Stubber, **statuses: str) -> None:
    ids = [build_id.replace("_", ":") for build_id in statuses]
    stubber.add_response(
        "batch_get_builds",
        {
            "builds": [
                {"id": i, "buildStatus": s} for i, s in zip(ids, statuses.values(), strict=True)
            ]
        },
        {"ids": ids},
    )


def test_a_newer_commit_stops_the_branchs_running_build(
    stack: Stack, codebuild: Stubber, clock: Clock
) -> None:
    starter = make_starter(stack, codebuild, clock)
    expect_start(codebuild, "p:old", "a" * 40)
    starter.start(push("a" * 40, clock))
    clock.now += timedelta(seconds=30)
    expect_start(codebuild, "p:new", "b" * 40)
    expect_statuses(codebuild, p_old="IN_PROGRESS")
    codebuild.add_response("stop_build", {"build": {"id": "p:old"}}, {"id": "p:old"})

    outcome = starter.start(push("b" * 40, clock))

    assert outcome.started
    assert outcome.superseded == ["p:old"]


def test_a_finished_older_build_is_left_alone(
    stack: Stack, codebuild: Stubber, clock: Clock
) -> None:
    starter = make_starter(stack, codebuild, clock)
    expect_start(codebuild, "p:old", "a" * 40)
    starter.start(push("a" * 40, clock))
    clock.now += timedelta(seconds=30)
    expect_start(codebuild, "p:new", "b" * 40)
    expect_statuses(codebuild, p_old="SUCCEEDED")

    assert starter.start(push("b" * 40, clock)).superseded == []


def test_supersede_off_stops_nothing(stack: Stack, codebuild: Stubber, clock: Clock) -> None:
    starter = make_starter(stack, codebuild, clock, supersede=False)
    expect_start(codebuild, "p:old", "a" * 40)
    starter.start(push("a" * 40, clock))
    expect_start(codebuild, "p:new", "b" * 40)

    assert starter.start(push("b" * 40, clock)).superseded == []


def test_other_branches_are_not_superseded(stack: Stack, codebuild: Stubber, clock: Clock) -> None:
    starter = make_starter(stack, codebuild, clock)
    expect_start(codebuild, "p:feature", "a" * 40)
    starter.start(push("a" * 40, clock, branch="feature"))
    clock.now += timedelta(seconds=30)
    expect_start(codebuild, "p:main", "b" * 40)

    assert starter.start(push("b" * 40, clock)).superseded == []


def test_a_running_build_of_the_commit_blocks_a_second(
    stack: Stack, codebuild: Stubber, clock: Clock
) -> None:
    starter = make_starter(stack, codebuild, clock)
    expect_start(codebuild, "p:1", "a" * 40)
    starter.start(push("a" * 40, clock))
    expect_statuses(codebuild, p_1="IN_PROGRESS")

    outcome = starter.start(push("a" * 40, clock))

    assert not outcome.started
    assert outcome.reason == "build p:1 is IN_PROGRESS"


@pytest.mark.parametrize("status", ["FAILED", "FAULT", "STOPPED", "TIMED_OUT"])
def test_a_commit_whose_build_did_not_succeed_builds_again(
    stack: Stack, codebuild: Stubber, clock: Clock, status: str
) -> None:
    starter = make_starter(stack, codebuild, clock)
    tokens = record_tokens(codebuild)
    expect_start(codebuild, "p:1", "a" * 40)
    starter.start(push("a" * 40, clock))
    clock.now += timedelta(minutes=5)
    expect_statuses(codebuild, p_1=status)
    expect_start(codebuild, "p:2", "a" * 40)

    outcome = starter.start(push("a" * 40, clock))

    assert (outcome.started, outcome.build_id) == (True, "p:2")
    assert len(set(tokens)) == 2, "the rebuild is a new StartBuild, not the failed one"
    (claim,) = table_items(stack.table_name, "CLAIM#")
    assert claim["build_id"]["S"] == "p:2"


def test_a_claim_left_by_a_crashed_invocation_is_taken_over_when_stale(
    stack: Stack, codebuild: Stubber, clock: Clock
) -> None:
    starter = make_starter(stack, codebuild, clock)
    request = push("a" * 40, clock)
    assert starter.store.try_claim(request.claim_pk, clock()) is not None  # then it died

    clock.now += timedelta(minutes=1)
    early = starter.start(push("a" * 40, clock))
    assert (early.started, early.reason) == (False, "another delivery is starting this build")

    clock.now += timedelta(minutes=20)
    expect_start(codebuild, "p:1", "a" * 40)
    assert starter.start(push("a" * 40, clock)).started


def test_a_failed_start_surfaces_frees_its_claim_and_the_retry_starts(
    stack: Stack, codebuild: Stubber, clock: Clock
) -> None:
    starter = make_starter(stack, codebuild, clock)
    tokens = record_tokens(codebuild)
    codebuild.add_client_error("start_build", "ServiceUnavailable", http_status_code=503)
    with pytest.raises(codebuild.client.exceptions.ClientError):
        starter.start(push("a" * 40, clock))
    assert table_items(stack.table_name, "CLAIM#") == [], "a failed start frees its claim"
    expect_start(codebuild, "p:1", "a" * 40)
    starter.start(push("a" * 40, clock))

    # Had the first StartBuild started a build and only its response been lost, the same
    # token makes CodeBuild return that build instead of starting a second one.
    assert len(tokens) == 2
    assert tokens[0] == tokens[1]
    assert all(len(token) <= 64 for token in tokens)


def test_the_commit_codebuild_resolved_is_not_replaced_by_a_branch_name(
    stack: Stack, codebuild: Stubber, clock: Clock
) -> None:
    resolved = "c" * 40
    table = boto3.client("dynamodb", region_name="us-east-1")
    # The recorder saw the build first and stored the commit CodeBuild resolved.
    table.put_item(
        TableName=stack.table_name,
        Item={"pk": {"S": "BUILD#p:nightly"}, "source_version": {"S": resolved}},
    )
    starter = make_starter(stack, codebuild, clock)
    expect_start(codebuild, "p:nightly", "main")
    nightly = BuildRequest(
        image="team/service",
        branch="main",
        commit=None,
        trigger=Trigger.NIGHTLY,
        mode=BuildMode.REFRESH,
        requested_at=clock(),
        occasion="nightly@2026-11-28T03:00:00.000Z",
    )

    starter.start(nightly)

    (item,) = table_items(stack.table_name, "BUILD#")
    assert item["source_version"]["S"] == resolved
    assert item["trigger"]["S"] == "nightly"
