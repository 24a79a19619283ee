"""The driver's own costs on the rig: what exporting the cache adds to a cold build, per
`--cache-to` lever, and what the driver adds to an unchanged rebuild over plain buildx.

Both run on the rig's standalone BuildKit behind the throttled link, like the strategies
(bench.builds), and each compares two things measured in the same run:

- export levers (`ExportLevers`): the workload built cold on an emptied builder with
  plain `docker buildx build --push` and each lever's `--cache-to` (the cache in a
  repository of its own, `<image repository>-cache`, as the stack keeps it), against
  the same build without a cache; on the default workload (random bytes) and on one
  whose files compress about 2.2x (`Workload.compressible_share`);
- driver overhead (`DriverOverhead`): an unchanged rebuild on an emptied builder, run by
  the driver (`python3 build_driver.py`, as the buildspec runs it) and by plain
  `docker buildx build` with exactly the arguments the driver gives buildx
  (`build_driver.buildx_command`), alternating, a new commit each time.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layercache_dev.bench.builds import BenchError, BuildBench, slug
from layercache_dev.bench.workload import Scenario, Workload
from layercache_dev.kit.driver import DRIVER_PATH, build_driver
from layercache_dev.kit.rig import Rig

BRANCH = "main"
#: What the driver's `--cache-to` said before this comparison (gzip, BuildKit's default).
OPTIONS_BEFORE = "mode=max,image-manifest=true,oci-mediatypes=true"
#: The compressible workload's share of text (hexadecimal of random bytes, ~2.2x smaller).
COMPRESSIBLE_SHARE = 1.0
#: Targets (issue 16): a cold build within 10% of no cache, the driver within 0.1 s.
COLD_EXPORT_TARGET = 1.10
DRIVER_OVERHEAD_TARGET_SECONDS = 0.1


@dataclass(frozen=True)
class Lever:
    """One way to export the cache: `cache_to` is what follows the ref in `--cache-to`;
    None builds without a cache (the reference)."""

    name: str
    cache_to: str | None


NO_CACHE = Lever("no cache", None)
LEVERS = (
    NO_CACHE,
    Lever("gzip (before)", OPTIONS_BEFORE),
    Lever("zstd", OPTIONS_BEFORE + ",compression=zstd"),
    Lever("zstd, forced", OPTIONS_BEFORE + ",compression=zstd,force-compression=true"),
)
#: Measured once for docs/build-cache.md, left out of `make bench` (they did not pay).
MORE_LEVERS = (
    Lever("uncompressed", OPTIONS_BEFORE + ",compression=uncompressed"),
    Lever("zstd level 1", OPTIONS_BEFORE + ",compression=zstd,compression-level=1"),
)


def levers_with_ours(levers: Sequence[Lever] = LEVERS) -> list[Lever]:
    """`levers`, and the driver's own `--cache-to` options if none of them is it."""
    ours = build_driver.CACHE_EXPORT_OPTIONS
    if any(lever.cache_to == ours for lever in levers):
        return list(levers)
    return [*levers, Lever("the driver's", ours)]


