"""`layercache-dev bench`: build strategies side by side, and the pipeline's own overhead.

    .venv/bin/layercache-dev bench                  # the full run (about half an hour here)
    .venv/bin/layercache-dev bench --quick          # tiny sizes, one run: a few minutes
    .venv/bin/layercache-dev bench --rate 20 --size-mb 500 --runs 5 --out /tmp/bench
    .venv/bin/layercache-dev bench --no-builds --no-overhead --provisioning-seconds 60

It starts the rig (bench uses the standalone BuildKit as CodeBuild does, and the engine's
own builder for the seed's approach), puts a throttling proxy in front of its registry,
measures every strategy in every scenario (bench.builds), then one host against a
fan-out batch for a Bake file of eight images (bench.fanout), then the driver against
plain buildx and the cold cache export per `--cache-to` lever (bench.driver_bench), then
the functions' cold starts, the webhook handler's latency and the pruner's plan
(bench.overhead), and writes results.md, results.json and builds.png to --out
(bench/results by default).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from layercache_cli.arguments import add_command_parser
from layercache_dev.bench import overhead as bench_overhead
from layercache_dev.bench.builds import STRATEGIES, BuildBench, builder_cached_seconds
from layercache_dev.bench.chart import builds_figure, figure_png
from layercache_dev.bench.driver_bench import DriverOverhead, ExportLevers, workloads
from layercache_dev.bench.fanout import DEFAULT_PROVISIONING_SECONDS, run_comparison
from layercache_dev.bench.report import (
    Results,
    check_targets,
    results_from_json,
    results_json,
    results_markdown,
    terminal_report,
)
from layercache_dev.bench.throttle import ThrottleProxy
from layercache_dev.bench.workload import SCENARIOS, STEPS, Workload
from layercache_dev.cli import COMMANDS
from layercache_dev.kit.paths import ROOT
from layercache_dev.kit.prerequisites import missing_prerequisites
from layercache_dev.kit.rig import Rig

DEFAULT_OUT = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Options:
    size_mb: float = 300.0
    work_seconds: float = 20.0
    runs: int = 3
    rate_mb: float = 50.0  # MB (10^6 bytes) per second, each way
    webhook_iterations: int = 500
    prune_images: int = 10_000
    import_runs: int = 15  # whole-process samples per handler and of the baseline
    fanout_work_seconds: float = 50.0  # the fan-out workload's cold work, all images
    fanout_size_mb: float = 100.0
    fanout_images: int = 8
    driver_runs: int = 9  # unchanged rebuilds of about a second each, alternating
    provisioning_seconds: float = DEFAULT_PROVISIONING_SECONDS
    builds: bool = True
    fanout: bool = True
    overhead: bool = True
    driver: bool = True  # the driver against plain buildx on an unchanged rebuild
    levers: bool = True  # the cold cache export per --cache-to lever against no cache
    levers_compressible: bool = True  # the levers on the compressible workload too

    @classmethod
    def quick(cls) -> Options:
        return cls(
            size_mb=2, work_seconds=0, runs=1, webhook_iterations=20, prune_images=400,
            import_runs=1, fanout_work_seconds=1, fanout_size_mb=2, fanout_images=4,
            driver_runs=1, levers_compressible=False,
        )  # fmt: skip


def add_parser(subparsers: Any) -> None:
    parser = add_command_parser(subparsers, "bench", COMMANDS["bench"][1], __doc__)
    defaults = Options()
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run (as the tests)")
    parser.add_argument("--size-mb", type=float, help=f"image size (default {defaults.size_mb:g})")
    parser.add_argument(
        "--work-seconds", type=float, help=f"cold build work (default {defaults.work_seconds:g})"
    )
    parser.add_argument("--runs", type=int, help=f"runs per cell (default {defaults.runs})")
    parser.add_argument(
        "--rate", type=float, help=f"registry link, MB/s each way (default {defaults.rate_mb:g})"
    )
    parser.add_argument(
        "--webhook-iterations",
        type=int,
        help=f"deliveries timed (default {defaults.webhook_iterations})",
    )
    parser.add_argument(
        "--prune-images", type=int, help=f"repository size (default {defaults.prune_images})"
    )
    parser.add_argument(
        "--import-runs", type=int, help=f"cold starts per module (default {defaults.import_runs})"
    )
    parser.add_argument(
        "--fanout-work-seconds",
        type=float,
        help=f"the fan-out workload's cold work (default {defaults.fanout_work_seconds:g})",
    )
    parser.add_argument(
        "--fanout-images",
        type=int,
        help=f"images in the fan-out workload's Bake file, 2-8 (default {defaults.fanout_images})",
    )
    parser.add_argument(
        "--provisioning-seconds",
        type=float,
        help="what a CodeBuild build costs before and after its build phase (queue, "
        f"provisioning, source, finalizing; default {defaults.provisioning_seconds:g})",
    )
    parser.add_argument("--no-builds", action="store_true", help="skip the build strategies")
    parser.add_argument("--no-fanout", action="store_true", help="skip one host against fan-out")
    parser.add_argument("--no-overhead", action="store_true", help="skip the pipeline overhead")
    parser.add_argument(
        "--no-driver", action="store_true", help="skip the driver against plain buildx"
    )
    parser.add_argument(
        "--no-levers", action="store_true", help="skip the cold cache export's levers"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results go")
    parser.add_argument("--workdir", type=Path, help="rig and contexts (default: a temp dir)")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: render results.md and builds.png again from a results.json",
    )
    parser.set_defaults(run=run_command)


def options_from(args: argparse.Namespace) -> Options:
    base = Options.quick() if args.quick else Options()
    chosen = {
        "size_mb": args.size_mb,
        "work_seconds": args.work_seconds,
        "runs": args.runs,
        "rate_mb": args.rate,
        "webhook_iterations": args.webhook_iterations,
        "prune_images": args.prune_images,
        "import_runs": args.import_runs,
        "fanout_work_seconds": args.fanout_work_seconds,
        "fanout_images": args.fanout_images,
        "provisioning_seconds": args.provisioning_seconds,
    }
    values = {**vars(base), **{k: v for k, v in chosen.items() if v is not None}}
    values["builds"] = not args.no_builds
    values["fanout"] = not args.no_fanout
    values["overhead"] = not args.no_overhead
    values["driver"] = not args.no_driver
    values["levers"] = not args.no_levers
    return Options(**values)


def run_command(args: argparse.Namespace) -> int:
    console = Console(highlight=False, markup=False)  # sys.stdout; colour only on a terminal
    if args.from_json is not None:
        results = results_from_json(json.loads(args.from_json.read_text()))
        write_results(results, args.out)
        show_results(console, results)
        console.print(f"rendered {args.from_json} to {args.out}")
        return 0
    options = options_from(args)
    needs_rig = options.builds or options.fanout or options.driver or options.levers
    if needs_rig and (missing := missing_prerequisites("remote")):
        console.print("layercache bench needs: " + "; ".join(missing) + " (run .ci/setup-docker)")
        return 2
    progress = BenchProgress(console, builds=build_count(options))
    with progress.bar:
        if args.workdir is not None:
            results = run_bench(options, args.workdir, progress.say, progress.build_measured)
        else:
            with tempfile.TemporaryDirectory(prefix="layercache-bench-") as tmp:
                results = run_bench(options, Path(tmp), progress.say, progress.build_measured)
    write_results(results, args.out)
    show_results(console, results)
    console.print(f"written to {args.out}/results.md, results.json, builds.png")
    return 0


def build_count(options: Options) -> int:
    return len(STRATEGIES) * len(SCENARIOS) * options.runs if options.builds else 0


class BenchProgress:
    """The run's progress lines, printed as they come, and on a terminal while builds run, a
    bar of the builds measured below them."""

    def __init__(self, console: Console, builds: int) -> None:
        self.console = console
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("builds"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("elapsed,"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=console,
            transient=True,
            speed_estimate_period=600,  # builds take tens of seconds each
            disable=not console.is_interactive,  # a log or a pipe gets the lines alone
        )
        self.builds = self.bar.add_task("builds", total=builds, visible=builds > 0)

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def build_measured(self) -> None:
        self.bar.advance(self.builds)
        if self.bar.tasks[self.builds].finished:
            self.bar.update(self.builds, visible=False)


def show_results(console: Console, results: Results) -> None:
    """What results.md says, with its tables drawn by rich."""
    for renderable in terminal_report(results, check_targets(results)):
        console.print()
        console.print(renderable)
    console.print()


def run_bench(
    options: Options,
    workdir: Path,
    say: Callable[[str], None],
    build_measured: Callable[[], None] = lambda: None,
) -> Results:
    """Measure what `options` ask for; the rig and its registry log live in `workdir`."""
    started = time.monotonic()
    workload = Workload(size_mb=options.size_mb, work_seconds=options.work_seconds)
    rate = options.rate_mb * 1e6
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "rate_bytes_per_second": rate,
        "size_mb": options.size_mb,
        "work_seconds": options.work_seconds,
        "runs": options.runs,
        "steps": STEPS,
        "registry_log": str(workdir / "rig" / "registry" / "registry.log"),
    }
    cells = []
    image_bytes = 0
    fanout: dict[str, Any] = {}
    driver: dict[str, Any] = {}
    if options.builds or options.fanout or options.driver or options.levers:

        def say_build(line: str) -> None:  # BuildBench says one line per build it measured
            say(line)
            build_measured()

        with (
            Rig(workdir / "rig") as rig,
            ThrottleProxy(("127.0.0.1", rig.registry.port), rate) as proxy,
        ):
            if options.builds:
                say(
                    f"builds: {options.size_mb:g} MB image, {options.work_seconds:g} s of work, "
                    f"{options.runs} run(s) per cell, registry link {options.rate_mb:g} MB/s"
                )
                bench = BuildBench(
                    rig,
                    registry_host=proxy.host,
                    proxy_counters=lambda: (proxy.bytes_down, proxy.bytes_up),
                    workload=workload,
                    runs=options.runs,
                    workdir=workdir,
                    say=say_build,
                )
                cells = bench.run()
                image_bytes = bench.image_bytes()
            if options.fanout:
                fanout = run_comparison(
                    rig,
                    registry_host=proxy.host,
                    workdir=workdir,
                    work_seconds=options.fanout_work_seconds,
                    size_mb=options.fanout_size_mb,
                    images=options.fanout_images,
                    provisioning_seconds=options.provisioning_seconds,
                    rate_bytes_per_second=rate,
                    say=say,
                ).as_json()
            if options.driver or options.levers:
                driver = measure_driver(options, rig, proxy.host, workload, workdir, say)
    overhead: dict[str, Any] = {}
    if options.overhead:
        say(f"overhead: cold-start imports x {options.import_runs}")
        overhead["cold_start"] = bench_overhead.cold_start_imports(options.import_runs)
        say(f"overhead: webhook x {options.webhook_iterations}")
        overhead["webhook"] = bench_overhead.run_part("webhook", options.webhook_iterations)
        say(f"overhead: pruner on {options.prune_images} images")
        overhead["pruner"] = {
            "plain": bench_overhead.plan_on_plain_data(options.prune_images, runs=5),
            "moto": bench_overhead.run_part("pruner-moto", options.prune_images),
        }
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    return Results(
        meta=meta,
        cells=cells,
        image_bytes=image_bytes,
        builder_cached_seconds=builder_cached_seconds(cells) if cells else 0.0,
        overhead=overhead,
        fanout=fanout,
        driver=driver,
    )


def measure_driver(
    options: Options,
    rig: Rig,
    host: str,
    workload: Workload,
    workdir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The driver's own costs (bench.driver_bench): its overhead over plain buildx on an
    unchanged rebuild, and the cold cache export per lever against no cache."""
    bench = BuildBench(
        rig,
        registry_host=host,
        proxy_counters=lambda: (0, 0),
        workload=workload,
        runs=options.runs,
        workdir=workdir / "driver-bench",
    )
    measured: dict[str, Any] = {}
    if options.driver:
        say(f"driver: unchanged rebuild, driver against plain buildx, {options.driver_runs} run(s)")
        measured["overhead"] = DriverOverhead(bench, runs=options.driver_runs, say=say).run()
    if options.levers:
        variants = workloads(options.size_mb, options.work_seconds)
        if not options.levers_compressible:
            variants = {name: w for name, w in variants.items() if not w.compressible_share}
        say(f"driver: cold cache export per lever, {', '.join(variants)}")
        measured["levers"] = ExportLevers(bench, runs=options.runs, say=say).run(variants)
    return measured


def write_results(results: Results, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    targets = check_targets(results)
    (out / "results.json").write_text(json.dumps(results_json(results, targets), indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(results, targets))
    if results.cells:
        (out / "builds.png").write_bytes(figure_png(builds_figure(results)))


def machine_description() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    parts = [f"{os.cpu_count()} cores ({cpu})", f"Linux {platform.release()}"]
    docker = shutil.which("docker") or "/usr/bin/docker"
    for label, command in (
        ("Docker", [docker, "version", "--format", "{{.Server.Version}}"]),
        ("buildx", [docker, "buildx", "version"]),
    ):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        words = done.stdout.split()
        if done.returncode == 0 and words:
            parts.append(
                f"{label} {words[1] if label == 'buildx' and len(words) > 1 else words[0]}"
            )
    return ", ".join(parts)
