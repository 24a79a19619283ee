"""The benchmark's results: targets checked, a markdown report, the JSON document.

`Results` holds what a run measured; `results_json`, `results_markdown` and
`terminal_report` (the same report, drawn by rich) render it, and `check_targets` compares
it with the issue's targets (reported, never asserted).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import JustifyMethod, RenderableType
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from layercache_dev.bench.builds import SHORT_NAMES, STRATEGIES, Cell, Run, Strategy
from layercache_dev.bench.driver_bench import COLD_EXPORT_TARGET, DRIVER_OVERHEAD_TARGET_SECONDS
from layercache_dev.bench.workload import SCENARIOS, Scenario

REFERENCE_COLD = (Strategy.NO_CACHE, Scenario.COLD)


@dataclass
class Results:
    meta: dict[str, Any]
    cells: list[Cell]
    image_bytes: int
    builder_cached_seconds: float
    overhead: dict[str, Any] = field(default_factory=dict)
    fanout: dict[str, Any] = field(default_factory=dict)  # bench.fanout's comparison
    driver: dict[str, Any] = field(default_factory=dict)  # bench.driver_bench's figures

    def cell(self, strategy: Strategy, scenario: Scenario) -> Cell:
        return next(c for c in self.cells if c.strategy is strategy and c.scenario is scenario)

    def has(self, strategy: Strategy, scenario: Scenario) -> bool:
        return any(c.strategy is strategy and c.scenario is scenario for c in self.cells)

    def ratio_to_cold(self, cell: Cell) -> float | None:
        if not self.has(*REFERENCE_COLD):
            return None
        return _ratio(cell.seconds, self.cell(*REFERENCE_COLD).seconds)

    def ratio_to_seed(self, cell: Cell) -> float | None:
        if not self.has(Strategy.SEED, cell.scenario):
            return None
        return _ratio(cell.seconds, self.cell(Strategy.SEED, cell.scenario).seconds)


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    met: bool
    note: str


def human_bytes(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def check_targets(results: Results) -> list[Target]:
    """The issue's targets, for our strategy (registry cache, mode=max); [] if cells are missing."""
    needed = [REFERENCE_COLD] + [
        (strategy, scenario)
        for strategy in (Strategy.REGISTRY, Strategy.SEED, Strategy.WARM)
        for scenario in (Scenario.UNCHANGED, Scenario.HALFWAY, Scenario.BUILDER)
    ]
    if not all(results.has(*cell) for cell in needed) or not results.image_bytes:
        return []
    ours = Strategy.REGISTRY
    rate = float(results.meta.get("rate_bytes_per_second") or 0)
    cold = results.cell(*REFERENCE_COLD).seconds
    unchanged = results.cell(ours, Scenario.UNCHANGED)
    seed_unchanged = results.cell(Strategy.SEED, Scenario.UNCHANGED)
    halfway = results.cell(ours, Scenario.HALFWAY)
    warm_halfway = results.cell(Strategy.WARM, Scenario.HALFWAY)
    builder = results.cell(ours, Scenario.BUILDER)
    seed_builder = results.cell(Strategy.SEED, Scenario.BUILDER)
    warm_unchanged = results.cell(Strategy.WARM, Scenario.UNCHANGED)
    image = results.image_bytes
    transfer = halfway.downloaded_bytes / rate if rate else 0.0
    pull = seed_unchanged.downloaded_bytes / rate if rate else 0.0
    builder_transfer = builder.downloaded_bytes / rate if rate else 0.0
    saved = seed_builder.seconds - builder.seconds
    cached_share = results.builder_cached_seconds
    return [
        Target(
            "unchanged rebuild vs cold",
            "<= 5% of the cold build (no cache)",
            f"{unchanged.seconds:.1f} s = {unchanged.seconds / cold:.1%} of {cold:.1f} s",
            unchanged.seconds <= 0.05 * cold,
            f"a build has a fixed cost: the warm local builder, which holds every layer, takes "
            f"{warm_unchanged.seconds:.1f} s ({warm_unchanged.seconds / cold:.1%}) too (buildx, "
            "resolving the base images, checking each layer is in the registry); the cache "
            "adds reading and writing its manifest. The share falls as the cold build grows",
        ),
        Target(
            "unchanged rebuild vs the seed",
            "<= 1/5 of the seed's approach",
            f"{unchanged.seconds:.1f} s = {unchanged.seconds / seed_unchanged.seconds:.2f}x "
            f"of {seed_unchanged.seconds:.1f} s",
            unchanged.seconds <= seed_unchanged.seconds / 5,
            f"the seed first pulls {human_bytes(seed_unchanged.downloaded_bytes)} "
            f"({pull:.1f} s at the link's rate); its cost grows with the image, ours does not",
        ),
        Target(
            "unchanged rebuild downloads",
            "< 1% of the image's bytes",
            f"{human_bytes(unchanged.downloaded_bytes)} = "
            f"{unchanged.downloaded_bytes / image:.2%} of {human_bytes(image)}",
            unchanged.downloaded_bytes < 0.01 * image,
            "blob downloads in the registry's log (manifests not counted)",
        ),
        Target(
            "change halfway vs warm local builder",
            "within 1.2x of the warm local builder",
            f"{halfway.seconds:.1f} s = {halfway.seconds / warm_halfway.seconds:.2f}x "
            f"of {warm_halfway.seconds:.1f} s",
            halfway.seconds <= 1.2 * warm_halfway.seconds,
            f"a fresh host downloads {human_bytes(halfway.downloaded_bytes)} "
            f"({transfer:.1f} s at the link's rate) that the warm builder has on disk: the "
            "layers the rebuilt step runs on, and the builder stage's whole filesystem "
            "(toolchain included) for COPY --from",
        ),
        Target(
            "builder-stage change vs the seed",
            "faster than the seed by at least the builder stage's cached share",
            f"{builder.seconds:.1f} s vs {seed_builder.seconds:.1f} s: {saved:.1f} s faster; "
            f"cached builder steps took {cached_share:.1f} s cold",
            saved >= cached_share,
            "the seed's inline cache holds only the final stage, so it reruns the builder "
            "stage's toolchain and dependency steps; a fresh host with ours skips them but "
            f"downloads {human_bytes(builder.downloaded_bytes)} ({builder_transfer:.1f} s at "
            "the link's rate): the layers the compile step runs on, and the runtime stage's "
            "layers below the copied application",
        ),
    ]


