"""Rendering the results: the tables (markdown and terminal), the ratios, the targets, the JSON.
The chart has tests of its own (test_chart.py)."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from rich.console import Console

from layercache_dev.bench.builds import STRATEGIES, Cell, Run, Strategy
from layercache_dev.bench.report import (
    Results,
    TextTable,
    check_targets,
    human_bytes,
    markdown_table,
    results_from_json,
    results_json,
    results_markdown,
    terminal_report,
    terminal_text,
)
from layercache_dev.bench.workload import SCENARIOS, Scenario

IMAGE = 300_000_000
# Median wall seconds per (strategy, scenario); the three runs are value-1, value, value+5.
SECONDS = {
    Strategy.NO_CACHE: [40.0, 40.0, 40.0, 40.0, 40.0],
    Strategy.SEED: [42.0, 10.0, 30.0, 32.0, 36.0],
    Strategy.INLINE: [42.0, 2.0, 25.0, 27.0, 33.0],
    Strategy.REGISTRY: [50.0, 1.5, 14.0, 10.0, 20.0],
    Strategy.WARM: [40.0, 0.5, 10.5, 8.0, 18.0],
    Strategy.WARM_TIER: [50.0, 0.6, 11.0, 8.5, 18.5],
    Strategy.WARM_TIER_RECYCLED: [50.0, 1.5, 14.0, 10.0, 20.0],
}


def run(seconds: float, down: int, up: int) -> Run:
    return Run(
        seconds=seconds, downloaded_bytes=down, uploaded_bytes=up, blob_downloads=1,
        blob_uploads=1, log_start=0, log_end=10, proxy_bytes_down=down, proxy_bytes_up=up,
        cached_steps=6, total_steps=12, repository="bench/x/y-1",
    )  # fmt: skip


def make_results() -> Results:
    cells = []
    for strategy in STRATEGIES:
        for scenario, seconds in zip(SCENARIOS, SECONDS[strategy], strict=True):
            down = IMAGE if strategy is Strategy.SEED else 1_000
            cell = Cell(strategy, scenario)
            cell.runs = [run(seconds - 1, down, 5), run(seconds, down, 7)]
            cell.runs.append(run(seconds + 5, down, 9))
            cells.append(cell)
    meta = {
        "date": "2026-11-29 15:00 UTC", "machine": "2 cores (AMD EPYC)",
        "rate_bytes_per_second": 50e6, "size_mb": 300.0, "work_seconds": 20.0, "runs": 3,
        "steps": 12, "total_seconds": 1500.0, "registry_log": "/tmp/registry.log",
    }  # fmt: skip
    overhead = {
        "imports": {
            "GitHubWebhookFunction": {
                "module": "layercache.handlers.github_webhook", "median_ms": 450.2,
                "max_ms": 470.9, "runs": 10,
            }
        },
        "webhook": {
            "iterations": 500, "median_ms": 3.5, "p99_ms": 6.25, "max_ms": 8.0,
            "own_median_ms": 1.5, "own_p99_ms": 2.0, "first_call_ms": 12.0,
            "aws_calls_per_delivery": 1.0, "aws_calls_by_operation": {"sqs:SendMessage": 1.0},
            "until_start_build": {"median_ms": 25.0, "p99_ms": 60.5, "max_ms": 70.0},
            "starter": {
                "median_ms": 60.0, "p99_ms": 200.0, "max_ms": 230.0, "own_median_ms": 10.0,
                "own_p99_ms": 30.0, "first_call_ms": 45.0, "aws_calls_per_request": 8.0,
                "aws_calls_by_operation": {"codebuild:StartBuild": 1.0, "dynamodb:GetItem": 2.0},
            },
            "throttled": {
                "deliveries": 50, "refusals_per_build": 3, "start_build_calls_per_build": 4.0,
                "starter_invocations_per_request": 1.0,
                "answer": {"median_ms": 3.25, "p99_ms": 7.0, "max_ms": 7.0},
                "until_start_build": {"median_ms": 2400.0, "p99_ms": 5100.0, "max_ms": 5100.0},
                "starter": {"median_ms": 2450.0, "p99_ms": 5150.0, "max_ms": 5150.0},
            },
        },
        "pruner": {
            "plain": {"images": 10000, "median_ms": 110.0, "runs": 5, "kept": 422,
                      "planned_deletions": 9578},
            "moto": {"images": 10000, "seconds": 7.4, "aws_calls": 60, "kept": 422,
                     "planned_deletions": 9578, "seeding_seconds": 50.0,
                     "aws_calls_by_operation": {"ecr:BatchGetImage": 50, "ecr:DescribeImages": 10}},
        },
    }  # fmt: skip
    return Results(meta, cells, IMAGE, builder_cached_seconds=10.0, overhead=overhead)


def test_cell_medians_and_ratios() -> None:
    results = make_results()
    ours = results.cell(Strategy.REGISTRY, Scenario.UNCHANGED)
    assert ours.seconds == 1.5
    assert ours.uploaded_bytes == 7
    assert results.ratio_to_cold(ours) == pytest.approx(1.5 / 40)
    assert results.ratio_to_seed(ours) == pytest.approx(0.15)


def test_targets_met_and_missed() -> None:
    targets = {t.name: t for t in check_targets(make_results())}
    assert targets["unchanged rebuild vs cold"].met  # 1.5 / 40 = 3.75 %
    assert targets["unchanged rebuild vs the seed"].met  # 0.15x
    assert targets["unchanged rebuild downloads"].met  # 1 KB of 300 MB
    halfway = targets["change halfway vs warm local builder"]
    assert not halfway.met  # 14 / 10.5
    assert "1.33x" in halfway.measured
    builder = targets["builder-stage change vs the seed"]
    assert builder.met  # 32 - 10 = 22 s saved >= 10 s cached
    assert "22.0 s faster" in builder.measured


def test_targets_need_their_cells() -> None:
    results = make_results()
    results.cells = [c for c in results.cells if c.strategy is not Strategy.WARM]
    assert check_targets(results) == []


def test_markdown_states_machine_rate_and_every_cell() -> None:
    results = make_results()
    markdown = results_markdown(results, check_targets(results))
    assert "2 cores (AMD EPYC)" in markdown
    assert "50 MB/s each way" in markdown
    assert "| unchanged | 40.0 | 10.0 | 2.0 | 1.5 | 0.5 |" in markdown
    assert "| unchanged | registry | 1.5 | 0.04x | 0.15x | 1.0 KB | 7 B | 6/12 |" in markdown
    assert "| change halfway vs warm local builder |" in markdown
    assert "| whole call, moto's AWS included | 3.5 | 6.2 |" in markdown
    assert "1 AWS call per delivery (sqs:SendMessage 1)" in markdown
    assert "60 (ecr:BatchGetImage 50, ecr:DescribeImages 10)" in markdown
    for scenario in SCENARIOS:
        assert markdown.count(f"| {scenario} | ") == 1 + len(STRATEGIES)


def test_webhook_answer_beside_the_time_until_start_build() -> None:
    results = make_results()
    markdown = results_markdown(results, check_targets(results))
    assert "| StartBuild accepted at once | 500 | 3.5 / 6.2 | 25.0 / 60.5 | 60.0 / 200.0 |" in (
        markdown
    )
    assert (
        "| StartBuild throttled, 3 refusals per build | 50 | 3.2 / 7.0 | 2400.0 / 5100.0 | "
        "2450.0 / 5150.0 |" in markdown
    )
    assert "8 AWS calls per request (codebuild:StartBuild 1, dynamodb:GetItem 2)" in markdown
    assert "4 StartBuild calls per build in 1 invocation(s) per request" in markdown


def test_results_from_before_the_queue_render_as_they_were() -> None:
    """A results.json whose webhook started the build itself has no time until StartBuild."""
    results = make_results()
    results.overhead["webhook"] = {
        "iterations": 500, "median_ms": 35.5, "p99_ms": 60.25, "max_ms": 80.0,
        "own_median_ms": 6.5, "own_p99_ms": 9.0, "first_call_ms": 70.0,
        "aws_calls_per_delivery": 6.0,
        "aws_calls_by_operation": {"codebuild:StartBuild": 1.0, "dynamodb:PutItem": 2.0},
    }  # fmt: skip
    markdown = results_markdown(results, check_targets(results))
    assert "500 deliveries that each start a build (signature, decision, claim," in markdown
    assert "| whole call, moto's AWS included | 35.5 | 60.2 |" in markdown
    assert "6 AWS calls per delivery (codebuild:StartBuild 1, dynamodb:PutItem 2)" in markdown
    assert "until StartBuild" not in markdown


def test_an_overhead_measured_apart_says_when() -> None:
    results = make_results()
    assert "in a run of its own" not in results_markdown(results, [])
    results.meta["overhead_date"] = "2026-12-02 18:35 UTC"
    markdown = results_markdown(results, [])
    assert "Measured 2026-12-02 18:35 UTC, in a run of its own." in markdown


def test_json_round_trips() -> None:
    results = make_results()
    document = json.loads(json.dumps(results_json(results, check_targets(results))))
    assert len(document["cells"]) == len(STRATEGIES) * len(SCENARIOS)
    cell = next(
        c
        for c in document["cells"]
        if c["strategy"] == str(Strategy.SEED) and c["scenario"] == str(Scenario.HALFWAY)
    )
    assert cell["median_seconds"] == 30.0
    assert cell["ratio_to_seed"] == 1.0
    assert cell["ratio_to_cold"] == 0.75
    assert cell["median_downloaded_bytes"] == IMAGE
    assert [r["seconds"] for r in cell["runs"]] == [29.0, 30.0, 35.0]
    assert document["targets"][0]["name"] == "unchanged rebuild vs cold"


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1_500) == "1.5 KB"
    assert human_bytes(314_572_800) == "314.6 MB"


def test_results_render_again_from_their_json() -> None:
    results = make_results()
    targets = check_targets(results)
    document = json.loads(json.dumps(results_json(results, targets)))
    again = results_from_json(document)
    assert results_markdown(again, check_targets(again)) == results_markdown(results, targets)


def test_a_markdown_table_aligns_figures_right_and_leaves_a_blank_heading_blank() -> None:
    table = TextTable(["", "median ms", "p99 ms"], [["whole call", "3.5", "6.2"]])
    assert markdown_table(table) == (
        "| | median ms | p99 ms |\n| --- | ---: | ---: |\n| whole call | 3.5 | 6.2 |"
    )


def test_markdown_emphasis_and_code_become_terminal_styles() -> None:
    text = terminal_text("`make_plan` on plain data, **no**")
    assert text.plain == "make_plan on plain data, no"
    assert [(span.start, span.end, span.style) for span in text.spans] == [
        (0, 9, "markdown.code"),
        (25, 27, "markdown.strong"),
    ]


def printed(results: Results, width: int = 200) -> str:
    out = StringIO()
    console = Console(file=out, width=width)  # not a terminal: no colour
    for renderable in terminal_report(results, check_targets(results)):
        console.print(renderable)
    return out.getvalue()


def test_the_terminal_report_draws_every_table_without_markup_or_colour() -> None:
    text = printed(make_results())
    assert "\x1b" not in text
    assert "**" not in text
    assert "`" not in text
    assert "| ---" not in text  # tables drawn by rich, not markdown
    assert re.search(r"\nunchanged +40\.0 +10\.0 +2\.0 +1\.5 +0\.5 +0\.6 +1\.5 *\n", text)
    assert re.search(r"\nunchanged +registry +1\.5 +0\.04x +0\.15x +1\.0 KB +7 B +6/12 *\n", text)
    assert re.search(r"change halfway vs warm local builder +within 1\.2x .* no ", text)
    assert re.search(r"GitHubWebhookFunction +layercache\.handlers\.github_webhook +450", text)
    assert re.search(r"StartBuild accepted at once +500 +3\.5 / 6\.2 +25\.0 / 60\.5", text)
    assert "make_plan on plain data (median of 5)" in text
    assert "Measured" not in text
    for paragraph in ("layercache benchmark results", "Targets (ours: registry cache"):
        assert paragraph in text


def test_a_narrow_terminal_wraps_cells_and_cuts_none() -> None:
    text = printed(make_results(), width=80)
    assert "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "BuildRequestQueue" in text
