"""A Bake file's build on moto: each image's moving tags in its own repository (issue 14).

One build publishes several images, each in `<image repository>/<target>`. The recorder
moves every image's moving tags with one conditional write on the branch head
(`published_images`) and then puts each manifest in its own repository, so the tags of
all repositories move together and only forward; it remembers the repositories first,
for the pruner. In the end: the record holds one result per image, the metrics one set
per image, and the commit status counts them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from layercache.build_records import ENV_SEQUENCE, BuildsTable, BuildStatus
from layercache.recording.build import BuildFacts
from layercache.recording.publish import TagPublisher
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.functions import function_module, invoke_function
from layercache_dev.kit.moto_atomic import atomic_backends
from tests.conftest import emitted_metrics

from .conftest import (
    IMAGE,
    RECORDER,
    REGION,
    FakeGitHub,
    StubbedCodeBuild,
    batch_get_build,
    sample,
    trigger_write,
)

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TARGETS = ("base", "api", "worker")
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def sha(label: str) -> str:
    return (label.encode().hex() * 40)[:40]


def repository(target: str) -> str:
    return f"{IMAGE}/{target}"


def push(target: str, commit: str, variant: str = "") -> str:
    """An image of `target` at `commit`, pushed as the build pushes it: under its
    write-once tag in the target's own repository. Its digest."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:"
                + hashlib.sha256(f"{target}@{commit}{variant}".encode()).hexdigest(),
                "size": 2,
            },
            "layers": [],
        }
    )
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    boto3.client("ecr", region_name=REGION).put_image(
        repositoryName=repository(target),
        imageManifest=manifest,
        imageManifestMediaType=MEDIA_TYPE,
        imageTag=commit + variant,
        imageDigest=digest,
    )
    return digest


def push_all(commit: str, variant: str = "") -> dict[str, str]:
    return {target: push(target, commit, variant) for target in TARGETS}


def tag_digest(repository_name: str, tag: str) -> str | None:
    ecr = boto3.client("ecr", region_name=REGION)
    images = ecr.batch_get_image(repositoryName=repository_name, imageIds=[{"imageTag": tag}])[
        "images"
    ]
    return images[0]["imageId"]["imageDigest"] if images else None


def moving_tags(tag: str = "main") -> dict[str, str | None]:
    """Where `tag` points in each image's repository."""
    return {target: tag_digest(repository(target), tag) for target in TARGETS}


def entry(target: str, digest: str, commit: str, **changes: Any) -> dict[str, Any]:
    """One image's result as the build driver exports it in LAYERCACHE_IMAGES."""
    result: dict[str, Any] = {
        "image": target,
        "repository": f"{REGISTRY}/{repository(target)}",
        "digest": digest,
        "tags": [commit, f"main-{commit[:7]}"],
        "moving_tags": ["main", "latest"],
        "built_on": [] if target == "base" else ["base"],
        "cache_hit_ratio": 1.0 if target == "base" else 0.5,
        "cached_steps": 2 if target == "base" else 1,
        "total_steps": 2,
        "cache_ref_hit": f"{REGISTRY}/{repository(target)}:cache-main",
        "build_seconds": 0.4,
        "push_seconds": 0.3,
        "cache_export_seconds": 0.1,
        "cache_status": "warm",
    }
    result.update(changes)
    return result


def exports(entries: list[dict[str, Any]], moving: str = "main,latest") -> dict[str, str]:
    return {
        "LAYERCACHE_IMAGE_DIGEST": "",
        "LAYERCACHE_IMAGE_TAGS": "",
        "LAYERCACHE_MOVING_TAGS": moving,
        "LAYERCACHE_CACHE_HIT_RATIO": "0.667",
        "LAYERCACHE_CACHE_REF_HIT": f"{REGISTRY}/{repository('base')}:cache-main",
        "LAYERCACHE_BUILD_SECONDS": "1.5",
        "LAYERCACHE_PUSH_SECONDS": "0.9",
        "LAYERCACHE_IMAGES": json.dumps(entries, separators=(",", ":")),
    }


