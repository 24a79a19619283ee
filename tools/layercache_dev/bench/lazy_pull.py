"""The lazy-pulling experiment (issue 16): eStargz cache layers on a stargz-snapshotter BuildKit.

A fresh host rebuilding after a change downloads the layers its rebuilt steps run on; a
warm host already has them. BuildKit's stargz snapshotter mounts eStargz layers over
FUSE and fetches only the files a step reads (HTTP range requests), and BuildKit's
registry cache importer hands it cache layers too (moby/buildkit#2648). This measures,
behind the bench's throttled link and with the bench's workload::

    .venv/bin/python -m layercache_dev.bench.lazy_pull --size-mb 100 --runs 3

- fresh host, registry cache (gzip): a buildkitd with the overlayfs snapshotter, the
  driver's buildx flags (`--cache-from`/`--cache-to type=registry,mode=max,...`);
- fresh host, lazy (eStargz): the same flags plus `compression=estargz,
  oci-mediatypes=true` on the image and on the cache, on a buildkitd with
  `--oci-worker-snapshotter=stargz`; `force-compression=true` on the cold build (so the
  base images' layers become eStargz too), and on rebuilds only with
  `--force-on-rebuilds` (it downloads every cached layer whole: see `build_command`);
  `--no-background-fetch` stops the snapshotter fetching whole layers behind a build;
- warm builder: a buildkitd that kept its cold build (no remote cache), the lower bound.

Each variant has a buildkitd of its own (its own root and socket, a buildx `remote`
builder, as `kit.buildkit` runs the rig's); the two fresh-host ones are restarted on an
emptied root before every run, so neither keeps layers or the snapshotter's fetched
chunks. The runs of the three variants alternate, so a busy machine slows all alike.
When the stargz snapshotter can't run here (no /dev/fuse, not compiled in, FUSE mount
refused), it says why and measures nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from layercache_dev.bench.builds import (
    BRANCH,
    CACHE_TAG,
    Medians,
    Progress,
    copy_manifest,
    slug,
)
from layercache_dev.bench.throttle import ThrottleProxy
from layercache_dev.bench.workload import MB, Scenario, Workload
from layercache_dev.kit.buildkit import stop_buildkitd
from layercache_dev.kit.lifecycle import Lifecycle
from layercache_dev.kit.prerequisites import missing_prerequisites
from layercache_dev.kit.processes import RigError, run_checked, wait_for
from layercache_dev.kit.rig import Rig

#: The issue's bar: a fresh host within this factor of the warm builder.
TARGET_RATIO = 1.15
RUNTIME_BASE_REPOSITORY = "layercache/lazy-runtime"
SCENARIOS = (Scenario.HALFWAY, Scenario.BUILDER)


class Variant(StrEnum):
    GZIP = "fresh host, registry cache (overlayfs, gzip)"
    LAZY = "fresh host, lazy (stargz, eStargz)"
    WARM = "warm builder (lower bound)"


SHORT_NAMES = {Variant.GZIP: "gzip", Variant.LAZY: "lazy", Variant.WARM: "warm"}


@dataclass
class LazyRun:
    """One measured build: wall seconds and the blob bytes the registry's log shows."""

    seconds: float
    downloaded_bytes: int
    uploaded_bytes: int
    blob_downloads: int  # GETs of blobs, ranged ones included
    link_bytes_down: int  # what crossed the throttled link, HTTP included
    cached_steps: int
    total_steps: int


@dataclass
class LazyCell(Medians):
    variant: Variant
    scenario: Scenario
    runs: list[LazyRun] = field(default_factory=list)


def ratio_to_warm(cells: Iterable[LazyCell], variant: Variant, scenario: Scenario) -> float:
    """Median seconds of `variant` over the warm builder's, in `scenario`."""
    by_key = {(cell.variant, cell.scenario): cell for cell in cells}
    warm = by_key[(Variant.WARM, scenario)].seconds
    if warm <= 0:
        raise ValueError(f"the warm builder's median for {scenario} is {warm}")
    return by_key[(variant, scenario)].seconds / warm


def megabytes(count: int) -> str:
    if count < MB // 10:
        return f"{count / 1000:.1f} KB"
    return f"{count / MB:.1f} MB"


