"""A Bake file's build that fails, or runs again: the failing image fails the build, no
image built on it starts, and what the driver does for one image (its failure policy,
its write-once tags) it does for each."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.rig import Rig

pytestmark = pytest.mark.docker

BAKE_FILE = """\
group "default" {
  targets = ["base", "api", "tool"]
}
target "base" {
  context = "base"
}
target "api" {
  context = "api"
  contexts = { base = "target:base" }
}
target "tool" {
  context = "tool"
}
"""
_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"bake failure commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


def write_repo(rig: Rig, root: Path, base_step: str) -> Path:
    (root / "docker-bake.hcl").parent.mkdir(parents=True, exist_ok=True)
    (root / "docker-bake.hcl").write_text(BAKE_FILE)
    rig.write_context(root / "base", f"FROM {{base}}\n{base_step}\n")
    rig.write_context(root / "api", "FROM base\nRUN echo api > /api.txt\n")
    rig.write_context(root / "tool", "FROM {base}\nRUN echo tool > /tool.txt\n")
    return root


def bake_build(
    rig: Rig, root: Path, prefix: str, commit: str | None = None, **env: str
) -> BuildOutcome:
    return rig.build(
        root,
        repository=rig.repository(prefix),
        branch="main",
        commit=commit or new_commit(),
        extra_env={"LAYERCACHE_BAKE_FILE": "docker-bake.hcl", **env},
    )


def test_a_failing_base_fails_the_build_and_nothing_built_on_it_starts(
    rig: Rig, tmp_path: Path
) -> None:
    root = write_repo(rig, tmp_path / "repo", 'RUN echo "the base breaks" && exit 3')
    outcome = bake_build(rig, root, "broken")

    assert not outcome.ok
    assert "layercache: build failed:" in outcome.log
    assert "exit code: 3" in outcome.log  # the step that failed, in the driver's last line
    assert "image 2/3" not in outcome.log  # base builds first; api never started
    assert rig.registry.tags("broken/api") == []
    assert rig.registry.tags("broken/base") == []


def test_a_bake_file_bake_cannot_read_fails_clearly_before_any_build(
    rig: Rig, tmp_path: Path
) -> None:
    root = write_repo(rig, tmp_path / "repo", "RUN echo base > /base.txt")
    outcome = bake_build(rig, root, "unread", LAYERCACHE_BAKE_TARGETS="no-such-target")

    assert not outcome.ok
    assert "docker buildx bake could not read docker-bake.hcl" in outcome.log
    assert "image 1/" not in outcome.log


def test_a_clean_build_rebuilds_every_image_and_refreshes_each_cache(
    rig: Rig, tmp_path: Path
) -> None:
    root = write_repo(rig, tmp_path / "repo", "RUN echo base > /base.txt")
    assert bake_build(rig, root, "clean").ok
    first = rig.registry.digest("clean/api", "cache-main")
    outcome = bake_build(rig, root, "clean", LAYERCACHE_MODE="clean")

    assert outcome.ok, outcome.log[-3000:]
    for image in outcome.report["images"].values():
        assert image["cached_steps"] == 0, image
        assert image["cache_status"] == "clean"
    assert rig.registry.digest("clean/api", "cache-main") != first


def test_a_build_of_the_same_commit_again_leaves_every_images_build_tags_on_the_first(
    rig: Rig, tmp_path: Path
) -> None:
    """A retry after a kill, a Redeliver or a nightly refresh builds the commit again."""
    root = write_repo(rig, tmp_path / "repo", "RUN echo base > /base.txt")
    commit = new_commit()
    first = bake_build(rig, root, "again", commit)
    assert first.ok, first.log[-3000:]
    (root / "tool" / "Dockerfile").write_text(
        (root / "tool" / "Dockerfile").read_text() + "RUN echo again > /again.txt\n"
    )  # a new image for tool
    second = bake_build(rig, root, "again", commit)

    assert second.ok, second.log[-3000:]
    for name, image in first.report["images"].items():
        assert rig.registry.digest(f"again/{name}", commit) == image["digest"]
        assert second.report["images"][name]["tags"] == []  # pushed by digest alone
    assert second.report["images"]["tool"]["digest"] != first.report["images"]["tool"]["digest"]
