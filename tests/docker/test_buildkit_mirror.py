"""The BuildKit image is copied into the stack's own repository on first use, by digest,
and found there afterwards; registry to registry with `docker buildx imagetools`, as on
CodeBuild (which then runs it with the docker-container driver: no Docker Hub here, so
the builder itself is the unit tests' part, tests/unit/test_build_driver_runs.py)."""

from __future__ import annotations

import pytest

from layercache_dev.kit.driver import build_driver
from layercache_dev.kit.rig import Rig

pytestmark = pytest.mark.docker


def test_the_buildkit_image_is_mirrored_once_then_pulled_from_the_mirror(rig: Rig) -> None:
    # Stand-ins: an "upstream" index pinned by digest (as moby/buildkit is on Docker Hub),
    # and the stack's mirror repository, both in the rig's registry.
    rig.copy_image(rig.base_image, rig.repository("upstream/buildkit:v0.99.0"))
    digest = rig.registry.digest("upstream/buildkit", "v0.99.0")
    assert digest is not None
    upstream = rig.repository(f"upstream/buildkit:v0.99.0@{digest}")
    mirror = rig.repository("stack/buildkit")

    first = build_driver.buildkit_image(rig.docker, upstream, mirror)

    assert first == f"{mirror}@{digest}"  # a carbon copy: the same digest
    tag = f"v0.99.0-{digest.removeprefix('sha256:')[:12]}"
    assert rig.registry.tags("stack/buildkit") == [tag]
    assert rig.registry.digest("stack/buildkit", tag) == digest

    mark = rig.registry.mark()
    later = build_driver.buildkit_image(rig.docker, upstream, mirror)

    assert later == first
    traffic = rig.registry.traffic(since=mark)
    assert traffic.uploads == []  # found, not copied again
    assert traffic.mounts == 0


def test_an_unreachable_mirror_falls_back_to_the_source(rig: Rig) -> None:
    rig.copy_image(rig.base_image, rig.repository("upstream/buildkit:v0.99.1"))
    digest = rig.registry.digest("upstream/buildkit", "v0.99.1")
    upstream = rig.repository(f"upstream/buildkit:v0.99.1@{digest}")

    image = build_driver.buildkit_image(rig.docker, upstream, "127.0.0.1:9/stack/buildkit")

    assert image == upstream
