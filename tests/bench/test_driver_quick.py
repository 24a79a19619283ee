"""The driver's own costs in the quick run (docker tier): both measured in the same run,
each as a ratio, with the bytes the registry's log shows."""

from __future__ import annotations

import pytest

from layercache_dev.bench.driver_bench import LEVERS, NO_CACHE
from layercache_dev.kit.driver import build_driver

from .conftest import QuickRun

pytestmark = pytest.mark.docker


def test_the_driver_and_plain_buildx_are_both_timed(quick_run: QuickRun) -> None:
    overhead = quick_run.results.driver["overhead"]

    assert len(overhead["driver_seconds"]) == len(overhead["plain_seconds"]) == 1
    assert overhead["plain_median_seconds"] > 0
    assert overhead["ratio"] == pytest.approx(
        overhead["driver_median_seconds"] / overhead["plain_median_seconds"], rel=1e-3
    )


def test_every_lever_is_measured_against_no_cache(quick_run: QuickRun) -> None:
    levers = quick_run.results.driver["levers"]
    (table,) = levers["tables"]  # the quick run leaves the compressible workload out

    assert levers["chosen"] == build_driver.CACHE_EXPORT_OPTIONS
    rows = {row["lever"]: row for row in table["rows"]}
    assert list(rows) == [lever.name for lever in LEVERS]
    assert rows[NO_CACHE.name]["ratio_to_no_cache"] == 1.0
    assert rows[NO_CACHE.name]["cache_uploaded_bytes"] == 0
    for lever in LEVERS[1:]:
        row = rows[lever.name]
        # The cache repository gets the builder stage's layers and, again, the image's.
        assert row["cache_uploaded_bytes"] > 0, lever
        assert row["uploaded_bytes"] > rows[NO_CACHE.name]["uploaded_bytes"], lever
    markdown = (quick_run.out / "results.md").read_text()
    assert "## The driver's own costs" in markdown
