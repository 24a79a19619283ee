"""The cache as the driver exports it (`build_driver.CACHE_EXPORT_OPTIONS`), into a cache
repository of its own as the stack keeps it: compressed as the options say, and read
back whole by the next build on an emptied builder."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import pytest

from layercache_dev.kit.driver import build_driver
from layercache_dev.kit.rig import SAMPLE_DOCKERFILE, Rig

pytestmark = pytest.mark.docker

_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"export commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


def compression_of(media_type: str) -> str:
    """`application/vnd.oci.image.layer.v1.tar+zstd` -> `zstd`; a bare tar -> `uncompressed`."""
    return media_type.rpartition("+")[2] if "+" in media_type else "uncompressed"


def option(name: str) -> str:
    parts = [part.partition("=") for part in build_driver.CACHE_EXPORT_OPTIONS.split(",")]
    return next((value for key, _, value in parts if key == name), "")


def image_layers(rig: Rig, name: str, tag: str) -> dict[str, str]:
    """digest -> media type of the image's layers (of its one platform manifest)."""
    manifest: dict[str, Any] = rig.registry.manifest(name, tag) or {}
    for entry in manifest.get("manifests") or []:
        if (entry.get("platform") or {}).get("os") != "unknown":  # not the attestation
            manifest = rig.registry.manifest(name, entry["digest"]) or {}
            break
    return {layer["digest"]: layer["mediaType"] for layer in manifest.get("layers") or []}


def test_the_exported_cache_is_compressed_as_asked_and_read_back_whole(
    rig: Rig, tmp_path: Path
) -> None:
    context = rig.write_context(tmp_path / "ctx", SAMPLE_DOCKERFILE, {"src/app.txt": "v1\n"})
    name = "layercache/export-options"
    repo, cache_repo = rig.repository(name), rig.repository(f"{name}-cache")
    env = {"LAYERCACHE_CACHE_REPOSITORY_URI": cache_repo}
    commit = new_commit()

    cold = rig.build(context, repository=repo, branch="main", commit=commit, extra_env=env)

    assert cold.ok, cold.log[-4000:]
    cache = rig.registry.manifest(f"{name}-cache", "cache-main")
    assert cache is not None
    image = image_layers(rig, name, commit)
    # The image's layers are shared with the cache as they were pushed (gzip); the layers
    # only the cache holds (the builder stage's) take the compression the options name.
    cache_only = {
        compression_of(layer["mediaType"])
        for layer in cache["layers"]
        if layer["digest"] not in image
    }
    assert cache_only == {option("compression") or "gzip"}
    if option("force-compression") != "true":
        assert {compression_of(media_type) for media_type in image.values()} == {"gzip"}
        assert set(image) <= {layer["digest"] for layer in cache["layers"]}

    warm = rig.build(context, repository=repo, branch="main", commit=new_commit(), extra_env=env)

    assert warm.ok, warm.log[-4000:]
    assert all(step["cached"] for step in warm.steps), warm.steps
    assert warm.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"
    assert warm.variables["LAYERCACHE_CACHE_REF_HIT"] == f"{cache_repo}:cache-main"
