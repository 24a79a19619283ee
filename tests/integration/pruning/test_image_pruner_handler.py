"""ImagePrunerFunction end to end on moto, driven through the template's Handler string."""

from __future__ import annotations

import logging
from typing import Any

import boto3
import pytest

from layercache_dev.kit.moto_ecr import EcrCalls

from .conftest import (
    PRUNER_FUNCTION,
    REGION,
    PrunerHandler,
    Registry,
    emf_metrics,
    sample,
)


def seed(registry: Registry) -> dict[str, set[str]]:
    old = [registry.push_build("main", f"old-{n}", days_ago=60 - n) for n in range(6)]
    new = [
        registry.push_build("main", f"new-{n}", days_ago=20 - n, latest=n == 4) for n in range(5)
    ]
    caches = [registry.push_cache("main", f"c-{n}", days_ago=60 - n) for n in range(4)]
    return {
        "deleted": {d for b in old for d in b.digests} | set(caches[:-1]),
        # Template defaults: the newest 5 of the branch, latest, the current cache ref.
        "kept": {d for b in new for d in b.digests} | {caches[-1]},
    }


def log_records(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    return [vars(r) for r in caplog.records if r.getMessage() == message]


def test_a_successful_build_prunes_the_repository(
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = seed(registry)
    function_env(PRUNER_FUNCTION)

    result = pruner_handler(sample("build-succeeded.json"), lambda_context)

    assert registry.digests() == expected["kept"]
    # The images, then the stack's cache repository (empty here).
    assert [r["repository"] for r in result["repositories"]] == [
        "team/service",
        "team/service-cache",
    ]
    summary = result["repositories"][0]
    assert result["status"] == "pruned"
    assert result["trigger"].startswith("build arn:aws:codebuild:")
    assert summary["deleted"] == len(expected["deleted"]) == 6 * 3 + 3
    assert summary["kept"] == len(expected["kept"])
    assert summary["failed"] == summary["skipped"] == []
    assert ecr_like.refused == []
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["ImagesDeleted"] == 21
    assert metrics["ImagesKept"] == len(expected["kept"])
    assert metrics["BytesFreed"] == summary["bytes_freed"] > 0
    assert metrics["DeleteFailures"] == 0


def test_the_daily_schedule_in_dry_run_logs_the_plan_and_deletes_nothing(
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    expected = seed(registry)
    before = registry.digests()
    function_env(PRUNER_FUNCTION, PRUNE_DRY_RUN="true")

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    assert registry.digests() == before
    summary = result["repositories"][0]
    assert result["trigger"] == "schedule"
    assert summary["dry_run"] is True
    assert summary["planned_deletions"] == len(expected["deleted"])
    assert "deleted" not in summary
    planned = log_records(caplog, "Plan: delete")
    assert {r["digest"] for r in planned} == expected["deleted"]
    assert all(r["why"] and r["dry_run"] for r in planned)
    assert {r["digest"] for r in log_records(caplog, "Plan: keep")} == expected["kept"]
    assert emf_metrics(capsys.readouterr().out)["ImagesDeleted"] == 0


def test_a_list_of_repositories_is_pruned_repository_by_repository(
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
) -> None:
    expected = seed(registry)
    other = Registry("team/worker")
    arn = boto3.client("ecr", region_name=REGION).create_repository(
        repositoryName=other.repository
    )["repository"]["repositoryArn"]
    stale = other.push_untagged("stale-cache", days_ago=40, cache=True)
    current = other.push_cache("main", "current", days_ago=40)
    own_arn = arn.replace("team/worker", registry.repository)
    function_env(PRUNER_FUNCTION, PRUNE_REPOSITORIES=f"{own_arn},{arn}")

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    assert [r["repository"] for r in result["repositories"]] == [
        "team/service",
        "team/worker",
        "team/service-cache",  # the stack's cache is always its own
    ]
    assert registry.digests() == expected["kept"]
    assert other.digests() == {current}
    assert stale not in other.digests()


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (sample("build-other-project.json"), "not a successful build of this project"),
        ({**sample("build-succeeded.json"), "source": "aws.s3"}, "malformed event"),
        ({"hello": "world"}, "malformed event"),
    ],
)
def test_foreign_events_are_ignored_without_touching_the_repository(
    registry: Registry,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
    event: dict[str, Any],
    reason: str,
) -> None:
    seed(registry)
    before = registry.digests()
    function_env(PRUNER_FUNCTION)
    assert pruner_handler(event, lambda_context) == {"status": "ignored", "reason": reason}
    assert registry.digests() == before
