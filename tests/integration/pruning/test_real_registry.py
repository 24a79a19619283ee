"""The planner on what buildx really pushes: builds by the real driver into a real registry.

The plan is computed from the registry's own manifests (every revision it stores, tagged
or not); nothing is deleted here, deletion is ECR's business. Needs the docker tier (see
tools/layercache_dev/kit/rig.py); skipped without it unless LAYERCACHE_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from layercache.pruning.model import (
    BUILDKIT_CACHE_CONFIG,
    ChildRole,
    Image,
    parse_config_media_type,
    parse_index_children,
)
from layercache.pruning.plan import Policy, Reason, make_plan
from layercache_dev.kit.rig import Rig
from tests.conftest import require_docker_tier

pytestmark = pytest.mark.docker

DOCKERFILE = """\
FROM {base}
RUN echo "dependencies" > /deps && dd if=/dev/urandom of=/deps.bin bs=1K count=64 2>/dev/null
COPY src/ /src/
RUN cat /src/app.txt > /app.txt
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    require_docker_tier("remote")
    with Rig(tmp_path_factory.mktemp("prune-rig"), builder_kind="remote") as started:
        yield started


def commit(n: int) -> str:
    return hashlib.sha1(f"pruning commit {n}".encode()).hexdigest()  # noqa: S324


def registry_images(rig: Rig, name: str) -> list[Image]:
    """Every manifest revision the registry stores for `name`, as the pruner models images.

    Push times come from the revision links' modification times; tags from the tag API.
    """
    revisions = rig.registry.root / "docker/registry/v2/repositories" / name / "_manifests"
    tags_by_digest: dict[str, list[str]] = {}
    for tag in rig.registry.tags(name):
        _, _, headers = rig.registry.request(
            "HEAD",
            f"/v2/{name}/manifests/{tag}",
            "application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json",
        )
        tags_by_digest.setdefault(headers["docker-content-digest"], []).append(tag)
    images: list[Image] = []
    for link in sorted((revisions / "revisions/sha256").glob("*/link")):
        digest = link.read_text().strip()
        raw = rig.registry.blob_path(digest).read_bytes()
        document = json.loads(raw)
        text = raw.decode()
        images.append(
            Image(
                digest=digest,
                pushed_at=datetime.fromtimestamp(link.stat().st_mtime, tz=UTC),
                tags=tuple(sorted(tags_by_digest.get(digest, []))),
                size_bytes=len(raw),
                media_type=document["mediaType"],
                config_media_type=parse_config_media_type(text),
                children=parse_index_children(text) if "manifests" in document else (),
            )
        )
    return images


def test_the_planner_understands_what_buildx_pushes(rig: Rig, tmp_path: Path) -> None:
    repo = rig.repository("layercache/pruning-real")
    name = repo.split("/", 1)[1]
    context = rig.write_context(tmp_path / "ctx", DOCKERFILE, {"src/app.txt": "v0\n"})
    for n in range(3):
        (context / "src/app.txt").write_text(f"v{n}\n")
        outcome = rig.build(context, repository=repo, branch="main", commit=commit(n))
        assert outcome.ok, outcome.log[-4000:]
        # The build pushes its immutable tags; the recorder then moves main and latest.
        digest = outcome.variables["LAYERCACHE_IMAGE_DIGEST"]
        for tag in outcome.variables["LAYERCACHE_MOVING_TAGS"].split(","):
            rig.registry.move_tag(name, tag, digest)

    images = registry_images(rig, name)
    by_digest = {image.digest: image for image in images}
    indexes = [image for image in images if image.is_index]
    caches = [image for image in images if image.is_cache]
    # Each build: an OCI index with its platform manifest and buildx's attestation manifest,
    # and a cache manifest; cache-main moved twice, leaving two untagged.
    assert len(indexes) == 3
    assert len(caches) == 3
    assert sorted(len(c.tags) for c in caches) == [0, 0, 1]
    for index in indexes:
        assert all(child.digest in by_digest for child in index.children)
        assert index.media_type == "application/vnd.oci.image.index.v1+json"
        assert sorted(child.role for child in index.children) == [
            ChildRole.ATTESTATION,
            ChildRole.PLATFORM,
        ]
    newest = next(i for i in indexes if commit(2) in i.tags)
    assert {"main", "latest", f"main-{commit(2)[:7]}"} <= set(newest.tags)

    now = datetime.now(UTC) + timedelta(days=30)  # everything is old
    plan = make_plan(images, Policy(keep_per_branch=1, keep_days=1), now)

    kept_children = {child.digest for child in newest.children}
    current_cache = next(c for c in caches if c.tags == ("cache-main",))
    assert plan.kept_digests == {newest.digest, current_cache.digest} | kept_children
    for digest in kept_children:
        assert Reason.CHILD_OF_KEPT in plan.decision(digest).reasons
    assert Reason.CURRENT_CACHE in plan.decision(current_cache.digest).reasons
    for cache in caches:
        assert cache.config_media_type == BUILDKIT_CACHE_CONFIG
        if not cache.tags:
            assert plan.decision(cache.digest).reasons == {Reason.SUPERSEDED_CACHE}
    for index in indexes:
        if index is not newest:
            assert plan.decision(index.digest).reasons == {Reason.OLDER_BUILD}
            for child in index.children:
                decision = plan.decision(child.digest)
                assert decision.reasons == {Reason.CHILD_OF_DELETED}
                assert decision.wave > plan.decision(index.digest).wave
    # Every manifest the registry stores is accounted for, none twice.
    assert plan.kept_digests | plan.deleted_digests == set(by_digest)