def render_table(cells: Sequence[LazyCell], target: float = TARGET_RATIO) -> str:
    """A markdown table: per scenario and variant, median seconds, bytes and x warm."""
    lines = [
        "| scenario | variant | median s (runs) | downloaded | uploaded | x warm "
        f"| within {target:g}x |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for cell in cells:
        runs = ", ".join(f"{run.seconds:.1f}" for run in cell.runs)
        if cell.variant is Variant.WARM:
            ratio, met = "1.00", "(bound)"
        else:
            value = ratio_to_warm(cells, cell.variant, cell.scenario)
            ratio, met = f"{value:.2f}", "yes" if value <= target else "**no**"
        lines.append(
            f"| {cell.scenario} | {cell.variant} | {cell.seconds:.1f} ({runs}) "
            f"| {megabytes(cell.downloaded_bytes)} | {megabytes(cell.uploaded_bytes)} "
            f"| {ratio} | {met} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the builders


class ExperimentBuildKit(Lifecycle):
    """A buildkitd of the experiment's own (OCI worker, a chosen snapshotter), reached as a
    buildx `remote` builder; `reset()` restarts it on an emptied root: a fresh host."""

    def __init__(
        self, workdir: Path, docker: str, name: str, *, snapshotter: str, config: str = ""
    ) -> None:
        self.workdir = workdir
        self.docker = docker
        self.name = name
        self.snapshotter = snapshotter
        self.config = config  # buildkitd.toml text, e.g. the stargz snapshotter's options
        self.socket = workdir / "buildkitd.sock"
        self.root = workdir / "root"
        self.log_path = workdir / "buildkitd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        command = [
            shutil.which("buildkitd") or "buildkitd",
            "--root", str(self.root),
            "--addr", f"unix://{self.socket}",
            "--oci-worker=true",
            f"--oci-worker-snapshotter={self.snapshotter}",
            "--containerd-worker=false",
        ]  # fmt: skip
        if self.config:
            config_path = self.workdir / "buildkitd.toml"
            config_path.write_text(self.config)
            command += ["--config", str(config_path)]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._serving, f"buildkitd --oci-worker-snapshotter={self.snapshotter}")
        run_checked([self.docker, "buildx", "rm", self.name], check=False)
        run_checked(
            [self.docker, "buildx", "create", "--name", self.name, "--driver", "remote",
             f"unix://{self.socket}"]
        )  # fmt: skip
        inspect = run_checked([self.docker, "buildx", "inspect", "--bootstrap", self.name])
        if not re.search(rf"worker\.snapshotter:\s+{self.snapshotter}\b", inspect.stdout):
            raise RigError(f"{self.name} reports no {self.snapshotter} worker:\n{inspect.stdout}")

    def _serving(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise RigError(f"buildkitd exited ({self._process.returncode}):\n{tail}")
        return self.socket.exists()

    def stop(self) -> None:
        stop_buildkitd(self.docker, self.name, self._process)
        self._process = None
        unmount_below(self.root)

    def reset(self) -> None:
        """Stop, empty the root (layers, snapshots, the stargz chunk cache), start again."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.start()


def unmount_below(directory: Path) -> None:
    """Lazily unmount whatever is mounted under `directory` (FUSE layers, overlays)."""
    prefix = f"{directory.resolve()}/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if len(line.split()) > 1 and line.split()[1].startswith(prefix)
    ]
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def missing_lazy_prerequisites() -> list[str]:
    """What this machine lacks for the lazy variant, before trying it (empty: all there)."""
    missing = missing_prerequisites("remote")
    if not Path("/dev/fuse").exists():
        missing.append("no /dev/fuse (the stargz snapshotter mounts layers over FUSE)")
    return missing


# ---------------------------------------------------------------- the experiment


class LazyPullExperiment:
    """The three variants in each scenario on one rig, through one throttled link."""

    def __init__(
        self,
        rig: Rig,
        proxy: ThrottleProxy,
        builders: dict[Variant, ExperimentBuildKit],
        *,
        workload: Workload,
        runs: int,
        workdir: Path,
        scenarios: Sequence[Scenario] = SCENARIOS,
        force_on_rebuilds: bool = False,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.rig = rig
        self.proxy = proxy
        self.builders = builders
        self.workload = workload
        self.runs = runs
        self.workdir = workdir
        self.scenarios = tuple(scenarios)
        self.force_on_rebuilds = force_on_rebuilds
        self.say = say
        self.base = rig.base_image.replace(rig.registry.host, proxy.host, 1)
        self.runtime_base = f"{proxy.host}/{RUNTIME_BASE_REPOSITORY}:v1"

    def run(self) -> list[LazyCell]:
        self._push_runtime_base()
        for variant in Variant:
            cold = self.measure(variant, Scenario.COLD, 1)
            self.say(f"  {variant} / cold: {cold.seconds:.1f}s")
        cells = {
            (variant, scenario): LazyCell(variant, scenario)
            for scenario in self.scenarios
            for variant in Variant
        }
        for scenario in self.scenarios:
            for number in range(1, self.runs + 1):
                for variant in Variant:  # alternating: a busy machine slows all alike
                    run = self.measure(variant, scenario, number)
                    cells[(variant, scenario)].runs.append(run)
                    self.say(
                        f"  {variant} / {scenario} #{number}: {run.seconds:.1f}s, "
                        f"down {megabytes(run.downloaded_bytes)} in {run.blob_downloads} GETs, "
                        f"up {megabytes(run.uploaded_bytes)}, "
                        f"{run.cached_steps}/{run.total_steps} cached"
                    )
        return list(cells.values())

    def _repository(self, variant: Variant, scenario: Scenario, number: int) -> str:
        return f"lazy/{SHORT_NAMES[variant]}/{slug(scenario)}-{number}"

    def measure(self, variant: Variant, scenario: Scenario, number: int) -> LazyRun:
        name = self._repository(variant, scenario, number)
        context = self._context(name, self.workload.files(scenario, number))
        if scenario is not Scenario.COLD:
            prior = self._repository(variant, Scenario.COLD, 1)
            for tag in (BRANCH, CACHE_TAG):
                copy_manifest(self.rig.registry.port, prior, name, tag)
        builder = self.builders[variant]
        if variant is not Variant.WARM or scenario is Scenario.COLD:
            builder.reset()
        command = build_command(
            self.rig.docker,
            builder.name,
            variant,
            f"{self.proxy.host}/{name}",
            # the cold build converts the base images' layers too; a rebuild only if asked
            force_compression=scenario is Scenario.COLD or self.force_on_rebuilds,
        )
        mark = self.rig.registry.mark()
        link_before = self.proxy.bytes_down
        started = time.monotonic()
        result = subprocess.run(
            [*command, str(context)], capture_output=True, text=True, check=False
        )
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise RigError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        time.sleep(0.3)  # the registry logs a request just after answering it
        traffic = self.rig.registry.traffic(since=mark)
        progress = Progress.parse(result.stderr)
        return LazyRun(
            seconds=seconds,
            downloaded_bytes=traffic.downloaded_bytes,
            uploaded_bytes=traffic.uploaded_bytes,
            blob_downloads=len(traffic.downloads),
            link_bytes_down=self.proxy.bytes_down - link_before,
            cached_steps=progress.cached,
            total_steps=progress.total,
        )

    def _context(self, name: str, files: dict[str, str]) -> Path:
        directory = self.workdir / "contexts" / name
        for path, text in files.items():
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if path == "Dockerfile":
                text = text.replace("{base}", self.base).replace(
                    "{runtime_base}", self.runtime_base
                )
            target.write_text(text)
        return directory

    def _push_runtime_base(self) -> None:
        """The runtime stage's base: busybox plus a release file, pushed by the rig's builder."""
        context = self.workdir / "runtime-base"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text(
            f"FROM {self.rig.base_image}\nRUN echo 'lazy-pull runtime base' > /etc/base-release\n"
        )
        target = f"{self.rig.registry.host}/{RUNTIME_BASE_REPOSITORY}:v1"
        run_checked(
            [self.rig.docker, "buildx", "build", "--builder", self.rig.builder, "--network",
             "none", "--provenance=false", "--tag", target, "--push", str(context)]
        )  # fmt: skip


def build_command(
    docker: str,
    builder: str,
    variant: Variant,
    repository: str,
    *,
    force_compression: bool = True,
) -> list[str]:
    """The buildx command of one run (without the context): the driver's flags for the
    registry cache, eStargz on the image and the cache for the lazy variant, no remote
    cache for the warm builder.

    `force_compression` (lazy variant) converts every layer, cached ones included, to
    eStargz. To see whether a cached layer needs converting, BuildKit reads it
    (`estargzType.NeedsConversion`), which downloads a lazy layer whole; without it only
    newly built layers are written as eStargz, and cached ones stay as they are.
    """
    image = f"{repository}:{BRANCH}"
    command = [docker, "buildx", "build", "--builder", builder, "--progress=rawjson",
               "--network", "none"]  # fmt: skip
    if variant is Variant.WARM:
        return [*command, "--tag", image, "--push"]
    cache = f"type=registry,ref={repository}:{CACHE_TAG}"
    cache_to = f"{cache},mode=max,image-manifest=true,oci-mediatypes=true"
    if variant is Variant.LAZY:
        estargz = "compression=estargz" + (",force-compression=true" if force_compression else "")
        return [
            *command,
            "--output", f"type=image,name={image},push=true,oci-mediatypes=true,{estargz}",
            "--cache-from", cache,
            "--cache-to", f"{cache_to},{estargz}",
        ]  # fmt: skip
    return [*command, "--tag", image, "--push", "--cache-from", cache, "--cache-to", cache_to]


def stargz_config(background_fetch: bool) -> str:
    """buildkitd.toml for the stargz snapshotter; by default it fetches whole layers in the
    background after mounting them, which competes with a build for the link."""
    if background_fetch:
        return ""
    return "[worker.oci.stargzSnapshotter]\n  no_background_fetch = true\n"


# ---------------------------------------------------------------- the command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m layercache_dev.bench.lazy_pull", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size-mb", type=float, default=100.0, help="image size (default 100)")
    parser.add_argument("--work-seconds", type=float, default=10.0, help="cold work (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (default 3)")
    parser.add_argument("--rate", type=float, default=50.0, help="link, MB/s each way")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[slug(s) for s in SCENARIOS],
        help="a scenario to measure (repeatable; default both)",
    )
    parser.add_argument(
        "--no-background-fetch",
        action="store_true",
        help="stargz snapshotter: fetch only what steps read (no whole-layer background fetch)",
    )
    parser.add_argument(
        "--force-on-rebuilds",
        action="store_true",
        help="lazy variant: force-compression=true on rebuilds too (it downloads cached layers)",
    )
    parser.add_argument("--workdir", type=Path, help="rig and builders (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write every run here as JSON")
    return parser.parse_args(argv)


def run_experiment(args: argparse.Namespace, workdir: Path) -> list[LazyCell]:
    scenarios = [s for s in SCENARIOS if not args.scenario or slug(s) in args.scenario]
    with Rig(workdir / "rig") as rig:
        docker = rig.docker
        builders = {
            Variant.GZIP: ExperimentBuildKit(
                workdir / "gzip", docker, "lc-lazy-gzip", snapshotter="overlayfs"
            ),
            Variant.LAZY: ExperimentBuildKit(
                workdir / "stargz",
                docker,
                "lc-lazy-stargz",
                snapshotter="stargz",
                config=stargz_config(background_fetch=not args.no_background_fetch),
            ),
            Variant.WARM: ExperimentBuildKit(
                workdir / "warm", docker, "lc-lazy-warm", snapshotter="overlayfs"
            ),
        }
        try:
            with ThrottleProxy(("127.0.0.1", rig.registry.port), args.rate * MB) as proxy:
                experiment = LazyPullExperiment(
                    rig,
                    proxy,
                    builders,
                    workload=Workload(size_mb=args.size_mb, work_seconds=args.work_seconds),
                    runs=args.runs,
                    workdir=workdir,
                    scenarios=scenarios,
                    force_on_rebuilds=args.force_on_rebuilds,
                    say=print,
                )
                return experiment.run()
        finally:
            for builder in builders.values():
                builder.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_lazy_prerequisites():
        print("lazy-pull experiment skipped: " + "; ".join(missing))
        return 0
    print(
        f"lazy pulling: {args.size_mb:g} MB image, {args.work_seconds:g} s of work, "
        f"{args.runs} run(s) per cell, link {args.rate:g} MB/s, background fetch "
        f"{'off' if args.no_background_fetch else 'on'}, force-compression on "
        f"{'every build' if args.force_on_rebuilds else 'the cold build only'}"
    )
    try:
        if args.workdir is not None:
            cells = run_experiment(args, args.workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="layercache-lazy-") as tmp:
                cells = run_experiment(args, Path(tmp))
    except RigError as error:
        if "stargz" in str(error) or "fuse" in str(error).lower():
            print(f"lazy-pull experiment skipped: the stargz snapshotter can't run here: {error}")
            return 0
        raise
    print(render_table(cells))
    if args.json is not None:
        args.json.write_text(json.dumps([cell_json(cell) for cell in cells], indent=2))
    return 0


def cell_json(cell: LazyCell) -> dict[str, Any]:
    return {
        "variant": str(cell.variant),
        "scenario": str(cell.scenario),
        "median_seconds": round(cell.seconds, 3),
        "runs": [asdict(run) for run in cell.runs],
    }


if __name__ == "__main__":
    sys.exit(main())
