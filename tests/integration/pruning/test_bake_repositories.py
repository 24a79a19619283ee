"""A Bake file's image repositories (issue 14): each `<image>/<target>` repository the builds
table remembers is pruned as a unit of its own, beside the stack's own repository.

And what can go wrong on the way: a throttled GetItem, a repository deleted by hand, an
item that names a repository outside the stack's prefix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders

from layercache import aws
from layercache.build_records import BuildsTable
from layercache.handlers.image_pruner import PruningIncomplete
from layercache.pruning.ecr import EcrRegistry
from layercache.pruning.repositories import ImageRepositories
from layercache.pruning.service import Pruner
from layercache.pruning.settings import PrunerSettings
from layercache_dev.kit.moto_ecr import EcrCalls

from .conftest import (
    PRUNER_FUNCTION,
    REGION,
    PrunerHandler,
    Pushed,
    Registry,
    sample,
)

BAKE = {"BAKE_FILE": "docker-bake.hcl"}


def create(name: str) -> Registry:
    boto3.client("ecr", region_name=REGION).create_repository(repositoryName=name)
    return Registry(name)


def remember(stack: Any, *names: str) -> None:
    """What the build recorder writes after a Bake build published to `names`."""
    table = BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))
    table.add_image_repositories(stack.repository_name, list(names))


def builds(registry: Registry, branch: str, names: list[str], first_day: float) -> list[Pushed]:
    """One build per name, a day apart, the newest last (it takes the moving tag)."""
    return [
        registry.push_build(branch, name, days_ago=first_day - n) for n, name in enumerate(names)
    ]


def digests(pushed: list[Pushed]) -> set[str]:
    return {digest for build in pushed for digest in build.digests}


def messages(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    return [vars(r) for r in caplog.records if r.getMessage() == message]


def image_repositories(result: dict[str, Any]) -> list[str]:
    """The image repositories a run pruned, in order; the caches' are left out (each
    image's cache repository `team/service-cache/<target>` follows them, see the first
    test)."""
    return [
        r["repository"]
        for r in result["repositories"]
        if "team/service-cache" not in r["repository"]
    ]


# ---------------------------------------------------------------- through the handler


def test_each_bake_target_repository_is_pruned_beside_the_stack_repository(
    stack: Any,
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
) -> None:
    api, worker = create("team/service/api"), create("team/service/worker")
    own_old = builds(registry, "main", [f"own-{n}" for n in range(6)], first_day=60)
    api_old = builds(api, "main", [f"api-{n}" for n in range(6)], first_day=60)
    worker_stale = worker.push_untagged("stale-cache", days_ago=40, cache=True)
    worker_cache = worker.push_cache("main", "current", days_ago=40)
    remember(stack, "team/service/worker", "team/service/api")
    function_env(PRUNER_FUNCTION, **BAKE)

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    assert [r["repository"] for r in result["repositories"]] == [
        "team/service",
        "team/service-cache",
        "team/service/api",
        "team/service/worker",
        "team/service-cache/api",
        "team/service-cache/worker",
    ]
    # Not pushed to in this test: the targets' cache repositories are skipped as missing.
    assert [r.get("missing") for r in result["repositories"][-2:]] == [True, True]
    # Each keeps its newest 5 builds of main and its own cache ref; the oldest build goes.
    assert registry.digests() == digests(own_old[1:])
    assert api.digests() == digests(api_old[1:])
    assert worker.digests() == {worker_cache}
    assert worker_stale not in worker.digests()
    assert ecr_like.refused == []


def test_each_targets_cache_repository_loses_its_superseded_caches(
    stack: Any,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
) -> None:
    """The cache refs live apart from the images (`<image>-cache/<target>`): every build
    leaves the previous cache manifest untagged there, and the pruner clears them while
    keeping each branch's current ref."""
    create("team/service/api")
    cache = create("team/service-cache/api")
    stale = [cache.push_untagged(f"stale-{n}", days_ago=40 - n, cache=True) for n in range(3)]
    current = cache.push_cache("main", "current", days_ago=1)
    remember(stack, "team/service/api")
    function_env(PRUNER_FUNCTION, **BAKE)

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    reports = {r["repository"]: r for r in result["repositories"]}
    assert "team/service-cache/api" in reports
    assert not reports["team/service-cache/api"].get("missing")
    assert cache.digests() == {current}
    assert not set(stale) & cache.digests()
    assert ecr_like.refused == []