def bake_entries(commit: str, digests: Mapping[str, str]) -> list[dict[str, Any]]:
    return [entry(target, digest, commit) for target, digest in digests.items()]


def facts(commit: str, exported: Mapping[str, str], sequence: int | None) -> BuildFacts:
    return BuildFacts(
        build_id=f"p:{commit[:8]}",
        build_arn=f"arn:aws:codebuild:{REGION}:123456789012:build/p:{commit[:8]}",
        project="p",
        account="123456789012",
        region=REGION,
        status=BuildStatus.SUCCEEDED,
        event_time=datetime(2026, 12, 2, tzinfo=UTC),
        environment={ENV_SEQUENCE: str(sequence)} if sequence is not None else {},
        exported=dict(exported),
    )


def record(commit: str, requested_at: str) -> Mapping[str, Any]:
    return {"image": IMAGE, "branch": "main", "commit": commit, "requested_at": requested_at}


def at(second: int) -> str:
    return f"2026-12-02T09:00:{second:02d}.000Z"


@pytest.fixture
def repositories(stack: Stack) -> list[str]:
    """Each target's repository, as ECR creates them on the first push."""
    ecr = boto3.client("ecr", region_name=REGION)
    for target in TARGETS:
        ecr.create_repository(repositoryName=repository(target))
    return [repository(target) for target in TARGETS]


@pytest.fixture
def table(stack: Stack) -> BuildsTable:
    return BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))


@pytest.fixture
def publisher(stack: Stack, table: BuildsTable, repositories: list[str]) -> TagPublisher:
    return TagPublisher(table, boto3.client("ecr", region_name=REGION), stack.repository_name)


def publish(
    publisher: TagPublisher, commit: str, digests: Mapping[str, str], sequence: int, second: int
) -> Any:
    built = facts(commit, exports(bake_entries(commit, digests)), sequence)
    return publisher.publish(record(commit, at(second)), built)


# ---------------------------------------------------------------- publication
def test_each_image_takes_the_moving_tags_in_its_own_repository(
    stack: Stack, publisher: TagPublisher, table: BuildsTable
) -> None:
    a = sha("a")
    digests = push_all(a)

    result = publish(publisher, a, digests, 1, 1)

    assert result.published
    assert result.tags == ("main", "latest")
    assert set(result.repositories) == {repository(target) for target in TARGETS}
    assert moving_tags("main") == digests
    assert moving_tags("latest") == digests
    assert tag_digest(stack.repository_name, "main") is None  # the stack's own: untouched
    head = table.branch_head(IMAGE, "main")
    assert head is not None
    assert head.published_images == {repository(t): d for t, d in digests.items()}
    assert head.published_digest is None
    assert (head.published_commit, head.published_tags) == (a, ("main", "latest"))
    assert table.image_repositories(IMAGE) == sorted(repository(t) for t in TARGETS)


def test_in_order_the_tags_move_forward_in_every_repository(publisher: TagPublisher) -> None:
    a, b = sha("a"), sha("b")
    digests_a, digests_b = push_all(a), push_all(b)

    publish(publisher, a, digests_a, 1, 1)
    assert moving_tags() == digests_a
    publish(publisher, b, digests_b, 2, 2)

    assert moving_tags() == digests_b


def test_an_older_build_finishing_later_moves_no_tag_back_in_any_repository(
    publisher: TagPublisher, table: BuildsTable
) -> None:
    a, b = sha("a"), sha("b")
    digests_a, digests_b = push_all(a), push_all(b)
    # `base` did not change between the two commits: the same image in both builds.
    digests_b["base"] = digests_a["base"]

    assert publish(publisher, b, digests_b, 2, 2).published
    late = publish(publisher, a, digests_a, 1, 1)

    assert not late.published
    assert b in late.reason
    assert moving_tags("main") == digests_b
    assert moving_tags("latest") == digests_b
    head = table.branch_head(IMAGE, "main")
    assert head is not None
    assert head.published_commit == b


