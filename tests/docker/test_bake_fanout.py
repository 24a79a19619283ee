"""A fan-out batch on the rig: each build of the batch on a host of its own.

CodeBuild runs a batch's builds on hosts of their own, each build after the builds it
`depend-on`s. Here each build runs the real buildspec and driver with its share's
variables (LAYERCACHE_FANOUT_IMAGES, _PLANNED, _NEWCOMERS) on an emptied builder (a fresh
host, no local cache), one after another in the plan's order (every image after the
images it is built on). The plan is what the starter plans from: the images of the
last build, with their `built_on`.

The sample is the monorepo's shape (a base, two images built on it, one independent
image), with images that build their own source in a stage of their own, as many do,
and copy the result onto the base: a change of the base then leaves their own steps
cached, and the base's step that writes random bytes tells whose layers they are.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.monorepo import BAKE_FILE, BAKE_FILE_NAME, source_path, write_tree
from layercache_dev.kit.registry import RegistryTraffic
from layercache_dev.kit.rig import Rig

pytestmark = pytest.mark.docker

PREFIX = "fan"
LAYER_BYTES = 262144
ATTESTATION_BYTES = 16 * 1024


def own_stage(image: str) -> str:
    """An image that builds its source in a stage of its own and copies it onto the base."""
    return (
        "FROM {base} AS build\n"
        "COPY src/ /src/\n"
        f"RUN cat /src/main.txt > /{image}.bin"
        f" && head -c {LAYER_BYTES} /dev/urandom >> /{image}.bin\n"
        "FROM base\n"
        f"COPY --from=build /{image}.bin /{image}.bin\n"
    )


DOCKERFILES = {
    "base": (
        "FROM {base}\nCOPY src/ /base-src/\n"
        "RUN cat /base-src/main.txt > /base.txt"
        f" && head -c {LAYER_BYTES} /dev/urandom > /base.bin\n"
    ),
    "api": own_stage("api"),
    "worker": own_stage("worker"),
    "cron": own_stage("cron"),
    "tool": (
        f"FROM {{base}}\nCOPY src/ /tool-src/\nRUN head -c {LAYER_BYTES} /dev/urandom > /tool.bin\n"
    ),
}
# The sample's Bake file, with `cron` added (built on base) and `worker` gone.
CHANGED_BAKE_FILE = """\
group "default" {
  targets = ["base", "api", "tool", "cron"]
}
target "base" {
  context = "base"
}
target "api" {
  context = "api"
  contexts = { base = "target:base" }
}
target "cron" {
  context = "cron"
  contexts = { base = "target:base" }
}
target "tool" {
  context = "tool"
}
"""
_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"fan-out commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


def write_sample(rig: Rig, root: Path) -> Path:
    files = {BAKE_FILE_NAME: BAKE_FILE}
    for image, dockerfile in DOCKERFILES.items():
        files[f"{image}/Dockerfile"] = dockerfile
        files[source_path(image)] = f"{image} v1\n"
    root.mkdir(parents=True, exist_ok=True)
    return write_tree(rig, root, files)


@dataclass
class Child:
    """One build of the batch: what the buildspec exported, and what moved meanwhile."""

    outcome: BuildOutcome
    traffic: RegistryTraffic

    @property
    def images(self) -> dict[str, dict[str, Any]]:
        results = json.loads(self.outcome.variables["LAYERCACHE_IMAGES"])
        return {result["image"]: result for result in results}

    def moved(self) -> dict[str, int]:
        """Layer bytes downloaded or uploaded, per repository."""
        moved: dict[str, int] = {}
        for blob in self.traffic.layer_downloads + self.traffic.uploads:
            if blob.digest in self.traffic.layer_digests:
                moved[blob.repository] = moved.get(blob.repository, 0) + blob.size
        return moved


def bake_env(**fanout: str) -> dict[str, str]:
    return {"LAYERCACHE_BAKE_FILE": BAKE_FILE_NAME, "LAYERCACHE_BAKE_TARGETS": "", **fanout}


def child(
    rig: Rig,
    root: Path,
    commit: str,
    share: Sequence[str],
    planned: Sequence[str],
    *,
    newcomers: bool,
) -> Child:
    """One build of the batch, on an emptied builder (`Rig.build` empties it first)."""
    mark = rig.registry.mark()
    outcome = rig.build(
        root,
        repository=rig.repository(PREFIX),
        branch="main",
        commit=commit,
        extra_env=bake_env(
            LAYERCACHE_FANOUT_IMAGES=",".join(share),
            LAYERCACHE_FANOUT_PLANNED=",".join(planned),
            LAYERCACHE_FANOUT_NEWCOMERS="true" if newcomers else "false",
        ),
    )
    assert outcome.ok, outcome.log[-4000:]
    return Child(outcome, rig.registry.traffic(since=mark))


def batch(rig: Rig, root: Path, planned: Sequence[str]) -> dict[str, Child]:
    """One build per planned image, each after the builds of what it is built on (the
    plan is in build order), the first building the newcomers too, as the starter plans
    a batch (functions/layercache/starting/fan_out.py)."""
    commit = new_commit()
    return {
        image: child(rig, root, commit, [image], planned, newcomers=image == planned[0])
        for image in planned
    }


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


@dataclass
class Sample:
    root: Path
    single_host_steps: dict[str, int]  # each image's step count when one host builds all
    first: Child  # the first batch's one build: no plan, so every image is a newcomer

    @property
    def plan(self) -> list[str]:
        """What the next batch is planned from: the first batch's images, in build order."""
        return list(self.first.images)