def test_overlapping_branches_are_pruned_per_repository(
    stack: Any,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
) -> None:
    """Both repositories build `main` and `feature/x`, some of their builds even with the
    same manifests (so the same digests): keep-per-branch counts each repository's own
    builds, and deleting a digest in one never touches the other."""
    api, worker = create("team/service/api"), create("team/service/worker")
    shared = [f"build-{n}" for n in range(7)]
    api_main = builds(api, "main", shared, first_day=60)
    worker_main = builds(worker, "main", shared[:3], first_day=60)
    api_feature = builds(api, "feature/x", ["f-0", "f-1"], first_day=50)
    worker_feature = builds(worker, "feature/x", [f"wf-{n}" for n in range(6)], first_day=50)
    api_caches = [api.push_cache("main", f"api-{n}", days_ago=40 - n) for n in range(3)]
    worker_caches = [worker.push_cache("main", f"worker-{n}", days_ago=40 - n) for n in range(2)]
    assert digests(api_main[:3]) == digests(worker_main)  # the same images in both
    remember(stack, "team/service/api", "team/service/worker")
    function_env(PRUNER_FUNCTION, PRUNE_KEEP_PER_BRANCH="5", **BAKE)

    pruner_handler(sample("daily-schedule.json"), lambda_context)

    # api: 7 builds of main, the oldest 2 go; 2 of feature/x, both stay.
    assert api.digests() == digests(api_main[2:]) | digests(api_feature) | {api_caches[-1]}
    # worker: its 3 builds of main stay, though api deleted the same digests; 6 of
    # feature/x, the oldest goes.
    assert worker.digests() == (
        digests(worker_main) | digests(worker_feature[1:]) | {worker_caches[-1]}
    )


def test_without_a_bake_file_the_table_is_not_read(
    stack: Any,
    registry: Registry,
    aws_calls: Any,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
) -> None:
    """The template grants GetItem and the prefix's ECR rights only with a Bake file."""
    api = create("team/service/api")
    api_old = builds(api, "main", [f"api-{n}" for n in range(6)], first_day=60)
    remember(stack, "team/service/api")
    function_env(PRUNER_FUNCTION)

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    assert image_repositories(result) == ["team/service"]
    assert "dynamodb:GetItem" not in {call.operation for call in aws_calls}
    assert api.digests() == digests(api_old)


def test_a_repository_also_listed_in_prune_repositories_is_pruned_once(
    stack: Any,
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
) -> None:
    api = create("team/service/api")
    api_old = builds(api, "main", [f"api-{n}" for n in range(6)], first_day=60)
    remember(stack, "team/service/api")
    function_env(PRUNER_FUNCTION, PRUNE_REPOSITORIES="team/service,team/service/api", **BAKE)

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    assert image_repositories(result) == ["team/service", "team/service/api"]
    assert api.digests() == digests(api_old[1:])


# ---------------------------------------------------------------- failure


def test_a_repository_deleted_by_hand_is_skipped_and_not_an_error(
    stack: Any,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    api, gone = create("team/service/api"), create("team/service/gone")
    api_old = builds(api, "main", [f"api-{n}" for n in range(6)], first_day=60)
    remember(stack, "team/service/api", "team/service/gone")
    boto3.client("ecr", region_name=REGION).delete_repository(
        repositoryName=gone.repository, force=True
    )
    function_env(PRUNER_FUNCTION, **BAKE)

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    assert result["status"] == "pruned"
    summaries = {r["repository"]: r for r in result["repositories"]}
    assert summaries["team/service/gone"]["missing"] is True
    assert "error" not in summaries["team/service/gone"]
    assert "missing" not in summaries["team/service/api"]
    assert api.digests() == digests(api_old[1:])
    skipped = messages(caplog, "Skipped an image repository that no longer exists")
    assert [r["repository"] for r in skipped if "-cache" not in r["repository"]] == [
        "team/service/gone"
    ]
    # The name stays in the item: a later push recreates the repository.
    table = BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))
    assert "team/service/gone" in table.image_repositories(stack.repository_name)


def test_a_missing_configured_repository_is_still_an_error(
    stack: Any,
    registry: Registry,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
) -> None:
    """Only a Bake target's repository may be gone; a listed one is a configuration error."""
    function_env(PRUNER_FUNCTION, PRUNE_REPOSITORIES="team/service,team/service/typo", **BAKE)

    with pytest.raises(PruningIncomplete, match=r"team/service/typo.*RepositoryNotFound"):
        pruner_handler(sample("daily-schedule.json"), lambda_context)


@pytest.mark.parametrize(
    ("outside", "exists"),
    [
        ("team/other", True),  # another repository of the account
        ("team/service", True),  # the stack's own: pruned as configured, never twice
        ("team/service-x/api", True),  # shares the prefix's characters, not its path
        ("other/team/service/api", True),  # the prefix, further down
        ("team/service/../other", False),  # not an ECR name
        ("team/service/", False),  # the prefix alone
    ],
)
def test_a_repository_outside_the_prefix_is_never_pruned(
    stack: Any,
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
    caplog: pytest.LogCaptureFixture,
    outside: str,
    exists: bool,
) -> None:
    """The table is writable by other functions: whatever the item says, the pruner
    stays within `<ImageRepositoryName>/`."""
    own_old = builds(registry, "main", [f"own-{n}" for n in range(6)], first_day=60)
    foreign = Registry(outside) if outside == stack.repository_name else None
    if exists and foreign is None:
        foreign = create(outside)
        builds(foreign, "main", [f"x-{n}" for n in range(6)], first_day=60)
        foreign.push_untagged("stale", days_ago=40, cache=True)
    api = create("team/service/api")
    api_old = builds(api, "main", [f"api-{n}" for n in range(6)], first_day=60)
    remember(stack, outside, "team/service/api")
    function_env(PRUNER_FUNCTION, **BAKE)

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    assert image_repositories(result) == ["team/service", "team/service/api"]
    if outside == stack.repository_name:
        assert registry.digests() == digests(own_old[1:])  # pruned once, as configured
    elif foreign is not None:
        assert len(foreign.digests()) == 6 * 3 + 1  # an old build and a stale cache stay
    assert api.digests() == digests(api_old[1:])
    (refused,) = messages(caplog, "Not pruning a repository outside the stack's prefix")
    assert refused["repository"] == outside


