"""Build strategies side by side on the rig, behind a rate-limited link to the registry.

Every strategy builds the same workload (bench.workload) in every scenario. A cell is
one (strategy, scenario); each of its runs pushes to a repository of its own that
starts as a copy of the strategy's first cold build (manifests copied and blobs
mounted inside the registry, before the measurement starts), and builds on a builder
whose local cache was emptied first, except the warm local builder, which keeps every
layer of its cold builds. Wall time is the whole strategy (pull, build, push, cache
export); bytes are the blob transfers the registry's own log shows between two marks.

The strategies:
- no cache: `buildx build --no-cache --push` on the standalone BuildKit;
- seed: `docker pull` the previous image, then build on the engine's own builder with
  `--cache-from` it and `BUILDKIT_INLINE_CACHE=1`, push (what this project grew from);
- inline cache without the pull: the standalone BuildKit, `--cache-from` the previous
  image, `--cache-to type=inline`;
- registry cache, mode=max: the real buildspec and driver (`Rig.build`);
- warm local builder: the standalone BuildKit with its local cache kept, no remote cache.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from layercache_dev.bench.workload import (
    BUILDER_STEPS_BEFORE_SOURCE,
    SCENARIOS,
    Scenario,
    Workload,
)
from layercache_dev.kit.driver import build_driver
from layercache_dev.kit.processes import RigError
from layercache_dev.kit.registry import MANIFEST_ACCEPT
from layercache_dev.kit.rig import Rig

BRANCH = "main"
CACHE_TAG = "cache-main"
RUNTIME_BASE_REPOSITORY = "layercache/runtime"


class Strategy(StrEnum):
    NO_CACHE = "no cache"
    SEED = "seed: pull + inline cache"
    INLINE = "inline cache, no pull"
    REGISTRY = "registry cache mode=max (ours)"
    WARM = "warm local builder (lower bound)"
    # The warm tier (BuildHost fleet/docker-server): the driver, cache flags and all, on a
    # builder whose local state is kept between builds; and its first build after the
    # host was recycled (an emptied builder, the registry cache the warm tier exported).
    WARM_TIER = "warm tier (ours, kept builder)"
    WARM_TIER_RECYCLED = "warm tier after a recycle"


STRATEGIES = tuple(Strategy)
SHORT_NAMES = {
    Strategy.NO_CACHE: "no-cache",
    Strategy.SEED: "seed",
    Strategy.INLINE: "inline",
    Strategy.REGISTRY: "registry",
    Strategy.WARM: "warm",
    Strategy.WARM_TIER: "warm-tier",
    Strategy.WARM_TIER_RECYCLED: "warm-tier-recycled",
}
#: Strategies whose builder keeps its local state after their cold build.
KEPT_BUILDER = (Strategy.WARM, Strategy.WARM_TIER)
#: The driver with its registry cache flags (`Rig.build`).
DRIVER_STRATEGIES = (Strategy.REGISTRY, Strategy.WARM_TIER, Strategy.WARM_TIER_RECYCLED)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


@dataclass
class Run:
    """One measured build."""

    seconds: float
    downloaded_bytes: int
    uploaded_bytes: int
    blob_downloads: int
    blob_uploads: int
    log_start: int  # registry log offsets: the span this run's bytes were read from
    log_end: int
    proxy_bytes_down: int  # what crossed the throttled link, HTTP included
    proxy_bytes_up: int
    cached_steps: int
    total_steps: int
    repository: str
    step_seconds: dict[str, float] = field(default_factory=dict)


class MeasuredRun(Protocol):
    seconds: float
    downloaded_bytes: int
    uploaded_bytes: int


class Medians:
    """The medians of a cell's runs (wall seconds, bytes down and up)."""

    runs: Sequence[MeasuredRun]

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def downloaded_bytes(self) -> int:
        return int(statistics.median(run.downloaded_bytes for run in self.runs))

    @property
    def uploaded_bytes(self) -> int:
        return int(statistics.median(run.uploaded_bytes for run in self.runs))