def results_json(results: Results, targets: Sequence[Target]) -> dict[str, Any]:
    cells = []
    for cell in results.cells:
        document = cell.as_json()
        to_cold, to_seed = results.ratio_to_cold(cell), results.ratio_to_seed(cell)
        document["ratio_to_cold"] = round(to_cold, 4) if to_cold is not None else None
        document["ratio_to_seed"] = round(to_seed, 4) if to_seed is not None else None
        cells.append(document)
    return {
        "meta": results.meta,
        "image_bytes": results.image_bytes,
        "builder_cached_seconds": round(results.builder_cached_seconds, 3),
        "reference_cold": f"{REFERENCE_COLD[0]} / {REFERENCE_COLD[1]}",
        "strategies": [str(s) for s in STRATEGIES],
        "scenarios": [str(s) for s in SCENARIOS],
        "cells": cells,
        "targets": [vars(target) for target in targets],
        "overhead": results.overhead,
        "fanout": results.fanout,
        "driver": results.driver,
    }


def results_from_json(document: dict[str, Any]) -> Results:
    """The Results a `results.json` was written from (to render it again)."""
    cells = [
        Cell(
            Strategy(cell["strategy"]),
            Scenario(cell["scenario"]),
            [Run(**run) for run in cell["runs"]],
        )
        for cell in document["cells"]
    ]
    return Results(
        meta=document["meta"],
        cells=cells,
        image_bytes=int(document["image_bytes"]),
        builder_cached_seconds=float(document["builder_cached_seconds"]),
        overhead=document.get("overhead") or {},
        fanout=document.get("fanout") or {},
        driver=document.get("driver") or {},
    )


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


