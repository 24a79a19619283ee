"""ImagePrunerFunction end to end on moto, driven through the template's Handler string."""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from layercache.pruning.service import default_service
from layercache_dev.template import function_handler
from tests.conftest import emitted_metrics

from .conftest import REGION, EcrLike, Registry

FUNCTION = "ImagePrunerFunction"
EVENTS = Path(__file__).resolve().parents[3] / "events" / "image-pruner"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.fixture(autouse=True)
def _fresh_service() -> Iterator[None]:
    default_service.cache_clear()
    yield
    default_service.cache_clear()


@pytest.fixture
def handler() -> Handler:
    module_name, _, attribute = function_handler(FUNCTION).rpartition(".")
    found: Handler = getattr(importlib.import_module(module_name), attribute)
    return found


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


def emf_metrics(output: str) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for record in emitted_metrics(output):
        for definition in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = record[definition["Name"]]
            metrics[definition["Name"]] = sum(value) if isinstance(value, list) else value
    return metrics


def log_records(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    return [vars(r) for r in caplog.records if r.getMessage() == message]


def test_a_successful_build_prunes_the_repository(
    registry: Registry,
    ecr_like: EcrLike,
    function_env: Any,
    lambda_context: Any,
    handler: Handler,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = seed(registry)
    function_env(FUNCTION)

    result = handler(sample("build-succeeded.json"), lambda_context)

    assert registry.digests() == expected["kept"]
    (summary,) = result["repositories"]
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
    ecr_like: EcrLike,
    function_env: Any,
    lambda_context: Any,
    handler: Handler,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    expected = seed(registry)
    before = registry.digests()
    function_env(FUNCTION, PRUNE_DRY_RUN="true")

    result = handler(sample("daily-schedule.json"), lambda_context)

    assert registry.digests() == before
    (summary,) = result["repositories"]
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
    ecr_like: EcrLike,
    function_env: Any,
    lambda_context: Any,
    handler: Handler,
) -> None:
    expected = seed(registry)
    other = Registry("team/worker")
    arn = boto3.client("ecr", region_name=REGION).create_repository(
        repositoryName=other.repository
    )["repository"]["repositoryArn"]
    stale = other.push_untagged("stale-cache", days_ago=40, cache=True)
    current = other.push_cache("main", "current", days_ago=40)
    own_arn = arn.replace("team/worker", registry.repository)
    function_env(FUNCTION, PRUNE_REPOSITORIES=f"{own_arn},{arn}")

    result = handler(sample("daily-schedule.json"), lambda_context)

    assert [r["repository"] for r in result["repositories"]] == ["team/service", "team/worker"]
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
    handler: Handler,
    event: dict[str, Any],
    reason: str,
) -> None:
    seed(registry)
    before = registry.digests()
    function_env(FUNCTION)
    assert handler(event, lambda_context) == {"status": "ignored", "reason": reason}
    assert registry.digests() == before
