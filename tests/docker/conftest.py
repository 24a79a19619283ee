"""The docker tier: a real engine, a real registry, a standalone BuildKit (see the rig).

Without them the tests skip with the reason, except under LAYERCACHE_REQUIRE_DOCKER=1
(CI), where a missing piece fails the run instead of silently passing it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from layercache_dev.rig import BuilderKind, Rig
from tests.conftest import require_docker_tier


def started_rig(factory: pytest.TempPathFactory, kind: BuilderKind) -> Iterator[Rig]:
    require_docker_tier(kind)
    with Rig(factory.mktemp(f"rig-{kind}"), builder_kind=kind) as rig:
        yield rig


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The CodeBuild stand-in: registry + standalone BuildKit (buildx remote driver)."""
    yield from started_rig(tmp_path_factory, "remote")


@pytest.fixture(scope="session")
def engine_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Registry + the engine's own builder (buildx docker driver)."""
    yield from started_rig(tmp_path_factory, "docker")