@dataclass(frozen=True)
class TextTable:
    """Rows of text cells: the first `label_columns` columns are labels (left-aligned), the
    others figures (right-aligned). Cells may hold markdown's **bold** and `code`."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    label_columns: int = 1


Block = str | TextTable  # a paragraph or heading in markdown, or a table
INLINE_MARKUP = re.compile(r"\*\*(.+?)\*\*|`(.+?)`")
EVERY_CELL_HEADER = [
    "scenario",
    "strategy",
    "wall s",
    "x cold",
    "x seed",
    "downloaded",
    "uploaded",
    "cached",
]


def build_tables(results: Results) -> list[Block]:
    strategies = [s for s in STRATEGIES if any(c.strategy is s for c in results.cells)]
    runs = max((len(c.runs) for c in results.cells), default=0)
    medians = [
        [str(scenario)]
        + [
            f"{results.cell(s, scenario).seconds:.1f}" if results.has(s, scenario) else "-"
            for s in strategies
        ]
        for scenario in SCENARIOS
    ]
    every_cell = []
    for scenario in SCENARIOS:
        for strategy in strategies:
            if not results.has(strategy, scenario):
                continue
            cell = results.cell(strategy, scenario)
            run = cell.runs[0]
            every_cell.append(
                [
                    str(scenario),
                    SHORT_NAMES[strategy],
                    f"{cell.seconds:.1f}",
                    _x(results.ratio_to_cold(cell)),
                    _x(results.ratio_to_seed(cell)),
                    human_bytes(cell.downloaded_bytes),
                    human_bytes(cell.uploaded_bytes),
                    f"{run.cached_steps}/{run.total_steps}",
                ]
            )
    return [
        f"Wall seconds, median of {runs} run(s) (pull, build, push and cache export):",
        TextTable(["scenario", *(str(s) for s in strategies)], medians),
        "Every cell: wall time, its ratio to the cold build without cache and to the seed's "
        "approach in the same scenario, blob bytes the registry's log shows downloaded and "
        "uploaded (medians), steps taken from a cache:",
        TextTable(EVERY_CELL_HEADER, every_cell, label_columns=2),
    ]


def target_table(targets: Sequence[Target]) -> TextTable:
    return TextTable(
        ["target", "goal", "measured", "met", "note"],
        [[t.name, t.goal, t.measured, "yes" if t.met else "**no**", t.note] for t in targets],
        label_columns=5,
    )


def _calls(by_operation: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in by_operation.items())


def _call_s(count: float) -> str:
    return "call" if count == 1 else "calls"


def _ms(figures: dict[str, Any]) -> str:
    return f"{figures['median_ms']:.1f} / {figures['p99_ms']:.1f}"


def webhook_tables(webhook: dict[str, Any]) -> list[Block]:
    """The webhook's answer, and beside it the time until StartBuild (when measured: results
    from before the build-request queue have only the answer, a call that started the build)."""
    start = webhook.get("until_start_build")
    if start is None:
        what = (
            "deliveries that each start a build (signature, decision, claim, StartBuild, record):"
        )
    else:
        what = (
            "deliveries of a new commit each: it checks the signature, decides, hands one build "
            "request to BuildRequestQueue (SQS FIFO) and answers 202, without waiting on "
            "CodeBuild. Its answer (called with the signed delivery until it returns 202):"
        )
    blocks: list[Block] = [
        f"GitHub webhook handler, in-process against moto, {webhook['iterations']} {what}",
        TextTable(
            ["", "median ms", "p99 ms"],
            [
                [
                    "whole call, moto's AWS included",
                    f"{webhook['median_ms']:.1f}",
                    f"{webhook['p99_ms']:.1f}",
                ],
                [
                    "the function's own code (time inside moto taken out)",
                    f"{webhook['own_median_ms']:.1f}",
                    f"{webhook['own_p99_ms']:.1f}",
                ],
            ],
        ),
        f"{webhook['aws_calls_per_delivery']:g} AWS {_call_s(webhook['aws_calls_per_delivery'])}"
        " per delivery "
        f"({_calls(webhook['aws_calls_by_operation'])}); the first call, which creates the "
        f"clients and reads the secret, took {webhook['first_call_ms']:.0f} ms.",
    ]
    if start is None:
        return blocks
    starter, throttled = webhook["starter"], webhook["throttled"]
    refusals = throttled["refusals_per_build"]
    return [
        *blocks,
        "The webhook's answer beside the time until StartBuild: from the delivery's arrival "
        "until CodeBuild accepted the StartBuild of its build. BuildStarterFunction is invoked "
        "with the queue's message right after the answer, as Lambda's SQS event source would "
        "(on AWS the event source's polling adds its own delay). Throttled: CodeBuild refuses "
        f"the first {refusals} StartBuild calls of each build (ThrottlingException), and the "
        "starter's client retries with backoff.",
        TextTable(
            [
                "",
                "deliveries",
                "webhook's answer, median / p99 ms",
                "until StartBuild, median / p99 ms",
                "starter's invocation, median / p99 ms",
            ],
            [
                [
                    "StartBuild accepted at once",
                    str(webhook["iterations"]),
                    _ms(webhook),
                    _ms(start),
                    _ms(starter),
                ],
                [
                    f"StartBuild throttled, {refusals} refusals per build",
                    str(throttled["deliveries"]),
                    _ms(throttled["answer"]),
                    _ms(throttled["until_start_build"]),
                    _ms(throttled["starter"]),
                ],
            ],
        ),
        f"BuildStarterFunction's own code (time inside moto taken out): median "
        f"{starter['own_median_ms']:.1f} ms, p99 {starter['own_p99_ms']:.1f} ms; "
        f"{starter['aws_calls_per_request']:g} AWS {_call_s(starter['aws_calls_per_request'])}"
        " per request "
        f"({_calls(starter['aws_calls_by_operation'])}); its first invocation, which creates "
        f"its clients, took {starter['first_call_ms']:.0f} ms. Throttled: "
        f"{throttled['start_build_calls_per_build']:g} StartBuild calls per build in "
        f"{throttled['starter_invocations_per_request']:g} invocation(s) per request; the "
        f"webhook's answer at most {throttled['answer']['max_ms']:.1f} ms (at once: "
        f"{webhook['max_ms']:.1f} ms).",
    ]


def cold_start_tables(cold_start: dict[str, Any]) -> list[Block]:
    """Each handler's whole-process import (a Lambda cold start's import) against bare boto3
    with one client, measured side by side (bench.overhead.cold_start_imports)."""
    baseline, target = cold_start["baseline"], cold_start["target_ratio"]
    header = ["function", "module", "whole process ms", "x boto3", "CPU ms", "CPU x boto3"]
    bare = f"bare boto3: `{baseline['code']}`"
    cpu = f"{baseline['cpu_median_ms']:.0f}"
    rows = [[bare, "", f"{baseline['median_ms']:.0f}", "1.00x", cpu, "1.00x", "-", ""]]
    for logical_id, figures in cold_start["functions"].items():
        rows.append(
            [
                logical_id,
                f"`{figures['module']}`",
                f"{figures['median_ms']:.0f}",
                f"{figures['ratio']:.2f}x",
                f"{figures['cpu_median_ms']:.0f}",
                f"{figures['cpu_ratio']:.2f}x",
                f"{figures['import_median_ms']:.0f}",
                "yes" if figures["met"] else "**no**",
            ]
        )
    return [
        "### Lambda cold start: whole-process import against bare boto3",
        f"A fresh Python process per sample (the interpreter's start and the import, timed "
        f"from outside), median of {cold_start['runs']}, handlers and baseline interleaved. "
        "CPU is the process's user + system time, which other load on the machine alters "
        "least; 'import alone' is timed inside the process. Target: the whole process at "
        f"most {target:g}x bare boto3.",
        TextTable([*header, "import alone ms", f"<= {target:g}x"], rows, label_columns=2),
    ]


def overhead_tables(overhead: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    imports = overhead.get("imports") or {}
    if overhead.get("cold_start"):
        blocks += cold_start_tables(overhead["cold_start"])
    elif imports:  # results from before the whole-process measurement
        blocks += [
            "Import of each function's handler module in a fresh interpreter (cold start, "
            "before the first event):",
            TextTable(
                ["function", "module", "median ms", "max ms", "runs"],
                [
                    [
                        logical_id,
                        f"`{figures['module']}`",
                        f"{figures['median_ms']:.0f}",
                        f"{figures['max_ms']:.0f}",
                        str(figures["runs"]),
                    ]
                    for logical_id, figures in imports.items()
                ],
                label_columns=2,
            ),
        ]
    webhook = overhead.get("webhook")
    if webhook:
        blocks += webhook_tables(webhook)
    pruner = overhead.get("pruner")
    if pruner:
        plain, moto = pruner["plain"], pruner["moto"]
        calls = ", ".join(f"{k} {v}" for k, v in moto["aws_calls_by_operation"].items())
        blocks += [
            f"Image pruner on a repository of {plain['images']:,} images "
            f"({plain['kept']:,} kept, {plain['planned_deletions']:,} planned deletions):",
            TextTable(
                ["", "time", "AWS calls"],
                [
                    [
                        f"`make_plan` on plain data (median of {plain['runs']})",
                        f"{plain['median_ms']:.0f} ms",
                        "0",
                    ],
                    [
                        f"`dry_run_plan` against moto's ECR ({moto['images']:,} images, "
                        "DescribeImages paged as ECR pages it)",
                        f"{moto['seconds']:.1f} s",
                        f"{moto['aws_calls']} ({calls})",
                    ],
                ],
            ),
        ]
    return blocks


def report_blocks(results: Results, targets: Sequence[Target]) -> list[Block]:
    """The report's paragraphs, headings and tables, in order."""
    meta = results.meta
    link = (
        f"Run {meta['date']} on {meta['machine']}. Registry link: "
        f"{meta['rate_bytes_per_second'] / 1e6:g} MB/s each way (a throttling proxy on "
        "loopback). "
    )
    took = f"the benchmark took {meta['total_seconds'] / 60:.0f} min."
    blocks: list[Block] = ["# layercache benchmark results"]
    if not results.cells:
        blocks.append(link + took[0].upper() + took[1:])
    else:
        blocks += [
            link + f"Workload: a two-stage image of {human_bytes(results.image_bytes)} "
            f"({meta['size_mb']:g} MB requested), {meta['work_seconds']:g} s of work when cold, "
            f"{meta['steps']} steps. {meta['runs']} run(s) per cell; " + took,
            "Each run starts on a builder with an empty local cache (a fresh build host) and a "
            "repository holding the strategy's previous build, except the warm local builder, "
            "which keeps every layer (and the warm tier's, which keeps its builder). 'x cold' is "
            "relative to the cold build without cache.",
            "## Builds",
            *(
                [
                    f"The warm tier's two columns were measured {meta['warm_tier_date']} in a "
                    "run of their own, beside the registry cache and the warm local builder "
                    "(docs/build-cache.md, 'The warm tier', has that run's every column)."
                ]
                if meta.get("warm_tier_date")
                else []
            ),
            *build_tables(results),
            "## Targets (ours: registry cache, mode=max)",
            target_table(targets),
        ]
    if results.fanout:
        blocks += fanout_tables(results.fanout, meta.get("fanout_date"))
    if results.driver:
        blocks += driver_tables(results.driver)
    if results.overhead:
        blocks.append("## The pipeline's own overhead")
        if meta.get("overhead_date"):  # measured again apart from the builds
            blocks.append(f"Measured {meta['overhead_date']}, in a run of its own.")
        blocks += overhead_tables(results.overhead)
    return blocks


