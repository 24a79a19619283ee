"""Branches whose names once shared a slug build side by side in one repository without
touching each other's tags or caches, nor the default branch's `main`, `latest` and
`cache-main` (the slug itself: tests/unit/test_build_driver_slug.py)."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from layercache.pruning.model import BUILDKIT_CACHE_CONFIG
from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.driver import build_driver
from layercache_dev.kit.rig import Rig

pytestmark = pytest.mark.docker

DOCKERFILE = """\
FROM {base}
COPY src/ /src/
RUN cat /src/* > /all
"""
BRANCHES = ["feature/a", "feature-a", "@main", "latest", "cache-main", "main-0123456"]
_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"branch commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


def publish(rig: Rig, name: str, outcome: BuildOutcome) -> None:
    """What the recorder does after a successful build: move its moving tags to it."""
    digest = outcome.variables["LAYERCACHE_IMAGE_DIGEST"]
    for tag in outcome.variables["LAYERCACHE_MOVING_TAGS"].split(","):
        rig.registry.move_tag(name, tag, digest)


def test_branches_never_share_a_tag_or_a_cache_ref(rig: Rig, tmp_path: Path) -> None:
    name = "branches/app"
    repo = rig.repository(name)
    context = rig.write_context(tmp_path / "ctx", DOCKERFILE, {"src/app.txt": "main\n"})
    main = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert main.ok, main.log[-3000:]
    publish(rig, name, main)
    main_image = main.variables["LAYERCACHE_IMAGE_DIGEST"]
    main_cache = rig.registry.digest(name, "cache-main")

    outcomes: dict[str, BuildOutcome] = {}
    for branch in BRANCHES:
        (context / "src/app.txt").write_text(f"{branch}\n")  # an image of its own
        outcome = rig.build(context, repository=repo, branch=branch, commit=new_commit())
        assert outcome.ok, outcome.log[-3000:]
        publish(rig, name, outcome)
        outcomes[branch] = outcome

    # The default branch's tags and cache are where its own build put them.
    assert rig.registry.digest(name, "main") == main_image
    assert rig.registry.digest(name, "latest") == main_image
    assert rig.registry.digest(name, "cache-main") == main_cache
    # Every branch has a moving tag, build tags and a cache ref of its own.
    slugs = [outcome.variables["LAYERCACHE_MOVING_TAGS"] for outcome in outcomes.values()]
    assert slugs == [build_driver.branch_slug(branch) for branch in BRANCHES]
    assert len(set(slugs)) == len(BRANCHES)
    assert not set(slugs) & {"main", "latest", "cache-main", "main-0123456"}
    for outcome in outcomes.values():
        digest = outcome.variables["LAYERCACHE_IMAGE_DIGEST"]
        slug = outcome.variables["LAYERCACHE_MOVING_TAGS"]
        assert rig.registry.digest(name, slug) == digest
        for tag in outcome.variables["LAYERCACHE_IMAGE_TAGS"].split(","):
            assert rig.registry.digest(name, tag) == digest
        cache = rig.registry.manifest(name, f"cache-{slug}")
        assert cache is not None
        assert cache["config"]["mediaType"] == BUILDKIT_CACHE_CONFIG
    assert len({outcome.variables["LAYERCACHE_IMAGE_DIGEST"] for outcome in outcomes.values()}) == (
        len(BRANCHES)
    )