def test_a_duplicate_publication_is_harmless(publisher: TagPublisher) -> None:
    a = sha("a")
    digests = push_all(a)

    for _ in range(3):  # the same event again, or Lambda's retry after a success
        assert publish(publisher, a, digests, 1, 1).published

    assert moving_tags() == digests


def test_an_image_exported_twice_publishes_its_first_digest(
    publisher: TagPublisher, table: BuildsTable
) -> None:
    a = sha("a")
    digests = push_all(a)
    other = push("api", a, "-other")
    entries = [*bake_entries(a, digests), entry("api", other, a)]

    assert publisher.publish(record(a, at(1)), facts(a, exports(entries), 1)).published

    assert moving_tags() == digests
    head = table.branch_head(IMAGE, "main")
    assert head is not None
    assert head.published_images[repository("api")] == digests["api"]


def test_a_retry_after_a_crash_between_the_head_and_the_tags_completes_the_publication(
    publisher: TagPublisher, table: BuildsTable
) -> None:
    a = sha("a")
    digests = push_all(a)
    # The first invocation wrote the branch head, then died before putting any tag.
    assert table.publish(
        IMAGE,
        "main",
        sequence=1,
        requested_at=at(1),
        commit=a,
        digest="",
        tags=["main", "latest"],
        images={repository(t): d for t, d in digests.items()},
    ).applied
    assert moving_tags() == dict.fromkeys(TARGETS)

    assert publish(publisher, a, digests, 1, 1).published  # Lambda's retry of the event

    assert moving_tags() == digests
    assert moving_tags("latest") == digests


def test_a_retry_after_a_newer_build_published_leaves_the_newer_tags(
    publisher: TagPublisher, table: BuildsTable
) -> None:
    a, b = sha("a"), sha("b")
    digests_a, digests_b = push_all(a), push_all(b)
    # a's invocation wrote the head and died; b published since; then a's retry comes.
    assert table.publish(
        IMAGE,
        "main",
        sequence=1,
        requested_at=at(1),
        commit=a,
        digest="",
        tags=["main", "latest"],
        images={repository(t): d for t, d in digests_a.items()},
    ).applied
    assert publish(publisher, b, digests_b, 2, 2).published

    assert not publish(publisher, a, digests_a, 1, 1).published

    assert moving_tags() == digests_b


def test_a_throttled_put_image_fails_the_invocation_and_the_retry_publishes(
    stack: Stack, publisher: TagPublisher, table: BuildsTable
) -> None:
    a = sha("a")
    digests = push_all(a)
    built = facts(a, exports(bake_entries(a, digests)), 1)
    real = boto3.client("ecr", region_name=REGION)
    manifest = real.batch_get_image(
        repositoryName=repository("base"), imageIds=[{"imageDigest": digests["base"]}]
    )["images"][0]
    throttled = boto3.client("ecr", region_name=REGION)
    with Stubber(throttled) as ecr:
        ecr.add_response("batch_get_image", {"images": [manifest], "failures": []})
        # What the SDK raises once its own retries of a throttle are spent.
        ecr.add_client_error("put_image", "ThrottlingException", "Rate exceeded", 400)
        failing = TagPublisher(table, throttled, stack.repository_name)

        with pytest.raises(ClientError, match="ThrottlingException"):
            failing.publish(record(a, at(1)), built)
        ecr.assert_no_pending_responses()

    # The head names the build and the repositories are remembered; no tag moved yet.
    head = table.branch_head(IMAGE, "main")
    assert head is not None
    assert head.published_commit == a
    assert table.image_repositories(IMAGE) == sorted(repository(t) for t in TARGETS)
    assert moving_tags() == dict.fromkeys(TARGETS)

    assert publisher.publish(record(a, at(1)), built).published  # Lambda's retry

    assert moving_tags() == digests


