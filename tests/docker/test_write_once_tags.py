"""Build tags are written once, on a real registry: a refresh of a commit that already
has its image pushes the new image by digest, `<sha>` keeps naming the first one, and
the branch's moving tag can still be moved to the new one (the driver's decisions:
tests/unit/test_build_driver_runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from layercache_dev.kit.rig import Rig

pytestmark = pytest.mark.docker

DOCKERFILE = """\
FROM {base}
ARG LAYERCACHE_REFRESH_DATE
COPY app.txt /app.txt
RUN echo "refreshed on ${LAYERCACHE_REFRESH_DATE:-never}" > /refreshed
"""
COMMIT = "4" * 40


def test_a_refresh_of_a_built_commit_leaves_the_commit_tag_where_it_was(
    rig: Rig, tmp_path: Path
) -> None:
    name = "writeonce/app"
    repo = rig.repository(name)
    context = rig.write_context(tmp_path / "ctx", DOCKERFILE, {"app.txt": "v1\n"})

    first = rig.build(context, repository=repo, branch="main", commit=COMMIT)
    assert first.ok, first.log[-3000:]
    first_digest = first.variables["LAYERCACHE_IMAGE_DIGEST"]
    assert first.variables["LAYERCACHE_IMAGE_TAGS"] == f"{COMMIT},main-{COMMIT[:7]}"

    refresh = rig.build(
        context,
        repository=repo,
        branch="main",
        commit=COMMIT,
        mode="refresh",
        extra_env={"LAYERCACHE_REFRESH_DATE": "2026-12-03"},
    )
    assert refresh.ok, refresh.log[-3000:]
    refreshed = refresh.variables["LAYERCACHE_IMAGE_DIGEST"]
    assert refreshed != first_digest  # the refresh argument changed the last step
    assert refresh.variables.get("LAYERCACHE_IMAGE_TAGS", "") == ""  # none pushed
    assert "build tags are written once" in refresh.log

    # Both build tags still name the first image; the new one is in the registry by digest.
    assert rig.registry.digest(name, COMMIT) == first_digest
    assert rig.registry.digest(name, f"main-{COMMIT[:7]}") == first_digest
    assert rig.registry.manifest(name, refreshed) is not None
    # What the recorder does next: move the branch's tags to the refreshed image.
    for tag in refresh.variables["LAYERCACHE_MOVING_TAGS"].split(","):
        rig.registry.move_tag(name, tag, refreshed)
    assert rig.registry.digest(name, "main") == refreshed
    assert rig.registry.digest(name, COMMIT) == first_digest
