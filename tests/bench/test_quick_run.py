"""A quick run of the benchmark on the real rig, so it can't rot: every cell measured, every
byte count read from the registry's own log and carried over the throttled link."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layercache_dev.bench.builds import STRATEGIES, Run, Strategy
from layercache_dev.bench.workload import SCENARIOS, STEPS, Scenario
from layercache_dev.kit.registry import Registry, parse_registry_log

from .conftest import QuickRun

pytestmark = pytest.mark.docker


def log_span(quick_run: QuickRun, run: Run) -> tuple[int, int]:
    """Blob bytes (downloaded, uploaded) the registry logged between the run's two marks."""
    registry = Registry(Path(quick_run.results.meta["registry_log"]).parent)
    with registry.log_path.open("rb") as log:
        log.seek(run.log_start)
        text = log.read(run.log_end - run.log_start).decode("utf-8", "replace")
    traffic = parse_registry_log(text.splitlines(), registry.blob_size)
    return traffic.downloaded_bytes, traffic.uploaded_bytes


def test_every_cell_is_measured(quick_run: QuickRun) -> None:
    results = quick_run.results
    assert [(c.strategy, c.scenario) for c in results.cells] == [
        (strategy, scenario) for strategy in STRATEGIES for scenario in SCENARIOS
    ]
    for cell in results.cells:
        assert len(cell.runs) == 1
        (run,) = cell.runs
        assert run.seconds > 0
        assert run.total_steps == STEPS, (cell.strategy, cell.scenario)
        assert run.log_end > run.log_start, "every build talks to the registry"
    assert results.image_bytes > 1_000_000


def test_byte_counts_are_the_registry_logs(quick_run: QuickRun) -> None:
    for cell in quick_run.results.cells:
        for run in cell.runs:
            assert log_span(quick_run, run) == (run.downloaded_bytes, run.uploaded_bytes)
            # Every logged blob byte crossed the throttled link (which also carries HTTP).
            assert run.proxy_bytes_down >= run.downloaded_bytes
            assert run.proxy_bytes_up >= run.uploaded_bytes


def test_transfers_happen_where_they_must(quick_run: QuickRun) -> None:
    results = quick_run.results
    image = results.image_bytes
    for strategy in STRATEGIES:
        assert results.cell(strategy, Scenario.COLD).uploaded_bytes > image / 2, strategy
    for scenario in SCENARIOS[1:]:
        # The seed pulls the whole previous image before it builds.
        assert results.cell(Strategy.SEED, scenario).downloaded_bytes >= image, scenario
        # Without a cache every layer is new and pushed again.
        assert results.cell(Strategy.NO_CACHE, scenario).uploaded_bytes > image / 2, scenario
    ours = results.cell(Strategy.REGISTRY, Scenario.HALFWAY).runs[0]
    assert ours.downloaded_bytes > 0, "the rebuilt steps need the layers they build on"
    assert 0 < ours.cached_steps < STEPS
    unchanged = results.cell(Strategy.REGISTRY, Scenario.UNCHANGED).runs[0]
    assert unchanged.cached_steps == STEPS
    # mode=max exports the builder stage's layers too: a cold build uploads more than the image.
    registry_cold = results.cell(Strategy.REGISTRY, Scenario.COLD).uploaded_bytes
    assert registry_cold > results.cell(Strategy.NO_CACHE, Scenario.COLD).uploaded_bytes


def test_results_are_written(quick_run: QuickRun) -> None:
    document = json.loads((quick_run.out / "results.json").read_text())
    assert len(document["cells"]) == len(STRATEGIES) * len(SCENARIOS)
    assert document["meta"]["rate_bytes_per_second"] == 50e6
    assert {target["name"] for target in document["targets"]} >= {"unchanged rebuild vs cold"}
    assert document["overhead"]["pruner"]["moto"]["aws_calls"] > 0
    assert document["overhead"]["webhook"]["iterations"] == 20
    markdown = (quick_run.out / "results.md").read_text()
    assert "| base-image refresh | registry |" in markdown
    assert "| StartBuild accepted at once | 20 |" in markdown
    assert "50 MB/s" in markdown
    assert (quick_run.out / "builds.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_webhook_answers_before_and_apart_from_start_build(quick_run: QuickRun) -> None:
    """Within one run, never against a clock: the webhook only hands the request on, the
    build starts after the answer, and a throttled StartBuild does not reach the answer."""
    webhook = quick_run.results.overhead["webhook"]
    assert webhook["aws_calls_by_operation"]["sqs:SendMessage"] == 1
    assert not [
        operation for operation in webhook["aws_calls_by_operation"] if "codebuild" in operation
    ]
    starter = webhook["starter"]
    assert starter["aws_calls_by_operation"]["codebuild:StartBuild"] == 1
    # Every delivery's StartBuild comes after its answer, so every order statistic does too.
    assert webhook["until_start_build"]["median_ms"] > webhook["median_ms"]
    assert webhook["until_start_build"]["p99_ms"] > webhook["p99_ms"]
    throttled = webhook["throttled"]
    assert throttled["deliveries"] >= 5
    refusals = throttled["refusals_per_build"]
    assert refusals >= 1
    # Refused calls come back through the client's retries, in the same invocation.
    assert throttled["start_build_calls_per_build"] == refusals + 1
    assert throttled["starter_invocations_per_request"] == 1
    assert throttled["until_start_build"]["median_ms"] > throttled["answer"]["median_ms"]


@pytest.mark.timing
def test_throttling_leaves_the_webhooks_answer_where_it_was(quick_run: QuickRun) -> None:
    """The answer never waits on CodeBuild: a ratio of two medians within one run, so a
    loaded machine can still skew it (the `timing` tier)."""
    webhook = quick_run.results.overhead["webhook"]
    assert webhook["throttled"]["answer"]["median_ms"] <= 3 * webhook["median_ms"]