def test_the_repositories_are_remembered_even_when_the_publication_fails(
    publisher: TagPublisher, table: BuildsTable
) -> None:
    a = sha("a")
    digests = push_all(a)
    digests["worker"] = "sha256:" + "0" * 64  # not in its repository

    with pytest.raises(RuntimeError, match="is not in team/service/worker"):
        publish(publisher, a, digests, 1, 1)

    assert table.image_repositories(IMAGE) == sorted(repository(t) for t in TARGETS)


def test_a_bake_build_without_moving_tags_still_remembers_its_repositories(
    publisher: TagPublisher, table: BuildsTable
) -> None:
    a = sha("a")
    digests = push_all(a)
    entries = [entry(t, d, a, moving_tags=[]) for t, d in digests.items()]

    result = publisher.publish(record(a, at(1)), facts(a, exports(entries, moving=""), 1))

    assert not result.published
    assert result.reason == "the build named no moving tags"
    assert table.image_repositories(IMAGE) == sorted(repository(t) for t in TARGETS)
    assert table.branch_head(IMAGE, "main") is None
    assert moving_tags() == dict.fromkeys(TARGETS)


def test_images_outside_the_stacks_repositories_are_neither_published_nor_remembered(
    publisher: TagPublisher, table: BuildsTable
) -> None:
    a = sha("a")
    digests = push_all(a)
    boto3.client("ecr", region_name=REGION).create_repository(repositoryName="someone/else")
    stray = entry("else", digests["api"], a, repository=f"{REGISTRY}/someone/else")
    # `team/service-x/...` shares the prefix as text, not as a repository path.
    sibling = entry("sibling", digests["api"], a, repository=f"{REGISTRY}/team/service-x/api")

    result = publisher.publish(
        record(a, at(1)), facts(a, exports([*bake_entries(a, digests), stray, sibling]), 1)
    )

    assert result.published
    assert moving_tags() == digests
    assert tag_digest("someone/else", "main") is None
    assert table.image_repositories(IMAGE) == sorted(repository(t) for t in TARGETS)


def test_switching_from_one_dockerfile_to_a_bake_file_moves_only_forward(
    stack: Stack, publisher: TagPublisher, table: BuildsTable
) -> None:
    a, b = sha("a"), sha("b")
    single = push_all(a)["base"]  # stands in for the one image, pushed to the stack's own:
    boto3.client("ecr", region_name=REGION).put_image(
        repositoryName=stack.repository_name,
        imageManifest=boto3.client("ecr", region_name=REGION).batch_get_image(
            repositoryName=repository("base"), imageIds=[{"imageDigest": single}]
        )["images"][0]["imageManifest"],
        imageManifestMediaType=MEDIA_TYPE,
        imageTag=a,
        imageDigest=single,
    )
    single_facts = facts(
        a, {"LAYERCACHE_IMAGE_DIGEST": single, "LAYERCACHE_MOVING_TAGS": "main,latest"}, 1
    )
    assert publisher.publish(record(a, at(1)), single_facts).published
    assert tag_digest(stack.repository_name, "main") == single
    digests_b = push_all(b)

    assert publish(publisher, b, digests_b, 2, 2).published
    # The one-Dockerfile build, delivered again late, takes nothing back.
    assert not publisher.publish(record(a, at(1)), single_facts).published

    assert moving_tags() == digests_b
    assert tag_digest(stack.repository_name, "main") == single  # left where it was
    head = table.branch_head(IMAGE, "main")
    assert head is not None
    assert head.published_digest is None
    assert set(head.published_images) == {repository(t) for t in TARGETS}


def test_concurrent_bake_publications_end_on_the_newest_in_every_repository(
    publisher: TagPublisher,
) -> None:
    commits = [sha(str(n)) for n in range(5)]
    digests = [push_all(commit) for commit in commits]
    threads = [
        threading.Thread(target=publish, args=(publisher, commit, built, n + 1, n))
        for n, (commit, built) in enumerate(zip(commits, digests, strict=True))
    ]
    with atomic_backends():  # each request atomic, as in DynamoDB and ECR
        for thread in reversed(threads):
            thread.start()
        for thread in threads:
            thread.join()

    assert moving_tags("main") == digests[-1]
    assert moving_tags("latest") == digests[-1]