@dataclass
class Cell(Medians):
    strategy: Strategy
    scenario: Scenario
    runs: list[Run] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "strategy": str(self.strategy),
            "scenario": str(self.scenario),
            "median_seconds": round(self.seconds, 3),
            "median_downloaded_bytes": self.downloaded_bytes,
            "median_uploaded_bytes": self.uploaded_bytes,
            "runs": [asdict(run) for run in self.runs],
        }


class BenchError(RuntimeError):
    """A build of the benchmark failed."""


class BuildBench:
    """Runs every strategy in every scenario on one rig, through one throttled host."""

    def __init__(
        self,
        rig: Rig,
        *,
        registry_host: str,
        proxy_counters: Callable[[], tuple[int, int]],
        workload: Workload,
        runs: int,
        workdir: Path,
        say: Callable[[str], None] = lambda _: None,
        strategies: Iterable[Strategy] = STRATEGIES,
    ) -> None:
        self.rig = rig
        self.host = registry_host  # the throttling proxy's host:port
        self.proxy_counters = proxy_counters
        self.workload = workload
        self.runs = runs
        self.workdir = workdir
        self.say = say
        self.strategies = tuple(strategies)
        self.base = rig.base_image.replace(rig.registry.host, self.host, 1)
        self.runtime_base = f"{self.host}/{RUNTIME_BASE_REPOSITORY}:v1"
        self._commits = 0

    # ------------------------------------------------------------------ the whole grid

    def run(self) -> list[Cell]:
        self.push_runtime_base("v1", "runtime base v1")
        cells: list[Cell] = []
        for strategy in self.strategies:
            for scenario in SCENARIOS:
                cell = Cell(strategy, scenario)
                for number in range(1, self.runs + 1):
                    run = self.measure(strategy, scenario, number)
                    cell.runs.append(run)
                    self.say(
                        f"  {strategy} / {scenario} #{number}: {run.seconds:.1f}s, "
                        f"down {run.downloaded_bytes / 1e6:.1f} MB, "
                        f"up {run.uploaded_bytes / 1e6:.1f} MB, "
                        f"{run.cached_steps}/{run.total_steps} cached"
                    )
                cells.append(cell)
        return cells

    def image_bytes(self, strategy: Strategy = Strategy.NO_CACHE) -> int:
        """Layers + config of the image the strategy's first cold build pushed."""
        repository = self._repository(strategy, Scenario.COLD, 1)
        manifest = self.rig.registry.manifest(repository, BRANCH)
        if manifest is None:
            raise BenchError(f"no image {repository}:{BRANCH}")
        if "manifests" in manifest:
            platform = next(
                entry
                for entry in manifest["manifests"]
                if (entry.get("platform") or {}).get("os") != "unknown"
            )
            manifest = self.rig.registry.manifest(repository, platform["digest"]) or {}
        layers = manifest.get("layers") or []
        return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in layers)

    # ------------------------------------------------------------------ one run

    def _repository(self, strategy: Strategy, scenario: Scenario, number: int) -> str:
        return f"bench/{SHORT_NAMES[strategy]}/{slug(scenario)}-{number}"

    def measure(self, strategy: Strategy, scenario: Scenario, number: int) -> Run:
        name = self._repository(strategy, scenario, number)
        repository = f"{self.host}/{name}"
        runtime_base = self.runtime_base
        if scenario is Scenario.BASE_REFRESH:
            tag = f"refresh-{SHORT_NAMES[strategy]}-{number}"
            self.push_runtime_base(tag, f"runtime base refreshed for {name}")
            runtime_base = f"{self.host}/{RUNTIME_BASE_REPOSITORY}:{tag}"
        context = self.context(name, self.workload.files(scenario, number), runtime_base)
        if scenario is not Scenario.COLD:
            # The repository as the last cold build left it: a kept builder holds that
            # build's layers, and in the stack its cache export went to the same repository.
            last_cold = self.runs if strategy in KEPT_BUILDER else 1
            prior = self._repository(self._cache_source(strategy), Scenario.COLD, last_cold)
            for tag in (BRANCH, CACHE_TAG):
                copy_manifest(self.rig.registry.port, prior, name, tag)
        if strategy not in KEPT_BUILDER or scenario is Scenario.COLD:
            self._reset(strategy)

        mark = self.rig.registry.mark()
        down_before, up_before = self.proxy_counters()
        started = time.monotonic()
        progress = self._build(strategy, context, repository)
        seconds = time.monotonic() - started
        time.sleep(0.3)  # the registry logs a request just after answering it
        down_after, up_after = self.proxy_counters()
        end = self.rig.registry.mark()
        traffic = self.rig.registry.traffic(since=mark)
        return Run(
            seconds=seconds,
            downloaded_bytes=traffic.downloaded_bytes,
            uploaded_bytes=traffic.uploaded_bytes,
            blob_downloads=len(traffic.downloads),
            blob_uploads=len(traffic.uploads),
            log_start=mark,
            log_end=end,
            proxy_bytes_down=down_after - down_before,
            proxy_bytes_up=up_after - up_before,
            cached_steps=progress.cached,
            total_steps=progress.total,
            repository=name,
            step_seconds=progress.step_seconds,
        )

    def context(self, name: str, files: dict[str, str], runtime_base: str) -> Path:
        directory = self.workdir / "contexts" / name
        for path, text in files.items():
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if path == "Dockerfile":
                text = text.replace("{base}", self.base).replace("{runtime_base}", runtime_base)
            target.write_text(text)
        return directory

    def _cache_source(self, strategy: Strategy) -> Strategy:
        """Whose cold build a run's repository starts from: after a recycle, the registry
        cache the warm tier exported (when it ran), else the strategy's own."""
        if strategy is Strategy.WARM_TIER_RECYCLED and Strategy.WARM_TIER in self.strategies:
            return Strategy.WARM_TIER
        return strategy

    def _reset(self, strategy: Strategy) -> None:
        if strategy is Strategy.SEED:
            reset_engine(self.rig.docker, (self.host, self.rig.registry.host))
        else:
            self.rig.reset_builder()

    def _commit(self) -> str:
        self._commits += 1
        return f"{self._commits:040x}"

    def _build(self, strategy: Strategy, context: Path, repository: str) -> Progress:
        docker = self.rig.docker
        image = f"{repository}:{BRANCH}"
        common = ["--progress=rawjson", "--network", "none", "--tag", image, "--push"]
        if strategy in DRIVER_STRATEGIES:
            outcome = self.rig.build(
                context, repository=repository, branch=BRANCH, commit=self._commit(), reset=False
            )
            if not outcome.ok:
                raise BenchError(f"driver build of {repository} failed:\n{outcome.log[-3000:]}")
            cached = sum(1 for step in outcome.steps if step["cached"])
            return Progress(cached, len(outcome.steps), {})
        if strategy is Strategy.SEED:
            # The seed's pre-pull; the first build of a repository has nothing to pull.
            subprocess.run([docker, "pull", "--quiet", image], capture_output=True, check=False)
            command = [
                docker, "buildx", "build", "--builder", "default", *common,
                "--cache-from", image, "--build-arg", "BUILDKIT_INLINE_CACHE=1",
            ]  # fmt: skip
        elif strategy is Strategy.INLINE:
            command = [
                docker, "buildx", "build", "--builder", self.rig.builder, *common,
                "--cache-from", f"type=registry,ref={image}", "--cache-to", "type=inline",
            ]  # fmt: skip
        elif strategy is Strategy.NO_CACHE:
            command = [docker, "buildx", "build", "--builder", self.rig.builder, *common]
            command.append("--no-cache")
        else:  # the warm local builder: its own cache only
            command = [docker, "buildx", "build", "--builder", self.rig.builder, *common]
        result = subprocess.run(
            [*command, str(context)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise BenchError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        return Progress.parse(result.stderr)

    def push_runtime_base(self, tag: str, marker: str) -> None:
        """The runtime stage's base image: busybox plus a release file (new content per tag)."""
        context = self.workdir / "runtime-base" / tag
        context.mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text(
            f"FROM {self.rig.base_image}\nRUN echo '{marker}' > /etc/base-release\n"
        )
        target = f"{self.rig.registry.host}/{RUNTIME_BASE_REPOSITORY}:{tag}"
        result = subprocess.run(
            [self.rig.docker, "buildx", "build", "--builder", self.rig.builder, "--network",
             "none", "--provenance=false", "--tag", target, "--push", str(context)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise BenchError(f"pushing {target} failed:\n{result.stderr[-3000:]}")


@dataclass
class Progress:
    """Steps cached and each step's seconds, from a `--progress=rawjson` stream."""

    cached: int
    total: int
    step_seconds: dict[str, float]

    @classmethod
    def parse(cls, stream: str) -> Progress:
        summary = build_driver.summarize(build_driver.parse_progress(stream))
        steps = summary.steps
        return cls(
            cached=sum(1 for step in steps if step.cached),
            total=len(steps),
            step_seconds={step.name: round(step.seconds, 3) for step in steps},
        )


def reset_engine(docker: str, hosts: Iterable[str]) -> None:
    """Empty the engine's build cache and drop the images it holds from our registry."""
    subprocess.run(
        [docker, "buildx", "prune", "--builder", "default", "--all", "--force"],
        capture_output=True,
        check=False,
    )
    listed = subprocess.run(
        [docker, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    prefixes = tuple(f"{host}/" for host in hosts)
    ours = sorted({ref for ref in listed.stdout.split() if ref.startswith(prefixes)})
    if ours:
        subprocess.run([docker, "image", "rm", "--force", *ours], capture_output=True, check=False)


# ---------------------------------------------------------------- copying inside the registry


def _request(
    port: int, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, data, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def copy_manifest(port: int, source: str, target: str, reference: str) -> bool:
    """Copy `source:reference` (an index with its children, or a manifest) to `target`.

    Blobs are mounted from `source` (no bytes move); returns False when `source` has no
    such reference (a strategy that pushes no cache tag).
    """
    status, body, headers = _request(
        port, "GET", f"/v2/{source}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}
    )
    if status == 404:
        return False
    if status != 200:
        raise RigError(f"GET {source}:{reference}: HTTP {status}")
    document = json.loads(body)
    for child in document.get("manifests") or []:
        copy_manifest(port, source, target, child["digest"])
    blobs = [document["config"]] if "config" in document else []
    blobs += document.get("layers") or []
    for blob in blobs:
        mounted, _, _ = _request(
            port, "POST", f"/v2/{target}/blobs/uploads/?mount={blob['digest']}&from={source}"
        )
        if mounted != 201:
            raise RigError(f"mounting {blob['digest']} into {target}: HTTP {mounted}")
    media_type = headers.get("content-type") or str(document.get("mediaType"))
    put, answer, _ = _request(
        port,
        "PUT",
        f"/v2/{target}/manifests/{reference}",
        body=body,
        headers={"Content-Type": media_type},
    )
    if put != 201:
        raise RigError(f"PUT {target}:{reference}: HTTP {put} {answer[:300]!r}")
    return True


def builder_cached_seconds(cells: Iterable[Cell]) -> float:
    """Median cold seconds of the builder steps a source change leaves cached (no-cache cold)."""
    cold = next(c for c in cells if c.strategy is Strategy.NO_CACHE and c.scenario is Scenario.COLD)
    totals = []
    for run in cold.runs:
        totals.append(
            sum(
                seconds
                for name, seconds in run.step_seconds.items()
                if name.startswith("[builder")
                and any(k in name for k in BUILDER_STEPS_BEFORE_SOURCE)
            )
        )
    return statistics.median(totals) if totals else 0.0
