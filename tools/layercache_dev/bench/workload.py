"""The benchmark's image: a generated two-stage Dockerfile shaped like a real service.

The builder stage installs a toolchain (OS packages of the build image), downloads and
compiles dependencies from a lock file, then compiles the source. The runtime stage
starts from its own base image, installs OS packages and the runtime's dependencies,
copies the compiled dependencies and the application from the builder, adds its
configuration. Every step writes incompressible bytes (`head -c` from /dev/urandom) and
sleeps for its share of the work, so both transfer and build time are real::

    workload = Workload(size_mb=300, work_seconds=20)
    files = workload.files(Variant.UNCHANGED, run=1)     # path -> text, Dockerfile included

Real layers compress 2-4x, random bytes not at all: `compressible_share` writes that share
of each file as hexadecimal text of random bytes instead (`od -An -tx1`: gzip and zstd
make it about 2.2x smaller, at a realistic cost), the rest as random bytes.

`{base}` (the builder's base) and `{runtime_base}` stand for image references the
caller fills in. The scenarios change one input each: the runtime's requirements
(halfway through the steps), the application source (the builder stage only), the
runtime base image (a refreshed base).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MB = 1_000_000


class Scenario(StrEnum):
    COLD = "cold"
    UNCHANGED = "unchanged"
    HALFWAY = "change halfway"
    BUILDER = "builder-stage change"
    BASE_REFRESH = "base-image refresh"


SCENARIOS = tuple(Scenario)

# Shares of the image's bytes (the runtime stage's layers) and of the cold build's work.
_IMAGE_SHARES = {"os": 0.25, "site": 0.35, "deps": 0.30, "app": 0.10}
_TOOLCHAIN_SHARE = 0.30  # builder-only bytes, as a share of the image's
# Seconds of work per step as shares of work_seconds; the builder stage holds most of it.
_WORK_SHARES = {"toolchain": 0.20, "deps": 0.30, "app": 0.15, "os": 0.15, "site": 0.20}

DOCKERFILE = """\
# A service image as many teams write it: a builder stage, then a slim runtime stage.
FROM {{base}} AS builder
# OS packages of the build image (compilers, headers)
RUN mkdir -p /opt && {toolchain} > /opt/toolchain.bin && sleep {t_toolchain}
COPY deps.lock /src/deps.lock
# download and compile the dependencies the lock file names
RUN cat /src/deps.lock > /opt/deps.bin && {deps} >> /opt/deps.bin \\
    && sleep {t_deps}
COPY src/ /src/
# compile the application
RUN cat /src/app.txt > /opt/app.bin && {app} >> /opt/app.bin \\
    && sleep {t_app}

FROM {{runtime_base}}
ARG LAYERCACHE_REFRESH_DATE
# OS packages of the runtime image
RUN mkdir -p /usr && echo "$LAYERCACHE_REFRESH_DATE" > /usr/os-packages.txt \\
    && {os} > /usr/os-packages.bin && sleep {t_os}
COPY requirements.txt /app/requirements.txt
# the runtime's own dependencies (pip install -r requirements.txt)
RUN cat /app/requirements.txt > /app/site-packages.bin \\
    && {site} >> /app/site-packages.bin && sleep {t_site}
COPY --from=builder /opt/deps.bin /app/lib/deps.bin
COPY --from=builder /opt/app.bin /app/app.bin
COPY config/ /app/config/
RUN ls -l /app /app/lib > /app/manifest.txt
"""
STEPS = 12  # Dockerfile instructions other than FROM (ARG makes no step)
# Builder steps that stay cached when only the application source changes.
BUILDER_STEPS_BEFORE_SOURCE = ("/opt/toolchain.bin", "COPY deps.lock", "/opt/deps.bin")


@dataclass(frozen=True)
class Workload:
    """The image's size (MB of layers in the final image) and its cold work in seconds."""

    size_mb: float = 300.0
    work_seconds: float = 20.0
    compressible_share: float = 0.0  # of each file's bytes: text that compresses (see above)

    def layer_bytes(self) -> dict[str, int]:
        size = self.size_mb * MB
        sizes = {name: int(size * share) for name, share in _IMAGE_SHARES.items()}
        sizes["toolchain"] = int(size * _TOOLCHAIN_SHARE)
        return sizes

    def step_seconds(self) -> dict[str, float]:
        return {name: self.work_seconds * share for name, share in _WORK_SHARES.items()}

    @property
    def builder_cached_work(self) -> float:
        """Seconds of work in the builder steps a source change leaves cached."""
        seconds = self.step_seconds()
        return seconds["toolchain"] + seconds["deps"]

    def fill(self, size: int) -> str:
        """The shell command that writes `size` bytes of the step's file to stdout."""
        text = int(size * self.compressible_share)
        random = f"head -c {size - text} /dev/urandom"
        if not text:
            return random
        hexadecimal = f"od -An -tx1 -v /dev/urandom | head -c {text}"
        return f"{{ {random}; {hexadecimal}; }}" if text < size else f"{{ {hexadecimal}; }}"

    def dockerfile(self) -> str:
        fills = {name: self.fill(size) for name, size in self.layer_bytes().items()}
        seconds = {f"t_{name}": f"{value:.2f}" for name, value in self.step_seconds().items()}
        return DOCKERFILE.format(**fills, **seconds)

    def files(self, scenario: Scenario, run: int) -> dict[str, str]:
        """The build context for `scenario`'s `run`: each change is unique to its run."""
        files = {
            "Dockerfile": self.dockerfile(),
            "deps.lock": "libfoo==1.2.0\nlibbar==3.4.1\n",
            "requirements.txt": "fastapi==0.115.0\nuvicorn==0.30.6\n",
            "src/app.txt": "app version 1\n",
            "config/app.toml": "[service]\nport = 8080\n",
        }
        if scenario is Scenario.HALFWAY:
            files["requirements.txt"] += f"orjson==3.10.{run}  # added in run {run}\n"
        elif scenario is Scenario.BUILDER:
            files["src/app.txt"] = f"app version 2 (run {run})\n"
        return files
