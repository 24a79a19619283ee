"""One build host against fan-out, for a Bake file of eight images.

The workload: a base image, four images built on it (each compiles its source in a stage
of its own, then installs its runtime on the base and copies the result in) and three
independent images. Every step does real work: it hashes zeros with busybox's
`sha256sum` (one core, calibrated on this machine so the eight images' cold steps take
`work_seconds` together) and writes incompressible bytes (`size_mb` in all).

The scenarios, one after the other on the same repositories: *cold* (nothing in the
registry), *base changed* (`base`'s source: the base and the four images on it rebuild,
their compile stages stay cached), *one target changed* (`api`'s source), *unchanged*.

Per scenario, the two ways to build, each through the real buildspec and driver, on
repositories of its own, every run on an emptied BuildKit (a fresh host):

- one host: one driver run of all eight images;
- fan-out: one run per image (its build of the batch: LAYERCACHE_FANOUT_IMAGES names
  that image, the first one also gets the newcomers), one after another in build order,
  each timed on its own so the machine's two cores do not skew the per-host times.
  CodeBuild runs the builds of a batch on hosts of their own, each after the builds it
  `depend-on`s: the batch's wall time is the longest path through that graph of (a
  build's time + the provisioning cost of its host).

This machine cannot start CodeBuild hosts, so the provisioning cost is a parameter
(`--provisioning-seconds`); a single host pays it once. The plan of every batch is the
one the starter would make from the last build's images (`built_on`); a real first
batch has none and is one build of every image (one host's time, plus provisioning).

The break-even is reported two ways: per scenario, the provisioning cost under which the
batch is faster than one host (`break_even_provisioning`); and, from the cold builds, the
average build time per image (one host's figure) from which fan-out pays at the chosen
provisioning cost, every image's build time scaled by the same factor and the runs'
fixed costs as measured (`break_even_image_seconds`).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from layercache_dev.kit.rig import Rig

MB = 1_000_000
BRANCH = "main"
BAKE_FILE_NAME = "docker-bake.hcl"
#: The provisioning cost of a CodeBuild build's host when none is given: the phases before
#: the build phase and the one after it, as one project's builds showed them (QUEUED 1 s,
#: PROVISIONING 24 s, DOWNLOAD_SOURCE 4 s, FINALIZING 2 s; blog.kriation.com/2021/
#: codebuild-cache-for-jekyll-build.html). Seen longer elsewhere: "at least 1 minute"
#: (CloudSnorkel/cdk-github-runners discussion #260), 180-250 s where the build image is
#: not cached in the region (aws/aws-codebuild-docker-images #424, #793). AWS publishes no
#: figure; reserved capacity fleets skip most of it.
DEFAULT_PROVISIONING_SECONDS = 30.0

BASE = "base"
DEPENDENTS = ("api", "worker", "web", "cron")  # built on base
INDEPENDENT = ("tool", "docs", "migrate")
MAX_IMAGES = 1 + len(DEPENDENTS) + len(INDEPENDENT)
CHANGED_TARGET = "api"
BASE_SHARE = 0.2  # of the work and the bytes; the other images share the rest evenly
# Within an image's share: the base's steps before and after its source; a dependent's
# compile stage and its runtime step on the base.
BASE_STEPS = {"os": 0.25, "app": 0.75}
DEPENDENT_STEPS = {"compile": 0.7, "runtime": 0.3}


class FanOutScenario(StrEnum):
    """In the order they run. The base changes before one target does: after a build in
    which an image's compile stage was all cached, BuildKit may leave that stage out of
    the image's mode=max cache export (moby/buildkit#6893, seen on the rig's BuildKit
    with or without its bases' cache refs), and the base change that follows would then
    compile again what it should find; after the base change, each stage ran or was read."""

    COLD = "cold"
    BASE = "base changed"
    TARGET = "one target changed"
    UNCHANGED = "unchanged"


FANOUT_SCENARIOS = tuple(FanOutScenario)


class FanOutBenchError(RuntimeError):
    """A build of the fan-out comparison failed."""


def hash_rate(busybox: str | None = None, sample_bytes: int = 32 * MB) -> float:
    """Bytes per second busybox's sha256sum hashes here (what a step's work is made of)."""
    binary = busybox or shutil.which("busybox") or "/bin/busybox"
    started = time.monotonic()
    subprocess.run(
        [binary, "sh", "-c", f"head -c {sample_bytes} /dev/zero | sha256sum > /dev/null"],
        check=True,
    )
    return sample_bytes / max(time.monotonic() - started, 1e-3)


@dataclass(frozen=True)
class FanOutWorkload:
    """The images' cold work (seconds, on this machine) and bytes (MB, every layer)."""

    work_seconds: float = 50.0
    size_mb: float = 100.0
    hash_bytes_per_second: float = 50 * MB
    dependents: tuple[str, ...] = DEPENDENTS
    independent: tuple[str, ...] = INDEPENDENT

    @property
    def images(self) -> tuple[str, ...]:
        return (BASE, *self.dependents, *self.independent)

    def step(self, path: str, share: float) -> str:
        """A RUN that hashes for its `share` of the work and writes its share of the bytes."""
        hashed = int(self.work_seconds * share * self.hash_bytes_per_second)
        written = int(self.size_mb * MB * share)
        folder = path.rsplit("/", 1)[0]
        return (
            f"RUN mkdir -p {folder} && head -c {hashed} /dev/zero | sha256sum > {path}.sum"
            f" && head -c {written} /dev/urandom > {path}.bin\n"
        )

    def dockerfiles(self) -> dict[str, str]:
        """Each image's Dockerfile; `{base}` stands for the busybox image, `base` for the
        Bake file's `target:base`."""
        each = (1 - BASE_SHARE) / (len(self.images) - 1)
        files = {
            BASE: "FROM {base}\n"
            + self.step("/opt/base/os", BASE_SHARE * BASE_STEPS["os"])
            + "COPY src/ /src/base/\n"
            + self.step("/opt/base/app", BASE_SHARE * BASE_STEPS["app"])
        }
        for image in self.dependents:
            files[image] = (
                "FROM {base} AS build\nCOPY src/ /src/\n"
                + self.step(f"/out/{image}", each * DEPENDENT_STEPS["compile"])
                + "FROM base\n"
                + self.step(f"/opt/{image}/runtime", each * DEPENDENT_STEPS["runtime"])
                + f"COPY --from=build /out/ /app/{image}/\n"
            )
        for image in self.independent:
            files[image] = "FROM {base}\nCOPY src/ /src/\n" + self.step(f"/opt/{image}", each)
        return files

    def bake_file(self) -> str:
        targets = ", ".join(f'"{image}"' for image in self.images)
        lines = ['group "default" {', f"  targets = [{targets}]", "}"]
        for image in self.images:
            lines += [f'target "{image}" {{', f'  context = "{image}"']
            if image in self.dependents:
                lines.append(f'  contexts = {{ base = "target:{BASE}" }}')
            lines.append("}")
        return "\n".join(lines) + "\n"

    def files(self, scenario: FanOutScenario) -> dict[str, str]:
        """The repository after `scenario` (each scenario's change is kept by the next)."""
        files = {BAKE_FILE_NAME: self.bake_file()}
        for image, dockerfile in self.dockerfiles().items():
            files[f"{image}/Dockerfile"] = dockerfile
            files[f"{image}/src/main.txt"] = f"{image} v1\n"
        order = list(FANOUT_SCENARIOS)
        if order.index(scenario) >= order.index(FanOutScenario.TARGET):
            files[f"{CHANGED_TARGET}/src/main.txt"] = f"{CHANGED_TARGET} v2\n"
        if order.index(scenario) >= order.index(FanOutScenario.BASE):
            files[f"{BASE}/src/main.txt"] = f"{BASE} v2\n"
        return files


