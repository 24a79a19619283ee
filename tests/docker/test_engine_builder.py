"""The driver on the engine's own builder (buildx `docker` driver, containerd image store).

The builder a bare Docker host has. With the containerd image store it can export a
registry cache, and the driver works on it unchanged; but it loads every result into
the engine's image store, so even a fully cached rebuild downloads the image's layers.
That is why CodeBuild builds on a standalone BuildKit (docs/build-cache.md).
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from layercache_dev.kit.rig import Rig

pytestmark = pytest.mark.docker

DOCKERFILE = """\
FROM {base} AS builder
RUN dd if=/dev/urandom of=/deps bs=1M count=2 && sleep 1
FROM {base}
RUN dd if=/dev/urandom of=/runtime bs=1M count=3 && sleep 1
COPY --from=builder /deps /deps
"""
_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"engine commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


def test_engine_builder_exports_and_reuses_the_registry_cache(
    engine_rig: Rig, tmp_path: Path
) -> None:
    rig = engine_rig
    context = rig.write_context(tmp_path / "ctx", DOCKERFILE)
    repo = rig.repository("layercache/engine")
    cold = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert cold.ok, cold.log[-3000:]
    assert "cache-main" in rig.registry.tags("layercache/engine")

    mark = rig.registry.mark()
    warm = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert warm.ok, warm.log[-3000:]
    traffic = rig.registry.traffic(since=mark)

    assert warm.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"
    # Every step came from the cache, yet the image's layers came down to the engine.
    assert traffic.downloaded_layer_bytes > 3 * 1024 * 1024, traffic.layer_downloads
