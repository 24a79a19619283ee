"""NightlyRebuildFunction on moto, driven through the template's Handler."""

from __future__ import annotations

from typing import Any

import pytest

from layercache_dev.embedded_aws import Stack
from layercache_dev.lambda_context import FakeLambdaContext
from tests.integration.conftest import RecordedCall

from .conftest import builds_started, sample, table_items, template_handler

FUNCTION = "NightlyRebuildFunction"


@pytest.fixture
def invoke(stack: Stack, function_env: Any, lambda_context: FakeLambdaContext) -> Any:
    function_env(FUNCTION, WATCHED_BRANCHES="main,release/2.x")
    handler = template_handler(FUNCTION)

    def call(event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = handler(event, lambda_context)
        return result

    return call


def overrides(calls: list[RecordedCall]) -> list[dict[str, str]]:
    return [
        {item["name"]: item["value"] for item in call.params["environmentVariablesOverride"]}
        | {"sourceVersion": call.params["sourceVersion"]}
        for call in calls
        if call.operation == "codebuild:StartBuild"
    ]


def test_schedule_starts_a_refresh_of_every_watched_branch(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    result = invoke(sample("nightly-rebuild", "schedule.json"))

    assert [build["branch"] for build in result["builds"]] == ["main", "release/2.x"]
    assert all(build["started"] for build in result["builds"])
    assert len(builds_started(stack.project_name)) == 2
    sent = sorted(overrides(aws_calls), key=lambda env: env["LAYERCACHE_BRANCH"])
    assert [env["sourceVersion"] for env in sent] == ["main", "release/2.x"]
    assert {env["LAYERCACHE_MODE"] for env in sent} == {"refresh"}
    assert {env["LAYERCACHE_TRIGGER"] for env in sent} == {"nightly"}
    assert {env["LAYERCACHE_COMMIT"] for env in sent} == {""}
    records = table_items(stack.table_name, "BUILD#")
    assert {item["mode"]["S"] for item in records} == {"refresh"}
    assert all("commit" not in item for item in records)


def test_a_retried_schedule_delivery_starts_nothing_twice(invoke: Any, stack: Stack) -> None:
    event = sample("nightly-rebuild", "schedule.json")
    invoke(event)

    result = invoke(event)

    assert not any(build["started"] for build in result["builds"])
    assert len(builds_started(stack.project_name)) == 2


def test_the_next_night_builds_again(invoke: Any, stack: Stack) -> None:
    invoke(sample("nightly-rebuild", "schedule.json"))
    invoke({"mode": "refresh", "scheduled_time": "2026-11-30T03:00:00Z"})
    assert len(builds_started(stack.project_name)) == 4


def test_manual_clean_rebuild_of_one_branch(
    invoke: Any, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    result = invoke(sample("nightly-rebuild", "manual-clean.json"))
    assert result["mode"] == "clean"
    assert [build["branch"] for build in result["builds"]] == ["main"]
    (env,) = overrides(aws_calls)
    assert env["LAYERCACHE_MODE"] == "clean"
    assert env["LAYERCACHE_TRIGGER"] == "manual"


def test_a_branch_that_is_not_watched_is_not_built(invoke: Any, stack: Stack) -> None:
    result = invoke({"mode": "refresh", "branches": ["main", "experiment"]})
    assert [build["branch"] for build in result["builds"]] == ["main"]
    assert len(builds_started(stack.project_name)) == 1


def test_malformed_request_is_rejected_without_retry(invoke: Any, stack: Stack) -> None:
    result = invoke({"mode": "yesterday"})
    assert result == {"builds": [], "reason": "malformed request"}
    assert builds_started(stack.project_name) == []
