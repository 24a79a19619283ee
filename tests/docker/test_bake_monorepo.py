"""Several images from one repository, through the real buildspec and driver.

The sample monorepo (layercache_dev.kit.monorepo, which the demo's monorepo scene
builds too) declares, in a Bake file, a base image, two images built on it (`FROM base`,
with `contexts = { base = "target:base" }`) and one independent image.
Every build runs on an emptied builder, as on a fresh CodeBuild host; the registry's
log tells which layers moved.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.monorepo import (
    BAKE_FILE_NAME,
    LAYER_BYTES,
    STEPS_PER_IMAGE,
    write_monorepo,
)
from layercache_dev.kit.rig import Rig

pytestmark = pytest.mark.docker

PREFIX = "mono"
ATTESTATION_BYTES = 16 * 1024
_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"monorepo commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


def bake_build(rig: Rig, root: Path, *, branch: str, commit: str) -> BuildOutcome:
    outcome = rig.build(
        root,
        repository=rig.repository(PREFIX),
        branch=branch,
        commit=commit,
        extra_env={"LAYERCACHE_BAKE_FILE": BAKE_FILE_NAME, "LAYERCACHE_BAKE_TARGETS": ""},
    )
    assert outcome.ok, outcome.log[-4000:]
    return outcome


def images_of(outcome: BuildOutcome) -> dict[str, dict[str, Any]]:
    results = json.loads(outcome.variables["LAYERCACHE_IMAGES"])
    return {result["image"]: result for result in results}


def fully_cached(result: dict[str, Any]) -> bool:
    return bool(result["total_steps"] > 0 and result["cached_steps"] == result["total_steps"])


@pytest.fixture(scope="module")
def main_built(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildOutcome]:
    root = write_monorepo(rig, tmp_path_factory.mktemp("monorepo"))
    return root, bake_build(rig, root, branch="main", commit=new_commit())


def test_each_image_goes_to_its_own_repository_with_its_own_tags_and_cache(
    rig: Rig, main_built: tuple[Path, BuildOutcome]
) -> None:
    _, outcome = main_built
    results = images_of(outcome)
    assert list(results) == ["base", "tool", "api", "worker"]  # each after what it is built on
    assert results["api"]["built_on"] == ["base"]
    assert results["tool"]["built_on"] == []
    commit = results["base"]["tags"][0]
    for image, result in results.items():
        name = f"{PREFIX}/{image}"
        assert result["repository"] == rig.repository(name)
        assert result["tags"] == [commit, f"main-{commit[:7]}"]
        assert result["moving_tags"] == ["main", "latest"]
        assert rig.registry.digest(name, commit) == result["digest"]
        assert rig.registry.digest(name, "cache-main") is not None  # its own cache ref
        # its own steps, not its base's again
        assert result["total_steps"] == STEPS_PER_IMAGE, result
    # The Bake file's own tags are not where layercache publishes.
    assert rig.registry.tags(f"{PREFIX}/worker") == sorted(
        [commit, f"main-{commit[:7]}", "cache-main"]
    )
    variables = outcome.variables
    assert variables["LAYERCACHE_TOTAL_STEPS"] == "8"
    assert not variables.get("LAYERCACHE_IMAGE_DIGEST")  # one per image, in LAYERCACHE_IMAGES
    assert variables["LAYERCACHE_MOVING_TAGS"] == "main,latest"


def test_a_change_to_one_image_rebuilds_only_that_image(
    rig: Rig, main_built: tuple[Path, BuildOutcome]
) -> None:
    root, _ = main_built
    (root / "tool/src/main.txt").write_text("tool v2\n")
    mark = rig.registry.mark()
    outcome = bake_build(rig, root, branch="main", commit=new_commit())
    traffic = rig.registry.traffic(since=mark)

    results = images_of(outcome)
    assert not fully_cached(results["tool"]), results["tool"]
    assert results["tool"]["cached_steps"] == 1  # the RUN before the changed COPY
    for image in ("base", "api", "worker"):
        assert fully_cached(results[image]), outcome.report["images"][image]["steps"]
    # Only the tool's layers moved: the layer its changed step runs on came down, its
    # new layer went up. The other images moved no layer (a build's provenance
    # attestation, a few hundred bytes, is all they upload).
    moved: dict[str, int] = {}
    for blob in traffic.layer_downloads + traffic.uploads:
        if blob.digest in traffic.layer_digests:
            moved[blob.repository] = moved.get(blob.repository, 0) + blob.size
    assert moved.pop(f"{PREFIX}/tool") >= 2 * LAYER_BYTES, moved
    assert all(size < ATTESTATION_BYTES for size in moved.values()), moved


def test_a_change_to_the_base_rebuilds_the_images_built_on_it(
    rig: Rig, main_built: tuple[Path, BuildOutcome]
) -> None:
    root, _ = main_built
    (root / "base/src/main.txt").write_text("base v2\n")
    outcome = bake_build(rig, root, branch="main", commit=new_commit())

    results = images_of(outcome)
    assert results["base"]["cached_steps"] == 1  # its RUN; the changed COPY rebuilt
    for image in ("api", "worker"):  # on the new base: every own step again
        assert results[image]["cached_steps"] == 0, results[image]
    assert fully_cached(results["tool"]), results["tool"]
    # The dependents' images are built on the base's new layers.
    base_layers = layer_digests(rig, "base", results["base"]["digest"])
    for image in ("api", "worker"):
        layers = layer_digests(rig, image, results[image]["digest"])
        assert layers[: len(base_layers)] == base_layers


def test_a_new_branch_starts_warm_for_every_image_from_the_default_branch(
    rig: Rig, main_built: tuple[Path, BuildOutcome]
) -> None:
    root, _ = main_built
    bake_build(rig, root, branch="main", commit=new_commit())  # main's caches up to date
    outcome = bake_build(rig, root, branch="feature-x", commit=new_commit())

    for image, result in images_of(outcome).items():
        assert fully_cached(result), result
        assert result["cache_ref_hit"] == rig.repository(f"{PREFIX}/{image}") + ":cache-main"
        assert rig.registry.digest(f"{PREFIX}/{image}", "cache-feature-x") is not None


def layer_digests(rig: Rig, image: str, digest: str) -> list[str]:
    """The layers of the image `digest` (an index: its linux/amd64 manifest's layers)."""
    manifest = rig.registry.manifest(f"{PREFIX}/{image}", digest)
    assert manifest is not None
    for entry in manifest.get("manifests", []):
        if entry.get("platform", {}).get("architecture") == "amd64":
            manifest = rig.registry.manifest(f"{PREFIX}/{image}", entry["digest"])
            assert manifest is not None
            break
    return [layer["digest"] for layer in manifest["layers"]]
