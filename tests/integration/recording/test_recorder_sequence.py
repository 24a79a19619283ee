"""Every build leaves exactly one correct record, whatever order its events come in."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import boto3
import pytest

from layercache.build_records import INDEX_BY_BRANCH, INDEX_BY_COMMIT, INDEX_BY_DAY, BuildsTable
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.github import GitHubStatusClient
from layercache.recording.service import BuildRecorder, Outcome
from layercache.recording.store import BuildRecordStore
from layercache_dev.kit.functions import invoke_function
from tests.conftest import emitted_metrics

from .conftest import (
    EXPORTED,
    IMAGE,
    RECORDER,
    REGION,
    FakeGitHub,
    StubbedCodeBuild,
    batch_get_build,
    fixed_clock,
    sample,
    trigger_write,
)

BUILD_PK = "BUILD#layercache-image-build:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d"
COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def items(table_name: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb", region_name=REGION).Table(table_name)
    found: list[dict[str, Any]] = table.scan()["Items"]
    return found


def recorder(
    stack: Any, codebuild: StubbedCodeBuild, github: GitHubStatusClient | None = None
) -> BuildRecorder:
    return BuildRecorder(
        image=IMAGE,
        store=BuildRecordStore(
            BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))
        ),
        codebuild=codebuild.client,
        github=github,
        clock=fixed_clock(),
    )


def run_steps(
    steps: list[str], stack: Any, codebuild: StubbedCodeBuild, fake: FakeGitHub
) -> list[Outcome]:
    github = GitHubStatusClient("octo-org/service", lambda: "t0ken", fake.url, sleep=lambda _: None)
    service = recorder(stack, codebuild, github)
    outcomes = []
    for step in steps:
        if step == "trigger":
            trigger_write(stack.table_name, sample("in-progress"))
            continue
        event = sample(step)
        if step == "succeeded":
            codebuild.will_return(batch_get_build(event, EXPORTED))
        outcomes.append(service.record(BuildStateChangeEvent.model_validate(event)))
    return outcomes


EXPECTED = {
    "pk": BUILD_PK,
    "build_id": "layercache-image-build:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d",
    "build_number": Decimal(42),
    "image": IMAGE,
    "branch": "main",
    "branch_key": "team/service#main",
    "commit": COMMIT,
    "trigger": "github",
    "mode": "normal",
    "requested_at": "2024-05-14T09:30:01.412Z",
    "day": "2024-05-14",
    "status": "SUCCEEDED",
    "recorded_status": "SUCCEEDED",
    "started_at": "2024-05-14T09:30:02.000Z",
    "ended_at": "2024-05-14T09:32:13.000Z",
    "duration_seconds": Decimal(131),
    "queued_seconds": Decimal(1),
    "image_digest": "sha256:" + "5e" * 32,
    "image_tags": ["main", "9fceb02d0ae5", "latest"],
    "cache_hit_ratio": Decimal("0.9"),
    "cache_ref_hit": "cache-main",
    "build_seconds": Decimal("88.5"),
    "push_seconds": Decimal("4.2"),
    "source_version": COMMIT,
}


def test_start_in_progress_succeeded_makes_one_complete_record(
    stack: Any, codebuild_stub: StubbedCodeBuild, fake_github: FakeGitHub
) -> None:
    outcomes = run_steps(
        ["trigger", "in-progress", "succeeded"], stack, codebuild_stub, fake_github
    )

    [item] = items(stack.table_name)
    assert {name: item[name] for name in EXPECTED} == EXPECTED
    assert item["phases"]["BUILD"] == {"status": "SUCCEEDED", "seconds": Decimal(107)}
    assert item["claim_pk"].startswith("CLAIM#team/service#main#")  # the trigger's own field
    assert "reported_at" in item
    assert "failed_phase" not in item
    assert [outcome.recorded for outcome in outcomes] == [True, True]
    assert fake_github.statuses() == ["pending", "success"]
    assert outcomes[1].metrics  # metrics of the finished build
    assert outcomes[1].dimensions == {"trigger": "github", "mode": "normal"}


ORDERS = list(itertools.permutations(["trigger", "in-progress", "succeeded"]))


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(order) for order in ORDERS])
def test_any_order_with_duplicates_ends_in_the_same_record(
    order: tuple[str, ...],
    stack: Any,
    codebuild_stub: StubbedCodeBuild,
    fake_github: FakeGitHub,
) -> None:
    # Every event delivered twice, the duplicates after all originals (at least once).
    steps = [*order, *order]

    outcomes = run_steps(steps, stack, codebuild_stub, fake_github)

    [item] = items(stack.table_name)
    assert {name: item.get(name) for name in EXPECTED} == EXPECTED
    # Each event changed the record at most once; the late IN_PROGRESS changed nothing.
    recorded = [outcome.status.value for outcome in outcomes if outcome.recorded]
    in_progress_first = order.index("in-progress") < order.index("succeeded")
    assert recorded == (["IN_PROGRESS", "SUCCEEDED"] if in_progress_first else ["SUCCEEDED"])
    assert fake_github.statuses() == (["pending", "success"] if in_progress_first else ["success"])
    assert sum(1 for outcome in outcomes if outcome.metrics) == 1


def test_duplicate_interleaved_with_the_start(
    stack: Any, codebuild_stub: StubbedCodeBuild, fake_github: FakeGitHub
) -> None:
    steps = ["in-progress", "in-progress", "succeeded", "trigger", "in-progress", "succeeded"]

    run_steps(steps, stack, codebuild_stub, fake_github)

    [item] = items(stack.table_name)
    assert {name: item.get(name) for name in EXPECTED} == EXPECTED
    assert fake_github.statuses() == ["pending", "success"]


def test_record_is_found_by_every_index(
    stack: Any, codebuild_stub: StubbedCodeBuild, fake_github: FakeGitHub
) -> None:
    # The recorder alone (no trigger write) still makes the item queryable.
    run_steps(["succeeded"], stack, codebuild_stub, fake_github)
    client = boto3.client("dynamodb", region_name=REGION)

    def query(index: str, key: str, value: str) -> list[str]:
        response = client.query(
            TableName=stack.table_name,
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": key},
            ExpressionAttributeValues={":v": {"S": value}},
            ScanIndexForward=False,
        )
        return [item["pk"]["S"] for item in response["Items"]]

    assert query(INDEX_BY_BRANCH, "branch_key", "team/service#main") == [BUILD_PK]
    assert query(INDEX_BY_COMMIT, "commit", COMMIT) == [BUILD_PK]
    assert query(INDEX_BY_DAY, "day", "2024-05-14") == [BUILD_PK]


def test_without_exported_variables_the_record_is_still_complete(
    stack: Any, codebuild_stub: StubbedCodeBuild, fake_github: FakeGitHub
) -> None:
    service = recorder(stack, codebuild_stub)
    event = sample("succeeded")
    codebuild_stub.will_return(batch_get_build(event, exported=None))

    outcome = service.record(BuildStateChangeEvent.model_validate(event))

    [item] = items(stack.table_name)
    assert outcome.recorded
    assert item["status"] == "SUCCEEDED"
    assert item["duration_seconds"] == Decimal(131)
    for absent in ("cache_hit_ratio", "image_digest", "image_tags", "build_seconds"):
        assert absent not in item
    assert [point.name for point in outcome.metrics] == [
        "BuildDuration",
        "QueueTime",
        "BuildSucceeded",
    ]


@pytest.mark.usefixtures("fresh_recorder")
def test_handler_as_the_template_wires_it(
    stack: Any,
    function_env: Any,
    notifications: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    function_env(RECORDER)
    trigger_write(stack.table_name, sample("in-progress"))

    results = [
        invoke_function(RECORDER, sample(name))
        for name in ("in-progress", "succeeded", "succeeded")
    ]

    # moto's CodeBuild doesn't know the sample's build: the event's own data is recorded.
    assert [result["recorded"] for result in results] == [True, True, False]
    [item] = items(stack.table_name)
    assert (item["status"], item["duration_seconds"], item["branch"]) == (
        "SUCCEEDED",
        Decimal(131),
        "main",
    )
    metrics = [
        record for record in emitted_metrics(capsys.readouterr().out) if "BuildDuration" in record
    ]
    assert len(metrics) == 1
    [directive] = metrics[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "layercache"
    # One dimension set for totals (service), one by trigger and mode.
    assert sorted(map(sorted, directive["Dimensions"])) == [["mode", "trigger"], ["service"]]
    assert (metrics[0]["trigger"], metrics[0]["mode"]) == ("github", "normal")
    assert metrics[0]["BuildDuration"] in (131.0, [131.0])
    assert metrics[0]["BuildSucceeded"] in (1.0, [1.0])
    assert notifications.received() == []  # success: no notification


@pytest.mark.parametrize(
    "event",
    [
        {"hello": "world"},
        {**sample("succeeded"), "source": "aws.codecommit"},
        {**sample("succeeded"), "detail": {"build-status": "SUCCEEDED"}},
    ],
    ids=["garbage", "foreign-source", "no-build-id"],
)
@pytest.mark.usefixtures("fresh_recorder")
def test_handler_rejects_malformed_events_without_raising(
    event: dict[str, Any], stack: Any, function_env: Any, notifications: Any
) -> None:
    function_env(RECORDER)

    result = invoke_function(RECORDER, event)

    assert result == {"recorded": False, "reason": "malformed event"}
    assert items(stack.table_name) == []


@pytest.mark.usefixtures("fresh_recorder")
def test_handler_ignores_other_projects(stack: Any, function_env: Any, notifications: Any) -> None:
    function_env(RECORDER)
    event = sample("failed")
    event["detail"]["project-name"] = "someone-elses-project"

    assert invoke_function(RECORDER, event) == {"recorded": False, "reason": "foreign project"}
    assert items(stack.table_name) == []
    assert notifications.received() == []