# ---------------------------------------------------------------- what was measured


@dataclass
class HostRun:
    """One driver run on an emptied BuildKit (one host): what it built, how long it took."""

    images: list[str]  # in the order it built them
    seconds: float  # the whole buildspec's wall time
    image_seconds: dict[str, float]  # each image's build, as the driver timed it
    cached_steps: int
    total_steps: int
    downloaded_bytes: int  # blob bytes, from the registry's log
    uploaded_bytes: int
    built_on: dict[str, list[str]] = field(default_factory=dict)  # each image's bases

    @property
    def fixed_seconds(self) -> float:
        """What the run spent beside its images' builds (reading the Bake file, checking
        tags, learning the bases it did not build)."""
        return max(0.0, self.seconds - sum(self.image_seconds.values()))


@dataclass
class ScenarioResult:
    """One scenario: one host's run, and each build of the batch (by the image it builds)."""

    scenario: FanOutScenario
    single: HostRun
    children: dict[str, HostRun]
    depend_on: dict[str, list[str]]  # the batch's graph: each build's image -> its bases

    def paths(self) -> list[list[str]]:
        """Every path through the batch's graph that ends where no build waits on it."""
        waited_on = {base for bases in self.depend_on.values() for base in bases}

        def ending_at(image: str) -> list[list[str]]:
            bases = [base for base in self.depend_on.get(image, []) if base in self.children]
            if not bases:
                return [[image]]
            return [[*path, image] for base in bases for path in ending_at(base)]

        return [
            path for image in self.children if image not in waited_on for path in ending_at(image)
        ]

    def path_seconds(self, path: Sequence[str], provisioning: float) -> float:
        return sum(provisioning + self.children[image].seconds for image in path)

    def critical_path(self, provisioning: float) -> list[str]:
        return max(self.paths(), key=lambda path: self.path_seconds(path, provisioning))

    def fanout_wall(self, provisioning: float) -> float:
        """The batch's wall time: its longest path of (provisioning + a build's time)."""
        return self.path_seconds(self.critical_path(provisioning), provisioning)

    def single_wall(self, provisioning: float) -> float:
        return provisioning + self.single.seconds

    def break_even_provisioning(self) -> float | None:
        """The provisioning cost under which the batch beats one host (None: it never does,
        a path of the batch alone takes as long as one host's whole run)."""
        bounds = []
        for path in self.paths():
            spare = self.single.seconds - sum(self.children[image].seconds for image in path)
            if spare <= 0:
                return None
            if len(path) > 1:
                bounds.append(spare / (len(path) - 1))
        return min(bounds, default=float("inf"))

    def break_even_image_seconds(self, provisioning: float) -> float | None:
        """The mean build time per image (as one host builds them) from which the batch
        beats one host at `provisioning`, every image's build time scaled alike and the
        runs' fixed costs as measured; None: no scale makes it pay."""
        work = self.single.image_seconds
        total = sum(work.values())
        if total <= 0:
            return None
        lowest = 0.0
        for path in self.paths():
            path_work = sum(self.children[i].image_seconds.get(i, 0.0) for i in path)
            fixed = sum(provisioning + self.children[i].fixed_seconds for i in path)
            excess = fixed - (provisioning + self.single.fixed_seconds)
            if path_work >= total:
                if excess >= 0:
                    return None
                continue
            lowest = max(lowest, excess / (total - path_work))
        return lowest * total / len(work)

    def as_json(self, provisioning: float) -> dict[str, Any]:
        break_even = self.break_even_provisioning()
        image_break_even = self.break_even_image_seconds(provisioning)
        return {
            "scenario": str(self.scenario),
            "single": asdict(self.single),
            "children": {image: asdict(run) for image, run in self.children.items()},
            "depend_on": self.depend_on,
            "single_wall_seconds": round(self.single_wall(provisioning), 3),
            "fanout_wall_seconds": round(self.fanout_wall(provisioning), 3),
            "critical_path": self.critical_path(provisioning),
            "longest_child_seconds": round(max(r.seconds for r in self.children.values()), 3),
            "children_seconds": round(sum(r.seconds for r in self.children.values()), 3),
            "break_even_provisioning_seconds": (
                None if break_even is None else round(break_even, 3)
            ),
            "break_even_image_seconds": (
                None if image_break_even is None else round(image_break_even, 3)
            ),
        }


