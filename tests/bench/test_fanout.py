"""One host against fan-out (bench.fanout): the batch's model on plain figures, its
rendering, and the quick run's results (docker tier): every build measured, the walls and
break-evens consistent with the runs they come from. No wall time is asserted."""

from __future__ import annotations

import itertools
import json

import pytest

from layercache_dev.bench.fanout import (
    FANOUT_SCENARIOS,
    FanOutScenario,
    FanOutWorkload,
    HostRun,
    ScenarioResult,
    shape,
)
from layercache_dev.bench.report import fanout_tables, markdown_table, results_from_json

from .conftest import QuickRun


def run(seconds: float, images: dict[str, float]) -> HostRun:
    return HostRun(
        images=list(images), seconds=seconds, image_seconds=images, cached_steps=0,
        total_steps=2 * len(images), downloaded_bytes=0, uploaded_bytes=0,
    )  # fmt: skip


def scenario() -> ScenarioResult:
    """base, api on base, tool: one host 6 s; the builds 2 s, 3 s and 1.5 s."""
    single = run(6.0, {"base": 1.5, "api": 2.0, "tool": 1.5})
    children = {
        "base": run(2.0, {"base": 1.5}),
        "api": run(3.0, {"api": 2.0}),
        "tool": run(1.5, {"tool": 1.0}),
    }
    return ScenarioResult(
        FanOutScenario.COLD, single, children, {"base": [], "api": ["base"], "tool": []}
    )


def test_the_batch_wall_is_its_longest_path_of_build_and_provisioning() -> None:
    result = scenario()
    assert sorted(result.paths()) == [["base", "api"], ["tool"]]
    assert result.critical_path(10) == ["base", "api"]
    assert result.fanout_wall(10) == pytest.approx(2 * 10 + 2.0 + 3.0)
    assert result.single_wall(10) == pytest.approx(16.0)
    assert result.fanout_wall(0) == pytest.approx(5.0)  # beats one host's 6 s


def test_at_the_break_even_provisioning_both_walls_are_equal() -> None:
    result = scenario()
    break_even = result.break_even_provisioning()
    assert break_even is not None
    assert break_even == pytest.approx(1.0)  # (6 - 5) / (2 - 1)
    assert result.fanout_wall(break_even) == pytest.approx(result.single_wall(break_even))
    assert result.fanout_wall(break_even / 2) < result.single_wall(break_even / 2)


def test_at_the_break_even_build_time_both_walls_are_equal() -> None:
    result = scenario()
    provisioning = 10.0
    per_image = result.break_even_image_seconds(provisioning)
    assert per_image is not None
    scale = per_image * 3 / 5.0  # one host's images took 5 s in all
    single = provisioning + result.single.fixed_seconds + scale * 5.0
    path = ["base", "api"]
    batch = sum(
        provisioning
        + result.children[i].fixed_seconds
        + scale * result.children[i].image_seconds[i]
        for i in path
    )
    assert batch == pytest.approx(single)


def test_a_batch_whose_path_alone_is_longer_than_one_host_never_pays() -> None:
    result = scenario()
    result.children["api"] = run(9.0, {"api": 8.5})
    assert result.break_even_provisioning() is None


def test_the_workload_has_eight_images_or_the_quick_four() -> None:
    assert len(FanOutWorkload().images) == 8
    dependents, independent = shape(4)
    assert (len(dependents), len(independent)) == (2, 1)
    workload = FanOutWorkload(2, 2, 1e6, dependents, independent)
    files = workload.files(FanOutScenario.TARGET)
    assert files["api/src/main.txt"] == "api v2\n"
    assert files["base/src/main.txt"] == "base v2\n"  # the base changed one scenario before
    assert 'contexts = { base = "target:base" }' in files["docker-bake.hcl"]
    assert "FROM base\n" in files["api/Dockerfile"]
    with pytest.raises(ValueError, match="2 to 8"):
        shape(9)


def test_the_tables_show_each_scenario_and_each_build() -> None:
    result = scenario()
    document = {
        "provisioning_seconds": 10.0, "work_seconds": 5.0, "size_mb": 2.0,
        "hash_bytes_per_second": 5e7, "images": ["base", "api", "tool"],
        "break_even_image_seconds": result.break_even_image_seconds(10.0),
        "scenarios": [result.as_json(10.0)],
    }  # fmt: skip
    blocks = fanout_tables(json.loads(json.dumps(document)))
    tables = [markdown_table(block) for block in blocks if not isinstance(block, str)]
    assert "| cold | 6.0 | 16.0 | 3.0 | 6.5 | **25.0** | base → api | 1.0 s |" in tables[0]
    assert "| cold | 2.0 (0/2) | 3.0 (0/2) | 1.5 (0/2) |" in tables[1]
    assert any("fan-out pays once the images take" in b for b in blocks if isinstance(b, str))


# ---------------------------------------------------------------- the quick run (docker tier)


@pytest.mark.docker
def test_the_quick_run_measures_every_build_of_every_scenario(quick_run: QuickRun) -> None:
    fanout = quick_run.results.fanout
    images = fanout["images"]
    assert [s["scenario"] for s in fanout["scenarios"]] == [str(s) for s in FANOUT_SCENARIOS]
    for result in fanout["scenarios"]:
        single, children = result["single"], result["children"]
        assert sorted(single["images"]) == sorted(images)  # one host: every image
        assert list(children) == single["images"]  # one build per image, in build order
        for image, child in children.items():
            assert child["images"] == [image], (result["scenario"], image)
        # Counted as one host counts them: the base's steps are the base's alone.
        assert sum(c["total_steps"] for c in children.values()) == single["total_steps"]
        # One host's run holds its images' builds, and the rest is its fixed cost.
        assert sum(single["image_seconds"].values()) <= single["seconds"]
        # The batch: at least its longest build plus a host, at most every build in a row.
        provisioning = fanout["provisioning_seconds"]
        wall = result["fanout_wall_seconds"]
        assert wall >= result["longest_child_seconds"] + provisioning - 1e-3
        assert wall <= result["children_seconds"] + len(children) * provisioning + 1e-3
        assert result["single_wall_seconds"] == pytest.approx(
            single["seconds"] + provisioning, abs=1e-3
        )
        path = result["critical_path"]
        assert not result["depend_on"][path[0]]  # it starts where no build waits
        assert all(result["depend_on"][b] == [a] for a, b in itertools.pairwise(path))
    by_name = {s["scenario"]: s for s in fanout["scenarios"]}
    cold, unchanged = by_name["cold"], by_name["unchanged"]
    assert cold["single"]["cached_steps"] == 0
    assert unchanged["single"]["cached_steps"] == unchanged["single"]["total_steps"]
    for child in unchanged["children"].values():
        assert child["cached_steps"] == child["total_steps"]
    base_changed = by_name["base changed"]["children"]
    assert base_changed["api"]["cached_steps"] > 0  # its compile stage, from its own cache


@pytest.mark.docker
def test_the_comparison_is_written_and_read_back(quick_run: QuickRun) -> None:
    document = json.loads((quick_run.out / "results.json").read_text())
    assert document["fanout"] == quick_run.results.fanout
    assert results_from_json(document).fanout == quick_run.results.fanout
    markdown = (quick_run.out / "results.md").read_text()
    assert "## One host or fan-out (a Bake file of 4 images)" in markdown
    assert "| base changed |" in markdown