# ---------------------------------------------------------------- the recorder end to end
@pytest.mark.usefixtures("fresh_recorder")
def test_the_recorder_records_publishes_measures_and_reports_each_image(
    stack: Stack,
    repositories: list[str],
    table: BuildsTable,
    function_env: Any,
    notifications: Any,
    github_token_secret: str,
    fake_github: FakeGitHub,
    codebuild_stub: StubbedCodeBuild,
    capsys: pytest.CaptureFixture[str],
) -> None:
    function_env(
        RECORDER, GITHUB_TOKEN_SECRET_ARN=github_token_secret, GITHUB_API_URL=fake_github.url
    )
    commit = "9fceb02d0ae598e95dc970b74767f19372d61af8"  # the sample's
    event = sample("succeeded")
    trigger_write(stack.table_name, event)
    digests = push_all(commit)
    entries = bake_entries(commit, digests)
    # api: every step cached, as base; worker: one of two.
    entries[1].update(cached_steps=2, cache_hit_ratio=1.0)
    codebuild_stub.will_return(batch_get_build(event, exports(entries)))
    _, recorder = function_module(RECORDER).default_service()
    recorder.codebuild = codebuild_stub.client
    capsys.readouterr()

    result = invoke_function(RECORDER, event)

    assert result["recorded"]
    assert result["tags_published"] == ["main", "latest"]
    item = table.get("BUILD#layercache-image-build:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d")
    assert item is not None
    assert [image["image"] for image in item["images"]] == list(TARGETS)
    worker = item["images"][2]
    assert worker == {
        "image": "worker",
        "repository": "team/service/worker",
        "digest": digests["worker"],
        "tags": [commit, "main-9fceb02"],
        "built_on": ["base"],
        "cache_hit_ratio": Decimal("0.5"),
        "cached_steps": Decimal(1),
        "total_steps": Decimal(2),
        "cache_ref_hit": f"{REGISTRY}/team/service/worker:cache-main",
        "build_seconds": Decimal("0.4"),
        "push_seconds": Decimal("0.3"),
        "cache_status": "warm",
    }
    assert item["cache_hit_ratio"] == Decimal("0.667")  # the totals, as without a Bake file
    assert "image_digest" not in item
    assert moving_tags() == digests
    assert table.image_repositories(IMAGE) == sorted(repositories)
    assert fake_github.requests[-1]["body"]["description"] == (
        "Succeeded in 2m11s, 3 images, 2 cached"
    )
    documents = emitted_metrics(capsys.readouterr().out)
    per_image = [document for document in documents if "image" in document]
    assert [document["image"] for document in per_image] == list(TARGETS)
    for document in per_image:
        [directive] = document["_aws"]["CloudWatchMetrics"]
        assert [sorted(names) for names in directive["Dimensions"]] == [
            ["image", "mode", "service", "trigger"]
        ]
        assert (document["trigger"], document["mode"]) == ("github", "normal")
        assert document["ImageBuildSeconds"] in (0.4, [0.4])
    assert [document["CacheHitRatio"] for document in per_image] in (
        [1.0, 1.0, 0.5],
        [[1.0], [1.0], [0.5]],
    )
    # The build's own document is as without a Bake file: no image, no per-image metric.
    [build] = [document for document in documents if "BuildDuration" in document]
    [directive] = build["_aws"]["CloudWatchMetrics"]
    assert sorted(map(sorted, directive["Dimensions"])) == [["mode", "trigger"], ["service"]]
    assert "ImageBuildSeconds" not in build
    assert build["CacheHitRatio"] in (0.667, [0.667])
    assert notifications.received() == []
