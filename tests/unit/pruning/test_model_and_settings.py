"""Reading manifests and tags as buildx writes them; the pruner's settings and events."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.parser import parse
from pydantic import ValidationError

from layercache.pruning.events import BuildSucceededEvent, ScheduledEvent
from layercache.pruning.model import (
    BUILDKIT_CACHE_CONFIG,
    CACHE_TAG_PREFIX,
    ChildRef,
    ChildRole,
    Image,
    branch_slug,
    parse_config_media_type,
    parse_index_children,
)
from layercache.pruning.settings import PrunerSettings
from layercache_dev.kit.driver import build_driver

EVENTS = Path(__file__).resolve().parents[3] / "events" / "image-pruner"
AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64
ATTESTATION = "sha256:" + "c" * 64

# What `docker buildx build --platform linux/amd64,linux/arm64 --push` stores (trimmed sizes).
BUILDX_INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": AMD64,
            "size": 1052,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": ARM64,
            "size": 1052,
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        },
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": ATTESTATION,
            "size": 566,
            "annotations": {
                "vnd.docker.reference.digest": AMD64,
                "vnd.docker.reference.type": "attestation-manifest",
            },
            "platform": {"architecture": "unknown", "os": "unknown"},
        },
    ],
}

BUILDKIT_CACHE_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": BUILDKIT_CACHE_CONFIG,
        "digest": "sha256:" + "d" * 64,
        "size": 912,
    },
    "layers": [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:" + "e" * 64,
            "size": 3_000_000,
            "annotations": {"buildkit/createdat": "2025-05-30T10:00:00Z"},
        }
    ],
}


def test_index_children_carry_their_role_and_platform() -> None:
    assert parse_index_children(json.dumps(BUILDX_INDEX)) == (
        ChildRef(AMD64, ChildRole.PLATFORM, "linux/amd64"),
        ChildRef(ARM64, ChildRole.PLATFORM, "linux/arm64/v8"),
        ChildRef(ATTESTATION, ChildRole.ATTESTATION, ""),
    )


def test_blob_entries_of_an_old_style_cache_index_are_not_children() -> None:
    legacy_cache_index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": AMD64},
            {"mediaType": BUILDKIT_CACHE_CONFIG, "digest": ARM64},
        ],
    }
    assert parse_index_children(json.dumps(legacy_cache_index)) == ()


def test_config_media_type_tells_a_cache_manifest_from_an_image() -> None:
    assert parse_config_media_type(json.dumps(BUILDKIT_CACHE_MANIFEST)) == BUILDKIT_CACHE_CONFIG
    assert parse_config_media_type(json.dumps(BUILDX_INDEX)) is None


BRANCHES = [
    "main",
    "feature/login",
    "feature-login",
    "a b@c",
    "v1.2_x",
    "latest",
    "cache-main",
    "fix-1234567",
    "日本",
    "x" * 200,
]


@pytest.mark.parametrize("branch", BRANCHES)
def test_branch_slug_is_the_build_drivers(branch: str) -> None:
    """One function: the pruner's copy (scripts/sync_slug.py) spells what the driver pushes."""
    assert branch_slug(branch) == build_driver.branch_slug(branch)


@pytest.mark.parametrize("branch", BRANCHES)
def test_build_branches_reads_every_slug_back_from_its_build_tag(branch: str) -> None:
    slug = branch_slug(branch)
    sha = hashlib.sha1(branch.encode()).hexdigest()  # noqa: S324
    now = datetime(2025, 6, 1, tzinfo=UTC)
    image = Image(AMD64, now, tags=(sha, f"{slug}-{sha[:7]}", slug, "latest"))
    assert image.build_branches() == {slug}
    if not slug.startswith(CACHE_TAG_PREFIX):
        # Without the commit tag the pruner guesses from the tag's shape: the moving tag,
        # hash suffix or not, never passes for a build tag.
        guessed = Image(AMD64, now, tags=(f"{slug}-{sha[:7]}", slug))
        assert guessed.build_branches() == {slug}


def test_settings_from_the_environment() -> None:
    settings = PrunerSettings.from_env(
        {
            "IMAGE_REPOSITORY_NAME": "team/service",
            "PRUNE_REPOSITORIES": (
                "arn:aws:ecr:us-east-1:123456789012:repository/team/service, other/repo"
            ),
            "PRUNE_PROTECTED_TAGS": "latest, v*,prod-*",
            "PRUNE_KEEP_PER_BRANCH": "3",
            "PRUNE_KEEP_DAYS": "1.5",
            "PRUNE_DRY_RUN": "true",
            "PRUNE_CHECK_ECS_TASKS": "false",
            "PRUNE_UNKNOWN_AFTER_DAYS": "90",
        }
    )
    assert settings.repositories == ("team/service", "other/repo")
    assert settings.policy().unknown_after_days == 90
    policy = settings.policy({"sha256:x": "ECS task t"})
    assert policy.protected_tags == ("latest", "v*", "prod-*")
    assert (policy.keep_per_branch, policy.keep_days) == (3, 1.5)
    assert policy.in_use == {"sha256:x": "ECS task t"}
    assert settings.prune_dry_run
    assert not settings.prune_check_ecs_tasks
    assert settings.prune_check_lambda_functions


def test_settings_default_to_the_stacks_repository() -> None:
    settings = PrunerSettings.from_env(
        {"IMAGE_REPOSITORY_NAME": "team/service", "PRUNE_REPOSITORIES": ""}
    )
    assert settings.repositories == ("team/service",)
    assert settings.policy().protected_tags == ("latest", "v*")
    # The template passes "" when PruneUnknownAfterDays is left empty: keep them all.
    for off in ({}, {"PRUNE_UNKNOWN_AFTER_DAYS": ""}):
        env = {"IMAGE_REPOSITORY_NAME": "team/service", **off}
        assert PrunerSettings.from_env(env).policy().unknown_after_days is None


@pytest.mark.parametrize(
    "bad",
    [
        {"PRUNE_KEEP_PER_BRANCH": "0"},
        {"PRUNE_KEEP_DAYS": "-1"},
        {"PRUNE_UNKNOWN_AFTER_DAYS": "-5"},
        {"PRUNE_UNKNOWN_AFTER_DAYS": "soon"},
        {"PRUNE_DRY_RUN": "maybe"},
        {"PRUNE_REPOSITORIES": "arn:aws:s3:::bucket"},
    ],
)
def test_settings_reject_unsafe_values(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        PrunerSettings.from_env({"IMAGE_REPOSITORY_NAME": "team/service", **bad})


def test_sample_events_parse() -> None:
    build = parse(
        event=json.loads((EVENTS / "build-succeeded.json").read_text()), model=BuildSucceededEvent
    )
    assert build.detail.build_status == "SUCCEEDED"
    assert build.detail.project_name == "layercache-image-build"
    scheduled = parse(
        event=json.loads((EVENTS / "daily-schedule.json").read_text()), model=ScheduledEvent
    )
    assert scheduled.detail_type == "Scheduled Event"
