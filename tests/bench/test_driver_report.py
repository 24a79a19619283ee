"""The report's tables of the driver's own costs (bench.driver_bench), from given figures:
the driver against plain buildx, and the cold build per cache export lever."""

from __future__ import annotations

import json
from typing import Any

from layercache_dev.bench.driver_bench import LEVERS, NO_CACHE, OPTIONS_BEFORE, levers_with_ours
from layercache_dev.bench.report import (
    Results,
    TextTable,
    check_targets,
    report_blocks,
    results_from_json,
    results_json,
    results_markdown,
)
from layercache_dev.kit.driver import build_driver

CHOSEN = OPTIONS_BEFORE + ",compression=zstd"  # the figures' choice, whatever the driver's


def lever_row(
    lever: str, cache_to: str | None, seconds: float, ratio: float | None
) -> dict[str, Any]:
    return {
        "lever": lever, "cache_to": cache_to, "seconds": seconds, "ratio_to_no_cache": ratio,
        "uploaded_bytes": 272_200_000 if cache_to else 101_100_000,
        "cache_uploaded_bytes": 171_100_000 if cache_to else 0, "mounts": 0, "runs": [],
    }  # fmt: skip


DRIVER = {
    "overhead": {
        "runs": 3, "size_mb": 100.0, "driver_seconds": [0.9, 0.8, 0.85],
        "plain_seconds": [0.8, 0.78, 0.79], "driver_median_seconds": 0.85,
        "plain_median_seconds": 0.79, "difference_seconds": 0.06, "ratio": 1.0759,
        "python_median_seconds": 0.05,
    },
    "levers": {
        "size_mb": 100.0, "work_seconds": 10.0, "runs": 3, "compressible_share": 1.0,
        "chosen": CHOSEN,
        "tables": [
            {
                "workload": "random bytes",
                "rows": [
                    lever_row("no cache", None, 25.0, 1.0),
                    lever_row("gzip (before)", OPTIONS_BEFORE, 40.0, 1.6),
                    lever_row("the driver's", CHOSEN, 27.0, 1.08),
                ],
            },
        ],
    },
}  # fmt: skip


def results() -> Results:
    meta = {
        "date": "2026-12-03 19:00 UTC", "machine": "2 cores", "rate_bytes_per_second": 50e6,
        "size_mb": 100.0, "work_seconds": 10.0, "runs": 3, "steps": 12, "total_seconds": 600.0,
    }  # fmt: skip
    return Results(meta, [], 0, 0.0, driver=json.loads(json.dumps(DRIVER)))


def tables() -> list[TextTable]:
    return [b for b in report_blocks(results(), []) if isinstance(b, TextTable)]


def test_the_driver_against_plain_buildx_as_seconds_difference_and_ratio() -> None:
    overhead, _ = tables()

    assert overhead.header[:5] == ["", "driver s", "plain buildx s", "difference s", "ratio"]
    assert overhead.rows == [
        ["unchanged rebuild", "0.85", "0.79", "+0.06", "1.08x", "<= +0.1 s", "yes"]
    ]


def test_each_lever_against_no_cache_the_drivers_in_bold() -> None:
    _, levers = tables()

    assert [row[0] for row in levers.rows] == ["no cache", "gzip (before)", "**the driver's**"]
    assert [row[2] for row in levers.rows] == ["1.00x", "1.60x", "1.08x"]
    assert [row[-1] for row in levers.rows] == ["-", "no", "yes"]
    assert levers.rows[1][3:5] == ["272.2 MB", "171.1 MB"]


def test_a_missed_target_is_marked() -> None:
    slow = results()
    slow.driver["overhead"]["difference_seconds"] = 0.26
    overhead = next(b for b in report_blocks(slow, []) if isinstance(b, TextTable))

    assert overhead.rows[0][-1] == "**no**"


def test_the_figures_survive_the_json_and_render_in_markdown() -> None:
    again = results_from_json(json.loads(json.dumps(results_json(results(), []))))

    assert again.driver == DRIVER
    markdown = results_markdown(again, check_targets(again))
    assert "## The driver's own costs" in markdown
    assert "| unchanged rebuild | 0.85 | 0.79 | +0.06 | 1.08x |" in markdown
    assert "Of the difference, 0.05 s (median) is the interpreter starting" in markdown
    assert "| gzip (before) | 40.0 | 1.60x | 272.2 MB | 171.1 MB | 0 | no |" in markdown


def test_the_drivers_options_are_always_among_the_levers() -> None:
    levers = levers_with_ours()

    assert levers[0] == NO_CACHE
    assert [lever for lever in levers if lever.cache_to == build_driver.CACHE_EXPORT_OPTIONS]
    assert levers[: len(LEVERS)] == list(LEVERS)