@dataclass
class FanOutComparison:
    """Every scenario, and how the figures were made."""

    provisioning_seconds: float
    workload: FanOutWorkload
    rate_bytes_per_second: float
    scenarios: list[ScenarioResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        cold = next((s for s in self.scenarios if s.scenario is FanOutScenario.COLD), None)
        image_break_even = (
            None if cold is None else cold.break_even_image_seconds(self.provisioning_seconds)
        )
        return {
            "provisioning_seconds": self.provisioning_seconds,
            "work_seconds": self.workload.work_seconds,
            "size_mb": self.workload.size_mb,
            "hash_bytes_per_second": round(self.workload.hash_bytes_per_second),
            "rate_bytes_per_second": self.rate_bytes_per_second,
            "images": list(self.workload.images),
            "changed_target": CHANGED_TARGET,
            "break_even_image_seconds": (
                None if image_break_even is None else round(image_break_even, 3)
            ),
            "scenarios": [s.as_json(self.provisioning_seconds) for s in self.scenarios],
        }


# ---------------------------------------------------------------- measuring


class FanOutBench:
    """Builds the workload both ways in every scenario, on one rig, through `registry_host`."""

    def __init__(
        self,
        rig: Rig,
        *,
        registry_host: str,
        workload: FanOutWorkload,
        workdir: Path,
        provisioning_seconds: float = DEFAULT_PROVISIONING_SECONDS,
        rate_bytes_per_second: float = 0.0,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.rig = rig
        self.host = registry_host
        self.workload = workload
        self.workdir = workdir
        self.provisioning = provisioning_seconds
        self.rate = rate_bytes_per_second
        self.say = say
        self.base = rig.base_image.replace(rig.registry.host, registry_host, 1)
        self._commits = 0

    def run(self) -> FanOutComparison:
        comparison = FanOutComparison(self.provisioning, self.workload, self.rate)
        plan: list[tuple[str, list[str]]] = []
        for scenario in FANOUT_SCENARIOS:
            files = self.workload.files(scenario)
            single_root = self._write("single", files)
            fanout_root = self._write("fanout", files)
            commit = self._commit()
            single = self._host_run(single_root, "single", commit, {})
            self.say(
                f"  fan-out / {scenario}: one host {single.seconds:.1f}s, "
                f"{single.cached_steps}/{single.total_steps} cached"
            )
            if not plan:  # what the starter plans from: the last build's images
                plan = list(single.built_on.items())
            planned = [image for image, _ in plan]
            children = {}
            for number, (image, _) in enumerate(plan):
                env = {
                    "LAYERCACHE_FANOUT_IMAGES": image,
                    "LAYERCACHE_FANOUT_PLANNED": ",".join(planned),
                    "LAYERCACHE_FANOUT_NEWCOMERS": "true" if number == 0 else "false",
                }
                children[image] = self._host_run(fanout_root, "fanout", commit, env)
            result = ScenarioResult(scenario, single, children, dict(plan))
            comparison.scenarios.append(result)
            self.say(
                f"  fan-out / {scenario}: batch of {len(children)}, longest "
                f"{max(r.seconds for r in children.values()):.1f}s, wall "
                f"{result.fanout_wall(self.provisioning):.1f}s against one host's "
                f"{result.single_wall(self.provisioning):.1f}s "
                f"(provisioning {self.provisioning:g}s)"
            )
        return comparison

    def _write(self, name: str, files: Mapping[str, str]) -> Path:
        root = self.workdir / "fanout-repos" / name
        for path, text in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.replace("{base}", self.base))
        return root

    def _commit(self) -> str:
        self._commits += 1
        return f"{self._commits:040x}"

    def _host_run(self, root: Path, name: str, commit: str, fanout: dict[str, str]) -> HostRun:
        """One run of the buildspec on an emptied BuildKit (`Rig.build` empties it first)."""
        mark = self.rig.registry.mark()
        outcome = self.rig.build(
            root,
            repository=f"{self.host}/bench-fanout/{name}",
            branch=BRANCH,
            commit=commit,
            extra_env={
                "LAYERCACHE_BAKE_FILE": BAKE_FILE_NAME,
                "LAYERCACHE_BAKE_TARGETS": "",
                **fanout,
            },
        )
        if not outcome.ok:
            raise FanOutBenchError(f"the {name} build failed:\n{outcome.log[-3000:]}")
        traffic = self.rig.registry.traffic(since=mark)
        images: dict[str, Any] = outcome.report.get("images") or {}
        return HostRun(
            images=list(images),
            seconds=outcome.seconds,
            image_seconds={image: float(r["wall_seconds"]) for image, r in images.items()},
            cached_steps=sum(int(r["cached_steps"]) for r in images.values()),
            total_steps=sum(int(r["total_steps"]) for r in images.values()),
            downloaded_bytes=traffic.downloaded_bytes,
            uploaded_bytes=traffic.uploaded_bytes,
            built_on={image: list(r["built_on"]) for image, r in images.items()},
        )


def shape(images: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The images built on the base and the independent ones, for `images` in all (2 to 8):
    the eight's proportions (four on the base, three apart); `--quick` builds four."""
    if not 2 <= images <= MAX_IMAGES:
        raise ValueError(f"the fan-out workload has 2 to {MAX_IMAGES} images, not {images}")
    others = images - 1
    dependents = max(1, min(len(DEPENDENTS), round(others * len(DEPENDENTS) / (MAX_IMAGES - 1))))
    return DEPENDENTS[:dependents], INDEPENDENT[: others - dependents]


def run_comparison(
    rig: Rig,
    *,
    registry_host: str,
    workdir: Path,
    work_seconds: float,
    size_mb: float,
    images: int,
    provisioning_seconds: float,
    rate_bytes_per_second: float,
    say: Callable[[str], None],
) -> FanOutComparison:
    """Calibrate the work on this machine, then measure every scenario both ways."""
    rate = hash_rate()
    dependents, independent = shape(images)
    workload = FanOutWorkload(work_seconds, size_mb, rate, dependents, independent)
    say(
        f"fan-out: a Bake file of {images} images, {work_seconds:g} s of work when cold "
        f"(sha256 at {rate / MB:.0f} MB/s here), {size_mb:g} MB; provisioning "
        f"{provisioning_seconds:g} s per build"
    )
    bench = FanOutBench(
        rig,
        registry_host=registry_host,
        workload=workload,
        workdir=workdir,
        provisioning_seconds=provisioning_seconds,
        rate_bytes_per_second=rate_bytes_per_second,
        say=say,
    )
    return bench.run()
