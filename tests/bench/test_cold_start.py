"""The cold-start figures (each handler's whole-process import against bare boto3) and their
table in the report, from given samples: no timing here, the bench prints the figures."""

from __future__ import annotations

import json
import re

from layercache_dev.bench.overhead import (
    BASELINE_CODE,
    COLD_START_TARGET,
    ProcessSample,
    cold_start_figures,
)
from layercache_dev.bench.report import (
    check_targets,
    results_from_json,
    results_json,
    results_markdown,
)

from .test_report import make_results, printed


def samples(
    wall_ms: list[float], cpu_ms: list[float], alone_ms: list[float]
) -> list[ProcessSample]:
    return [
        ProcessSample(wall / 1000, cpu / 1000, f"some log line\n{alone / 1000}\n")
        for wall, cpu, alone in zip(wall_ms, cpu_ms, alone_ms, strict=True)
    ]


# One sample of each slowed by a loaded machine: the medians leave it out.
BASELINE = samples([600, 610, 590, 2000, 605], [500, 510, 490, 520, 505], [0] * 5)
WEBHOOK = samples([700, 720, 690, 2500, 710], [560, 570, 550, 580, 565], [300, 310, 305, 900, 302])
RECORDER = samples([800, 805, 790, 810, 900], [700, 705, 690, 710, 706], [400, 401, 399, 402, 450])


def figures() -> dict[str, object]:
    return cold_start_figures(
        BASELINE,
        {
            "GitHubWebhookFunction": ("layercache.handlers.github_webhook", WEBHOOK),
            "BuildRecorderFunction": ("layercache.handlers.build_recorder", RECORDER),
        },
    )


def test_ratios_are_of_medians_and_checked_against_the_target() -> None:
    cold_start = figures()
    assert cold_start["runs"] == 5
    assert cold_start["target_ratio"] == COLD_START_TARGET == 1.25
    assert cold_start["baseline"] == {
        "code": BASELINE_CODE,
        "median_ms": 605.0,
        "max_ms": 2000.0,
        "cpu_median_ms": 505.0,
    }
    functions = cold_start["functions"]
    assert isinstance(functions, dict)
    webhook, recorder = functions["GitHubWebhookFunction"], functions["BuildRecorderFunction"]
    assert webhook == {
        "module": "layercache.handlers.github_webhook",
        "median_ms": 710.0,
        "max_ms": 2500.0,
        "cpu_median_ms": 565.0,
        "import_median_ms": 305.0,
        "ratio": round(710 / 605, 3),  # 1.174
        "cpu_ratio": round(565 / 505, 3),  # 1.119
        "met": True,
    }
    assert recorder["median_ms"] == 805.0
    assert recorder["ratio"] == round(805 / 605, 3)  # 1.331
    assert recorder["cpu_ratio"] == round(705 / 505, 3)  # 1.396
    assert recorder["met"] is False


def test_the_report_has_the_cold_start_table_with_ms_and_ratio_per_function() -> None:
    results = make_results()
    results.overhead["cold_start"] = figures()
    markdown = results_markdown(results, check_targets(results))
    assert "### Lambda cold start: whole-process import against bare boto3" in markdown
    assert "median of 5, handlers and baseline interleaved" in markdown
    assert (
        "| function | module | whole process ms | x boto3 | CPU ms | CPU x boto3 | "
        "import alone ms | <= 1.25x |" in markdown
    )
    assert (
        '| bare boto3: `import boto3; boto3.client("dynamodb")` | | 605 | 1.00x | 505 | 1.00x '
        "| - | |" in markdown
    )
    assert (
        "| GitHubWebhookFunction | `layercache.handlers.github_webhook` | 710 | 1.17x | 565 "
        "| 1.12x | 305 | yes |" in markdown
    )
    assert (
        "| BuildRecorderFunction | `layercache.handlers.build_recorder` | 805 | 1.33x | 705 "
        "| 1.40x | 401 | **no** |" in markdown
    )
    # The in-process import table of older results gives way to the whole-process one.
    assert "Import of each function's handler module in a fresh interpreter" not in markdown
    text = printed(results)
    recorder_row = r"BuildRecorderFunction +layercache\.handlers\.build_recorder +805 +1\.33x +705"
    assert re.search(recorder_row + r" +1\.40x +401 +no", text)


def test_results_json_carries_the_cold_start_and_renders_again() -> None:
    results = make_results()
    results.overhead["cold_start"] = figures()
    targets = check_targets(results)
    document = json.loads(json.dumps(results_json(results, targets)))
    cold_start = document["overhead"]["cold_start"]
    assert cold_start["functions"]["BuildRecorderFunction"]["ratio"] == 1.331
    assert cold_start["baseline"]["median_ms"] == 605.0
    again = results_from_json(document)
    assert results_markdown(again, check_targets(again)) == results_markdown(results, targets)


def test_results_from_before_the_whole_process_measurement_keep_their_import_table() -> None:
    results = make_results()  # overhead["imports"] only, as runs before wrote it
    markdown = results_markdown(results, check_targets(results))
    assert "Lambda cold start" not in markdown
    assert "Import of each function's handler module in a fresh interpreter" in markdown
    assert "| GitHubWebhookFunction | `layercache.handlers.github_webhook` | 450 | 471 | 10 |" in (
        markdown
    )