def _s(value: float | None, unit: str = "") -> str:
    return "never" if value is None else f"{value:.1f}{unit}"


def fanout_tables(fanout: dict[str, Any], measured: str | None = None) -> list[Block]:
    """One host against a fan-out batch (bench.fanout): the walls at the provisioning cost
    chosen, each build of the batch, and the break-even."""
    provisioning = float(fanout["provisioning_seconds"])
    images = list(fanout["images"])
    scenarios = fanout["scenarios"]
    p = f"{provisioning:g} s"
    dependents = sum(1 for bases in scenarios[0]["depend_on"].values() if bases) if scenarios else 0
    blocks: list[Block] = [
        f"## One host or fan-out (a Bake file of {len(images)} images)",
        *([f"Measured {measured}, in a run of its own."] if measured else []),
        f"A base, {dependents} images built on it and the others on their own; "
        f"{fanout['work_seconds']:g} s of work "
        f"(sha256 at {fanout['hash_bytes_per_second'] / 1e6:.0f} MB/s here) and "
        f"{fanout['size_mb']:g} MB when cold. One host: one run of the driver, every image "
        "on one BuildKit. Fan-out: one build per image on a BuildKit of its own (each run "
        "alone, one after another), a dependent after its base; the batch's wall is its "
        f"longest path of (build + provisioning), at {p} per build (`--provisioning-seconds`; "
        "one host pays it once). Wall seconds:",
        TextTable(
            [
                "scenario",
                "one host",
                f"one host + {p}",
                "longest build of the batch",
                "builds of the batch, summed",
                f"batch wall at {p}",
                "longest path",
                "fan-out pays below (provisioning)",
            ],
            [
                [
                    s["scenario"],
                    f"{s['single']['seconds']:.1f}",
                    f"{s['single_wall_seconds']:.1f}",
                    f"{s['longest_child_seconds']:.1f}",
                    f"{s['children_seconds']:.1f}",
                    f"**{s['fanout_wall_seconds']:.1f}**",
                    " → ".join(s["critical_path"]),
                    _s(s["break_even_provisioning_seconds"], " s"),
                ]
                for s in scenarios
            ],
        ),
        "Each build of the batch (its whole run: reading the Bake file, checking tags, "
        "solving the bases it does not build from their caches, its image), seconds and "
        "steps from a cache:",
        TextTable(
            ["scenario", *images],
            [
                [
                    s["scenario"],
                    *(
                        f"{s['children'][i]['seconds']:.1f} "
                        f"({s['children'][i]['cached_steps']}/{s['children'][i]['total_steps']})"
                        for i in images
                    ),
                ]
                for s in scenarios
            ],
        ),
    ]
    break_even = fanout.get("break_even_image_seconds")
    if break_even is not None:
        cold = next(s for s in scenarios if s["scenario"] == "cold")
        mean = sum(cold["single"]["image_seconds"].values()) / len(images)
        blocks.append(
            f"Break-even at {p} per build: fan-out pays once the images take "
            f"**{break_even:.1f} s** each on average as one host builds them (here, cold: "
            f"{mean:.1f} s), every image's build scaled alike, the runs' fixed costs as measured."
        )
    else:
        blocks.append(f"At {p} per build, no build time per image makes fan-out pay here.")
    return blocks


