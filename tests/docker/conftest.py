"""The docker tier: a real engine, a real registry, a standalone BuildKit (see the rig).

Without them the tests skip with the reason, except under LAYERCACHE_REQUIRE_DOCKER=1
(CI), where a missing piece fails the run instead of silently passing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from layercache_dev.rig import Rig, missing_prerequisites


def _require_docker() -> bool:
    return os.environ.get("LAYERCACHE_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    missing = missing_prerequisites("remote")
    if missing:
        reason = "docker tier: " + "; ".join(missing) + " (run .ci/setup-docker as root)"
        if _require_docker():
            pytest.fail(reason + " and LAYERCACHE_REQUIRE_DOCKER=1", pytrace=False)
        pytest.skip(reason)
    with Rig(tmp_path_factory.mktemp("rig"), builder_kind="remote") as started:
        yield started