@pytest.fixture(scope="module")
def sample(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """The sample built by one host (the reference counts), then by a first batch."""
    single = write_sample(rig, tmp_path_factory.mktemp("single-host"))
    reference = rig.build(
        single,
        repository=rig.repository(f"{PREFIX}-single"),
        branch="main",
        commit=new_commit(),
        extra_env=bake_env(),
    )
    assert reference.ok, reference.log[-4000:]
    steps = {
        result["image"]: result["total_steps"]
        for result in json.loads(reference.variables["LAYERCACHE_IMAGES"])
    }
    root = write_sample(rig, tmp_path_factory.mktemp("fan-out"))
    return Sample(root, steps, child(rig, root, new_commit(), [], [], newcomers=True))


def test_the_first_batch_builds_every_image_in_its_newcomers_build(
    rig: Rig, sample: Sample
) -> None:
    images = sample.first.images
    assert list(images) == ["base", "tool", "api", "worker"]  # in build order
    assert images["api"]["built_on"] == ["base"]  # the plan of the next batch
    assert {name: result["total_steps"] for name, result in images.items()} == (
        sample.single_host_steps
    )
    assert sample.single_host_steps == {"base": 2, "tool": 2, "api": 3, "worker": 3}
    for image in images:
        assert rig.registry.digest(f"{PREFIX}/{image}", "cache-main") is not None
    assert sample.first.outcome.report["fanout"]["newcomers"] is True


def test_a_changed_base_is_rebuilt_once_and_its_dependents_find_its_new_steps(
    rig: Rig, sample: Sample
) -> None:
    # Right after the first batch, which ran every stage: after a batch in which an image's
    # own stage was all cached, BuildKit may leave that stage out of the image's mode=max
    # cache export (moby/buildkit#6893; seen on the rig's BuildKit with or without the bases' refs).
    (sample.root / source_path("base")).write_text("base v2\n")
    children = batch(rig, sample.root, sample.plan)

    base = children["base"].images["base"]
    assert base["cached_steps"] == 0  # its COPY changed, and the RUN after it
    base_layers = layer_digests(rig, "base", base["digest"])
    for image in ("api", "worker"):
        result = children[image].images[image]
        report = children[image].outcome.report["images"][image]
        assert rig.repository(f"{PREFIX}/base") + ":cache-main" in report["imported_refs"]
        # Its own stage came from its own cache; only the copy onto the new base ran.
        cached = {step["name"]: step["cached"] for step in report["steps"]}
        assert sorted(cached.values()) == [False, True, True], cached
        assert not next(v for name, v in cached.items() if "COPY --from=build" in name), cached
        assert result["total_steps"] == sample.single_host_steps[image]
        # On the base's new layers, random bytes included: read from the base's cache,
        # not built again on this host.
        layers = layer_digests(rig, image, result["digest"])
        assert layers[: len(base_layers)] == base_layers
    tool = children["tool"].images["tool"]
    assert tool["cached_steps"] == tool["total_steps"]


def test_an_unchanged_batch_takes_every_step_from_the_caches_and_moves_no_layer(
    rig: Rig, sample: Sample
) -> None:
    children = batch(rig, sample.root, sample.plan)

    for image, built in children.items():
        (result,) = built.images.values()  # each build publishes its share only
        assert result["image"] == image
        assert result["cached_steps"] == result["total_steps"], built.outcome.report
        # Counted as one host counts: a dependent leaves its base's steps out.
        assert result["total_steps"] == sample.single_host_steps[image]
        # No layer moved: the attestation's few hundred bytes are all a build uploads.
        assert all(size < ATTESTATION_BYTES for size in built.moved().values()), built.moved()
    api = children["api"].outcome.report["images"]["api"]
    assert rig.repository(f"{PREFIX}/base") + ":cache-main" in api["imported_refs"]
    assert api["cache_ref_hit"] == rig.repository(f"{PREFIX}/api") + ":cache-main"
    assert "learning the steps of base" in children["api"].outcome.log


def test_a_target_added_goes_to_the_newcomers_build_and_one_removed_is_skipped(
    rig: Rig, sample: Sample
) -> None:
    (sample.root / BAKE_FILE_NAME).write_text(CHANGED_BAKE_FILE)
    children = batch(rig, sample.root, sample.plan)

    assert list(children["base"].images) == ["base", "cron"]  # its share, then the newcomer
    cron = children["base"].images["cron"]
    assert cron["built_on"] == ["base"]
    assert cron["total_steps"] == sample.single_host_steps["api"]  # its own: api's shape
    assert cron["cached_steps"] == 0
    assert rig.registry.digest(f"{PREFIX}/cron", cron["digest"]) is not None
    gone = children["worker"]
    assert gone.outcome.variables["LAYERCACHE_IMAGES"] == "[]"
    assert gone.outcome.report["fanout"]["skipped"] == ["worker"]
    assert "worker is in this build's share but not in the Bake file: skipped" in gone.outcome.log
    assert list(children["api"].images) == ["api"]
