"""The recorder moves `main`/`latest` to a succeeded build only forward (issue 10).

Builds push only `<sha>` and `<branch>-<sha7>`; the moving tags are put by the recorder
after a conditional write on the branch head. Whatever order builds finish and their
events arrive in, the tags end on the newest build, and a commit the branch head knows
to be older never takes them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from layercache.build_records import ENV_SEQUENCE, BranchHead, BuildsTable, BuildStatus
from layercache.recording.build import BuildFacts
from layercache.recording.publish import TagPublisher
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.moto_atomic import atomic_backends

REGION = "us-east-1"
IMAGE = "team/service"


def sha(label: str) -> str:
    return (label.encode().hex() * 40)[:40]


def push_image(stack: Stack, commit: str) -> str:
    """An image of `commit` pushed as the build pushes it: under its immutable tag."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(commit.encode()).hexdigest(),
                "size": 2,
            },
            "layers": [],
        }
    )
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    boto3.client("ecr", region_name=REGION).put_image(
        repositoryName=stack.repository_name,
        imageManifest=manifest,
        imageManifestMediaType="application/vnd.oci.image.manifest.v1+json",
        imageTag=commit,
        imageDigest=digest,
    )
    return digest


def tag_digest(stack: Stack, tag: str) -> str | None:
    ecr = boto3.client("ecr", region_name=REGION)
    images = ecr.batch_get_image(
        repositoryName=stack.repository_name, imageIds=[{"imageTag": tag}]
    )["images"]
    return images[0]["imageId"]["imageDigest"] if images else None


def facts(commit: str, digest: str, sequence: int | None) -> BuildFacts:
    environment = {ENV_SEQUENCE: str(sequence)} if sequence is not None else {}
    return BuildFacts(
        build_id=f"p:{commit[:8]}",
        build_arn=f"arn:aws:codebuild:{REGION}:123456789012:build/p:{commit[:8]}",
        project="p",
        account="123456789012",
        region=REGION,
        status=BuildStatus.SUCCEEDED,
        event_time=datetime(2026, 12, 2, tzinfo=UTC),
        environment=environment,
        exported={"LAYERCACHE_IMAGE_DIGEST": digest, "LAYERCACHE_MOVING_TAGS": "main,latest"},
    )


def record(commit: str, requested_at: str) -> Mapping[str, Any]:
    return {"image": IMAGE, "branch": "main", "commit": commit, "requested_at": requested_at}


@pytest.fixture
def table(stack: Stack) -> BuildsTable:
    return BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))


@pytest.fixture
def publisher(stack: Stack, table: BuildsTable) -> TagPublisher:
    return TagPublisher(table, boto3.client("ecr", region_name=REGION), stack.repository_name)


def test_the_newer_build_keeps_the_tags_when_the_older_finishes_last(
    stack: Stack, publisher: TagPublisher
) -> None:
    a, b = sha("a"), sha("b")
    digest_a, digest_b = push_image(stack, a), push_image(stack, b)
    assert publisher.publish(record(b, "2026-12-02T09:00:02.000Z"), facts(b, digest_b, 2)).published
    late = publisher.publish(record(a, "2026-12-02T09:00:01.000Z"), facts(a, digest_a, 1))
    assert not late.published
    assert tag_digest(stack, "main") == digest_b
    assert tag_digest(stack, "latest") == digest_b


def test_in_order_the_tags_move_forward(stack: Stack, publisher: TagPublisher) -> None:
    a, b = sha("a"), sha("b")
    digest_a, digest_b = push_image(stack, a), push_image(stack, b)
    publisher.publish(record(a, "2026-12-02T09:00:01.000Z"), facts(a, digest_a, 1))
    assert tag_digest(stack, "main") == digest_a
    publisher.publish(record(b, "2026-12-02T09:00:02.000Z"), facts(b, digest_b, 2))
    assert tag_digest(stack, "main") == digest_b


def test_a_retried_publication_is_harmless(stack: Stack, publisher: TagPublisher) -> None:
    a = sha("a")
    digest = push_image(stack, a)
    for _ in range(2):
        assert publisher.publish(
            record(a, "2026-12-02T09:00:01.000Z"), facts(a, digest, 1)
        ).published
    assert tag_digest(stack, "main") == digest


def test_a_nightly_rebuild_of_the_head_refreshes_the_tags(
    stack: Stack, publisher: TagPublisher
) -> None:
    a = sha("a")
    pushed, refreshed = push_image(stack, a), push_image(stack, a + "-refresh")
    publisher.publish(record(a, "2026-12-02T09:00:00.000Z"), facts(a, pushed, 1))
    publisher.publish(record(a, "2026-12-03T03:00:00.000Z"), facts(a, refreshed, 1))
    assert tag_digest(stack, "main") == refreshed


def test_a_manual_build_of_a_commit_the_head_knows_is_older_does_not_publish(
    stack: Stack, publisher: TagPublisher, table: BuildsTable
) -> None:
    a, b = sha("a"), sha("b")
    head = BranchHead(image=IMAGE, branch="main").advanced_to(a, None, None)
    head = head.advanced_to(b, a, None)
    assert table.save_branch_head(head)
    digest_a = push_image(stack, a)
    result = publisher.publish(record(a, "2026-12-02T10:00:00.000Z"), facts(a, digest_a, None))
    assert not result.published
    assert tag_digest(stack, "main") is None


def test_concurrent_publications_end_on_the_newest(stack: Stack, publisher: TagPublisher) -> None:
    commits = [sha(str(n)) for n in range(6)]
    digests = [push_image(stack, c) for c in commits]
    threads = [
        threading.Thread(
            target=publisher.publish,
            args=(record(c, f"2026-12-02T09:00:0{n}.000Z"), facts(c, d, n + 1)),
        )
        for n, (c, d) in enumerate(zip(commits, digests, strict=True))
    ]
    with atomic_backends():  # each request atomic, as in DynamoDB and ECR
        for thread in reversed(threads):
            thread.start()
        for thread in threads:
            thread.join()
    assert tag_digest(stack, "main") == digests[-1]
