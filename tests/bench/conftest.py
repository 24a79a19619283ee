"""The benchmark's tests: its throttle and rendering (plain), and a quick run (docker tier).

The quick run needs what the docker tier needs; without it the test skips with the
reason, except under LAYERCACHE_REQUIRE_DOCKER=1 (CI), where it fails instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from layercache_dev.bench.command import Options, run_bench, write_results
from layercache_dev.bench.report import Results
from tests.conftest import require_docker_tier


@dataclass
class QuickRun:
    results: Results
    workdir: Path
    out: Path
    said: list[str]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """`layercache bench --quick` once for the session: tiny image, one run per cell."""
    require_docker_tier("remote")
    workdir = tmp_path_factory.mktemp("bench-work")
    out = tmp_path_factory.mktemp("bench-out")
    said: list[str] = []
    options = Options.quick()
    results = run_bench(options, workdir, said.append)
    write_results(results, out)
    return QuickRun(results, workdir, out, said)