def driver_tables(driver: dict[str, Any]) -> list[Block]:
    """The driver's own costs (bench.driver_bench): its overhead over plain buildx on an
    unchanged rebuild, and the cold build per cache export lever against no cache."""
    blocks: list[Block] = ["## The driver's own costs"]
    overhead = driver.get("overhead")
    if overhead:
        difference, ratio = overhead["difference_seconds"], overhead["ratio"]
        met = "yes" if difference <= DRIVER_OVERHEAD_TARGET_SECONDS else "**no**"
        blocks += [
            f"An unchanged rebuild on an emptied builder ({overhead['size_mb']:g} MB image), "
            "run by the driver (`python3 build_driver.py`, as the buildspec runs it) and by "
            "`docker buildx build` with the very arguments the driver gives it, alternating, "
            f"median of {overhead['runs']} run(s) each:",
            TextTable(
                ["", "driver s", "plain buildx s", "difference s", "ratio", "target", "met"],
                [
                    [
                        "unchanged rebuild",
                        f"{overhead['driver_median_seconds']:.2f}",
                        f"{overhead['plain_median_seconds']:.2f}",
                        f"{difference:+.2f}",
                        _x(ratio),
                        f"<= +{DRIVER_OVERHEAD_TARGET_SECONDS:g} s",
                        met,
                    ]
                ],
            ),
        ]
        if "python_median_seconds" in overhead:
            blocks.append(
                f"Of the difference, {overhead['python_median_seconds']:.2f} s (median) is the "
                "interpreter starting, compiling and importing the driver "
                "(`build_driver.py --help`), which plain buildx never pays."
            )
    levers = driver.get("levers")
    if levers:
        blocks.append(
            f"A cold build on an emptied builder ({levers['size_mb']:g} MB image, "
            f"{levers['work_seconds']:g} s of work), plain `docker buildx build --push` with "
            "each `--cache-to` lever into a cache repository of its own, against the same "
            f"build without a cache; median of {levers['runs']} run(s), levers in alternating "
            f"order. The driver's: `{levers['chosen']}`. Uploaded: blob bytes the registry's "
            "log shows, the cache repository's share apart; mounts: blobs the registry copied "
            "between repositories instead."
        )
        for table in levers["tables"]:
            rows = [
                [
                    f"**{row['lever']}**" if row["cache_to"] == levers["chosen"] else row["lever"],
                    f"{row['seconds']:.1f}",
                    _x(row["ratio_to_no_cache"]),
                    human_bytes(row["uploaded_bytes"]),
                    human_bytes(row["cache_uploaded_bytes"]),
                    str(row["mounts"]),
                    "-"
                    if row["cache_to"] is None
                    else ("yes" if (row["ratio_to_no_cache"] or 0) <= COLD_EXPORT_TARGET else "no"),
                ]
                for row in table["rows"]
            ]
            blocks += [
                f"Workload: {table['workload']}.",
                TextTable(
                    [
                        "lever",
                        "cold s",
                        "x no cache",
                        "uploaded",
                        "to the cache repository",
                        "mounts",
                        f"<= {COLD_EXPORT_TARGET:.2f}x",
                    ],
                    rows,
                ),
            ]
    return blocks


