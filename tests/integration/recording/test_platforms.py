"""Several platforms on moto: one batch, a build per platform and the join, one record.

The starter starts the batch (a native host per platform, the join after both); the
recorder records it once, with the join's index as the build's image and the platforms'
counts summed; the moving tags go to the index; a failed platform publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from layercache.build_records import ENV_PLATFORM, BuildsTable, Trigger, build_pk
from layercache.build_requests import BuildRequestMessage
from layercache.starting.service import BuildStarter
from layercache.starting.settings import StarterSettings
from layercache.starting.wiring import make_build_starter
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.functions import invoke_function
from layercache_dev.kit.moto_codebuild import CodeBuildLike, codebuild_like

from .conftest import IMAGE, RECORDER, REGION, FakeGitHub
from .test_fan_out import member_event

PLATFORMS = "linux/amd64,linux/arm64"
ARM_IMAGE = "aws/codebuild/amazonlinux-aarch64-standard:3.0"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
COMMIT = "c0ffee" + "0" * 34


def put(manifest: dict[str, Any], media_type: str, tag: str) -> str:
    body = json.dumps(manifest)
    digest = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    boto3.client("ecr", region_name=REGION).put_image(
        repositoryName=IMAGE,
        imageManifest=body,
        imageManifestMediaType=media_type,
        imageTag=tag,
        imageDigest=digest,
    )
    return digest


def platform_image(arch: str) -> str:
    config = "sha256:" + hashlib.sha256(arch.encode()).hexdigest()
    return put(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": 2,
            },
            "layers": [],
        },
        MANIFEST,
        f"{COMMIT}-{arch}-1a2b3c4d",
    )


def exports(**values: str) -> dict[str, str]:
    base = {
        "LAYERCACHE_IMAGE_DIGEST": "",
        "LAYERCACHE_IMAGE_TAGS": "",
        "LAYERCACHE_MOVING_TAGS": "",
        "LAYERCACHE_CACHE_HIT_RATIO": "1.000",
        "LAYERCACHE_CACHE_REF_HIT": "none",
        "LAYERCACHE_BUILD_SECONDS": "3.0",
        "LAYERCACHE_PUSH_SECONDS": "0.2",
        "LAYERCACHE_CACHED_STEPS": "0",
        "LAYERCACHE_TOTAL_STEPS": "0",
        "LAYERCACHE_CACHE_STATUS": "",
        "LAYERCACHE_IMAGES": "",
        "LAYERCACHE_PLATFORMS": "",
    }
    return {**base, **values}


@pytest.fixture
def platforms(
    stack: Stack,
    function_env: Any,
    fresh_recorder: None,
    github_token_secret: str,
    fake_github: FakeGitHub,
) -> Iterator[tuple[BuildStarter, CodeBuildLike, BuildsTable]]:
    function_env(
        RECORDER,
        BATCH_BUILDS="true",
        GITHUB_TOKEN_SECRET_ARN=github_token_secret,
        GITHUB_API_URL=fake_github.url,
    )
    env = {**stack.environment("BuildStarterFunction"), "PLATFORMS": PLATFORMS}
    with codebuild_like() as codebuild:
        starter = make_build_starter(
            StarterSettings.from_env(env), codebuild=boto3.client("codebuild", region_name=REGION)
        )
        yield starter, codebuild, starter.table


def item_of(table: BuildsTable, batch_id: str) -> dict[str, Any]:
    item = table.get(build_pk(batch_id))
    assert item is not None
    return item


def push_request(starter: BuildStarter) -> str:
    request = BuildRequestMessage.for_push(
        image=IMAGE,
        branch="main",
        commit=COMMIT,
        before=None,
        trigger=Trigger.GITHUB,
        requested_at=datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
        pushed_at=None,
        build=True,
        reason="push",
        delivery_id="d-1",
    )
    outcome = starter.handle(request)
    assert outcome.build_id is not None
    return outcome.build_id


def test_a_batch_of_platforms_is_recorded_as_the_joined_index(
    platforms: tuple[BuildStarter, CodeBuildLike, BuildsTable], fake_github: FakeGitHub
) -> None:
    starter, codebuild, table = platforms
    batch_id = push_request(starter)
    graph = {node["identifier"]: node for node in codebuild.graph_of(batch_id)}
    assert list(graph) == ["linux_amd64", "linux_arm64", "join"]
    assert graph["linux_arm64"]["env"]["type"] == "ARM_CONTAINER"
    assert graph["linux_arm64"]["env"]["image"] == ARM_IMAGE

    results = {}
    for arch, cached in (("amd64", 3), ("arm64", 1)):
        build = codebuild.start_member(batch_id, f"linux_{arch}")
        assert codebuild.environment_of(build["id"])[ENV_PLATFORM] == f"linux/{arch}"
        invoke_function(RECORDER, member_event(codebuild, build["id"], "IN_PROGRESS"))
        digest = platform_image(arch)
        codebuild.finish(
            build["id"],
            exported=exports(
                LAYERCACHE_IMAGE_DIGEST=digest,
                LAYERCACHE_IMAGE_TAGS=f"{COMMIT}-{arch}-1a2b3c4d",
                LAYERCACHE_CACHED_STEPS=str(cached),
                LAYERCACHE_TOTAL_STEPS="3",
                LAYERCACHE_CACHE_STATUS="warm",
                LAYERCACHE_PLATFORMS=f"linux/{arch}",
            ),
        )
        results[arch] = digest
        invoke_function(RECORDER, member_event(codebuild, build["id"], "SUCCEEDED"))
    assert item_of(table, batch_id)["status"] == "IN_PROGRESS"  # the join is to come

    join = codebuild.start_member(batch_id, "join")
    index = put(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                {
                    "mediaType": MANIFEST,
                    "digest": results[arch],
                    "size": 300,
                    "platform": {"os": "linux", "architecture": arch},
                }
                for arch in ("amd64", "arm64")
            ],
        },
        INDEX,
        COMMIT,
    )
    codebuild.finish(
        join["id"],
        exported=exports(
            LAYERCACHE_IMAGE_DIGEST=index,
            LAYERCACHE_IMAGE_TAGS=f"{COMMIT},main-{COMMIT[:7]}",
            LAYERCACHE_MOVING_TAGS="main,latest",
            LAYERCACHE_PLATFORMS=PLATFORMS,
        ),
    )
    result = invoke_function(RECORDER, member_event(codebuild, join["id"], "SUCCEEDED"))

    assert result["status"] == "SUCCEEDED"
    assert result["tags_published"] == ["main", "latest"]
    item = item_of(table, batch_id)
    assert item["image_digest"] == index
    assert item["platforms"] == ["linux/amd64", "linux/arm64"]
    assert float(item["cache_hit_ratio"]) == pytest.approx(4 / 6, abs=0.001)
    ecr = boto3.client("ecr", region_name=REGION)
    main = ecr.batch_get_image(repositoryName=IMAGE, imageIds=[{"imageTag": "main"}])["images"]
    assert main[0]["imageId"]["imageDigest"] == index
    assert [request["body"]["state"] for request in fake_github.requests] == ["pending", "success"]


def test_a_failed_platform_fails_the_batch_and_publishes_nothing(
    platforms: tuple[BuildStarter, CodeBuildLike, BuildsTable], fake_github: FakeGitHub
) -> None:
    starter, codebuild, table = platforms
    batch_id = push_request(starter)
    arm = codebuild.start_member(batch_id, "linux_arm64")
    codebuild.finish(arm["id"], "FAILED", exported=exports())

    result = invoke_function(RECORDER, member_event(codebuild, arm["id"], "FAILED"))

    assert result["status"] == "FAILED"
    assert result["tags_published"] == []
    assert item_of(table, batch_id)["status"] == "FAILED"
    ecr = boto3.client("ecr", region_name=REGION)
    assert ecr.list_images(repositoryName=IMAGE, filter={"tagStatus": "TAGGED"})["imageIds"] == []
    assert [request["body"]["state"] for request in fake_github.requests] == ["failure"]