def workloads(size_mb: float, work_seconds: float) -> dict[str, Workload]:
    return {
        "random bytes": Workload(size_mb=size_mb, work_seconds=work_seconds),
        "compressible": Workload(
            size_mb=size_mb, work_seconds=work_seconds, compressible_share=COMPRESSIBLE_SHARE
        ),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


class ExportLevers:
    """Cold builds per lever and workload, on one rig through one throttled host."""

    def __init__(
        self,
        bench: BuildBench,
        *,
        runs: int,
        say: Callable[[str], None] = lambda _: None,
        levers: Sequence[Lever] | None = None,
    ) -> None:
        self.bench = bench
        self.rig: Rig = bench.rig
        self.runs = runs
        self.say = say
        self.levers = list(levers) if levers is not None else levers_with_ours()

    def run(self, variants: dict[str, Workload]) -> dict[str, Any]:
        self.bench.push_runtime_base("v1", "runtime base v1")
        tables = []
        for variant, workload in variants.items():
            measured: dict[str, list[dict[str, Any]]] = {lever.name: [] for lever in self.levers}
            for number in range(1, self.runs + 1):
                # Alternate the order, so no lever always follows another.
                order = self.levers if number % 2 else list(reversed(self.levers))
                for lever in order:
                    run = self.measure(lever, variant, workload, number)
                    measured[lever.name].append(run)
                    self.say(
                        f"  export {variant} / {lever.name} #{number}: {run['seconds']:.1f}s, "
                        f"up {run['uploaded_bytes'] / 1e6:.1f} MB "
                        f"(cache {run['cache_uploaded_bytes'] / 1e6:.1f} MB), "
                        f"{run['mounts']} mount(s)"
                    )
            tables.append({"workload": variant, "rows": self.rows(measured)})
        return {
            "size_mb": self.bench.workload.size_mb,
            "work_seconds": self.bench.workload.work_seconds,
            "runs": self.runs,
            "compressible_share": COMPRESSIBLE_SHARE,
            "chosen": build_driver.CACHE_EXPORT_OPTIONS,
            "tables": tables,
        }

    def rows(self, measured: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        reference = median([run["seconds"] for run in measured[NO_CACHE.name]])
        rows = []
        for lever in self.levers:
            runs = measured[lever.name]
            seconds = median([run["seconds"] for run in runs])
            rows.append(
                {
                    "lever": lever.name,
                    "cache_to": lever.cache_to,
                    "seconds": round(seconds, 3),
                    "ratio_to_no_cache": round(seconds / reference, 4) if reference else None,
                    "uploaded_bytes": int(median([run["uploaded_bytes"] for run in runs])),
                    "cache_uploaded_bytes": int(
                        median([run["cache_uploaded_bytes"] for run in runs])
                    ),
                    "mounts": int(median([run["mounts"] for run in runs])),
                    "runs": runs,
                }
            )
        return rows

    def measure(
        self, lever: Lever, variant: str, workload: Workload, number: int
    ) -> dict[str, Any]:
        name = f"export/{slug(variant)}/{slug(lever.name)}-{number}"
        repository = f"{self.bench.host}/{name}"
        cache_name = f"{name}-cache"
        context = self.bench.context(
            name, workload.files(Scenario.COLD, number), self.bench.runtime_base
        )
        command = [
            self.rig.docker, "buildx", "build", "--builder", self.rig.builder,
            "--progress=rawjson", "--network", "none", "--tag", f"{repository}:{BRANCH}", "--push",
        ]  # fmt: skip
        if lever.cache_to is not None:
            cache_ref = f"{self.bench.host}/{cache_name}:cache-{BRANCH}"
            command += ["--cache-from", f"type=registry,ref={cache_ref}"]
            command += ["--cache-to", f"type=registry,ref={cache_ref},{lever.cache_to}"]
        self.rig.reset_builder()
        mark = self.rig.registry.mark()
        started = time.monotonic()
        result = subprocess.run(
            [*command, str(context)], capture_output=True, text=True, check=False
        )
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise BenchError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        time.sleep(0.3)  # the registry logs a request just after answering it
        traffic = self.rig.registry.traffic(since=mark)
        return {
            "seconds": round(seconds, 3),
            "uploaded_bytes": traffic.uploaded_bytes,
            "cache_uploaded_bytes": sum(
                blob.size for blob in traffic.uploads if blob.repository == cache_name
            ),
            "blob_uploads": len(traffic.uploads),
            "mounts": traffic.mounts,
        }


class DriverOverhead:
    """The driver against plain buildx with the driver's own buildx arguments, on an
    unchanged rebuild on an emptied builder."""

    def __init__(
        self,
        bench: BuildBench,
        *,
        runs: int,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.bench = bench
        self.rig: Rig = bench.rig
        self.runs = runs
        self.say = say
        self.name = "driver/app"
        self.repository = f"{bench.host}/{self.name}"
        self.cache_repository = f"{self.repository}-cache"
        self._commits = 0

    def commit(self) -> str:
        self._commits += 1
        return f"{0xD0000000 + self._commits:040x}"

    def run(self) -> dict[str, Any]:
        self.bench.push_runtime_base("v1", "runtime base v1")
        context = self.bench.context(
            self.name, self.bench.workload.files(Scenario.COLD, 1), self.bench.runtime_base
        )
        self.rig.reset_builder()
        self.driver(context)  # cold: the cache the rebuilds read
        driver_seconds: list[float] = []
        plain_seconds: list[float] = []
        python_seconds: list[float] = []
        for number in range(1, self.runs + 1):
            pair = [("driver", self.driver), ("plain", self.plain)]
            for kind, build in pair if number % 2 else reversed(pair):
                self.rig.reset_builder()
                seconds = build(context)
                (driver_seconds if kind == "driver" else plain_seconds).append(seconds)
                self.say(f"  unchanged rebuild, {kind} #{number}: {seconds:.2f}s")
            python_seconds.append(self.interpreter())
        driver, plain = median(driver_seconds), median(plain_seconds)
        return {
            "runs": self.runs,
            "size_mb": self.bench.workload.size_mb,
            "driver_seconds": [round(s, 3) for s in driver_seconds],
            "plain_seconds": [round(s, 3) for s in plain_seconds],
            "driver_median_seconds": round(driver, 3),
            "plain_median_seconds": round(plain, 3),
            "difference_seconds": round(driver - plain, 3),
            "ratio": round(driver / plain, 4) if plain else None,
            "python_median_seconds": round(median(python_seconds), 3),
        }

    def interpreter(self) -> float:
        """The driver's floor: the interpreter starting, compiling and importing the driver
        (`build_driver.py --help`), which plain buildx never pays."""
        started = time.monotonic()
        subprocess.run(
            [sys.executable, str(DRIVER_PATH), "--help"], capture_output=True, check=True
        )
        return time.monotonic() - started

    def request(self, context: Path, commit: str) -> Any:
        return build_driver.BuildRequest(
            repository=self.repository,
            branch=BRANCH,
            commit=commit,
            default_branch=BRANCH,
            dockerfile=str(context / "Dockerfile"),
            context=str(context),
            cache_repository=self.cache_repository,
            network="none",
            builder=self.rig.builder,
        )

    def driver(self, context: Path) -> float:
        """One run of the driver as the buildspec runs it; its wall seconds."""
        commit = self.commit()
        run_dir = self.bench.workdir / "driver-runs" / commit[-8:]
        run_dir.mkdir(parents=True, exist_ok=True)
        env = self.rig.build_env(
            context,
            repository=self.repository,
            branch=BRANCH,
            commit=commit,
            extra={
                "LAYERCACHE_CACHE_REPOSITORY_URI": self.cache_repository,
                "LAYERCACHE_EXPORT_FILE": str(run_dir / "exports"),
                "TMPDIR": str(run_dir),
            },
        )
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(DRIVER_PATH)],
            env=env,
            cwd=context,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise BenchError(f"the driver failed:\n{result.stderr[-3000:]}")
        return seconds

    def plain(self, context: Path) -> float:
        """`docker buildx build` with the arguments the driver would give it; its seconds."""
        request = self.request(context, self.commit())
        metadata = self.bench.workdir / "driver-runs" / "plain-metadata.json"
        metadata.parent.mkdir(parents=True, exist_ok=True)
        args = build_driver.buildx_command(
            request,
            builder=self.rig.builder,
            cache_from=request.cache_from_refs(),
            cache_to=request.cache_ref(BRANCH),
            no_cache=False,
            metadata_file=metadata,
        )
        started = time.monotonic()
        result = subprocess.run(
            [self.rig.docker, *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=context,
        )
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise BenchError(f"plain buildx failed:\n{result.stderr[-3000:]}")
        return seconds