def markdown_table(table: TextTable) -> str:
    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    rule = ["---" if index < table.label_columns else "---:" for index in range(len(table.header))]
    return "\n".join([line(table.header), line(rule), *(line(row) for row in table.rows)])


def terminal_text(cell: str) -> Text:
    """A cell with its markdown **bold** and `code` spans in rich's markdown styles."""
    text = Text()
    for index, part in enumerate(INLINE_MARKUP.split(cell)):
        if index % 3 == 0:
            text.append(part)
        elif part:  # the split yields each match as (bold, code), one of them None
            text.append(part, "markdown.strong" if index % 3 == 1 else "markdown.code")
    return text


def terminal_table(table: TextTable) -> Table:
    drawn = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, pad_edge=False)
    for index, heading in enumerate(table.header):
        justify: JustifyMethod = "left" if index < table.label_columns else "right"
        drawn.add_column(heading, justify=justify, overflow="fold")  # wrap, never cut
    for row in table.rows:
        drawn.add_row(*(terminal_text(cell) for cell in row))
    return drawn


def terminal_report(results: Results, targets: Sequence[Target]) -> list[RenderableType]:
    """The report for a terminal: its prose as rich renders markdown, its tables as rich tables."""
    return [
        terminal_table(block) if isinstance(block, TextTable) else Markdown(block)
        for block in report_blocks(results, targets)
    ]


def results_markdown(results: Results, targets: Sequence[Target]) -> str:
    blocks = report_blocks(results, targets)
    return (
        "\n\n".join(
            markdown_table(block) if isinstance(block, TextTable) else block for block in blocks
        )
        + "\n"
    )