class ThrottledDynamoDb:
    """DynamoDB at the HTTP layer under the SDK's retries: the first `throttled` GetItem
    requests are refused with ProvisionedThroughputExceededException, the rest go on to
    moto. `requests` counts the GetItem requests sent."""

    def __init__(self, events: Any, throttled: int) -> None:
        self.throttled = throttled
        self.requests = 0
        events.register_first("before-send.dynamodb.GetItem", self.answer)

    def answer(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        self.requests += 1
        if self.requests > self.throttled:
            return None
        body = {
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was exceeded.",
        }
        return AWSResponse("https://dynamodb", 400, HTTPHeaders(), _Raw(json.dumps(body).encode()))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The SDK's backoff, recorded instead of waited for."""
    waited: list[float] = []
    monkeypatch.setattr("botocore.endpoint.time.sleep", waited.append)
    return waited


def bake_pruner(stack: Any, dynamodb: Any) -> Pruner:
    """The pruner as `default_service` makes it, on the deployed function's clients."""
    settings = PrunerSettings.from_env(
        {
            "IMAGE_REPOSITORY_NAME": stack.repository_name,
            "BUILDS_TABLE_NAME": stack.table_name,
            **BAKE,
        }
    )
    table = BuildsTable(settings.builds_table_name, dynamodb)
    return Pruner(
        settings,
        EcrRegistry(boto3.client("ecr", region_name=REGION), sleep=lambda _: None),
        image_repositories=ImageRepositories(table, settings.image_repository_name),
    )


def test_a_throttled_get_item_is_retried_by_the_client_then_read(
    stack: Any, registry: Registry, ecr_like: EcrCalls, sleeps: list[float]
) -> None:
    api = create("team/service/api")
    api_old = builds(api, "main", [f"api-{n}" for n in range(6)], first_day=60)
    remember(stack, "team/service/api")
    dynamodb = aws.client("dynamodb")  # the deployed function's client and budget
    throttle = ThrottledDynamoDb(dynamodb.meta.events, throttled=aws.STANDARD.attempts - 1)

    reports = bake_pruner(stack, dynamodb).run()

    assert [(r.repository, r.error) for r in reports] == [
        ("team/service", None),
        ("team/service/api", None),
    ]
    assert throttle.requests == aws.STANDARD.attempts  # one layer of retries
    assert len(sleeps) == aws.STANDARD.attempts - 1
    assert api.digests() == digests(api_old[1:])


def test_a_get_item_throttled_beyond_the_budget_is_reported_like_a_repository_error(
    stack: Any, registry: Registry, ecr_like: EcrCalls, sleeps: list[float]
) -> None:
    own_old = builds(registry, "main", [f"own-{n}" for n in range(6)], first_day=60)
    api = create("team/service/api")
    api_old = builds(api, "main", [f"api-{n}" for n in range(6)], first_day=60)
    remember(stack, "team/service/api")
    dynamodb = aws.client("dynamodb")
    throttle = ThrottledDynamoDb(dynamodb.meta.events, throttled=100)

    reports = bake_pruner(stack, dynamodb).run()

    assert [(r.repository, r.error is not None) for r in reports] == [
        ("team/service", False),
        ("team/service/*", True),
    ]
    assert "ProvisionedThroughputExceededException" in (reports[1].error or "")
    assert throttle.requests == aws.STANDARD.attempts
    assert registry.digests() == digests(own_old[1:])  # the stack's own is still pruned
    assert api.digests() == digests(api_old)  # nothing read, nothing deleted


def test_through_the_handler_a_failed_table_read_fails_the_invocation(
    stack: Any,
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
    sleeps: list[float],
) -> None:
    """So Lambda retries it and, after its retries, it lands in the failure destination."""
    remember(stack, "team/service/api")
    function_env(PRUNER_FUNCTION, **BAKE)
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    try:
        ThrottledDynamoDb(boto3.DEFAULT_SESSION.events, throttled=100)
        with pytest.raises(PruningIncomplete, match=r"team/service/\*.*ProvisionedThroughput"):
            pruner_handler(sample("daily-schedule.json"), lambda_context)
    finally:
        boto3.DEFAULT_SESSION = None
