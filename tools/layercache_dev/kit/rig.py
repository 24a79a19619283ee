"""A local stand-in for CodeBuild + ECR: a real registry, a real builder, the real buildspec.

The docker tests, the demo and the benchmark all use it::

    from layercache_dev.kit.prerequisites import missing_prerequisites
    from layercache_dev.kit.rig import Rig

    if missing := missing_prerequisites():           # readable reasons, [] when all there
        raise SystemExit("; ".join(missing))
    with Rig(Path(tmp)) as rig:                      # registry, builder, base image pushed
        repo = rig.repository("team/service")        # "127.0.0.1:PORT/team/service"
        context = rig.write_context(Path(tmp) / "ctx", dockerfile_text, {"src/a.txt": "1"})
        mark = rig.registry.mark()
        outcome = rig.build(context, repository=repo, branch="main", commit=sha)
        outcome.ok, outcome.seconds                  # exit status 0, wall time of the buildspec
        outcome.variables["LAYERCACHE_CACHE_HIT_RATIO"]   # what the buildspec exports
        outcome.step("RUN make deps")["cached"]      # per step, from the driver's report
        rig.registry.traffic(since=mark).downloaded_layer_bytes

It composes the rig's parts: the registry (`registry.Registry`), the builder (the
standalone BuildKit of `buildkit`, or with ``builder_kind="docker"`` the engine's own
builder, which downloads every layer of the image on a cached rebuild), and the
buildspec emulator (`buildspec.run_buildspec`).

`{base}` in a Dockerfile stands for the rig's base image (`FROM scratch` + a static
busybox, pushed to the registry: there is no Docker Hub here). Every `Rig.build` first
empties the builder's local cache (`reset=False` keeps it), as on a fresh CodeBuild host,
and builds with `--network none`. `mode=` takes normal/refresh/clean, `extra_env=` any
`LAYERCACHE_*` override (e.g. `LAYERCACHE_REFRESH_DATE`, `LAYERCACHE_CACHE_REPOSITORY_URI`).
`rig.fail_next_container_start()` makes the next container the builder starts fail to
start, once (see `buildkit`).

Multi-platform builds: `rig.write_platforms_context(...)` writes a context whose `{base}`
is `rig.platforms_base_image`, a linux/amd64 + linux/arm64 index (each platform with its own static
busybox; pushed on first use); the arm64 steps run under qemu, which `.ci/setup-docker`
registers (`prerequisites.missing_emulation_prerequisites` says what is missing).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import NotRequired, TypedDict, Unpack

from layercache_dev.kit.buildkit import StandaloneBuildKit
from layercache_dev.kit.buildspec import BuildOutcome, report_path, run_buildspec
from layercache_dev.kit.lifecycle import Lifecycle
from layercache_dev.kit.paths import BUILDSPECS
from layercache_dev.kit.prerequisites import (
    ARM64_BUSYBOX,
    BuilderKind,
    docker_binary,
    missing_emulation_prerequisites,
    missing_prerequisites,
)
from layercache_dev.kit.processes import RigError, run_checked
from layercache_dev.kit.registry import Registry

# A small service-shaped image for the docker tests and the demo: two stages, each step
# writing a few MB and sleeping a little (a stand-in for compiling or installing); the
# final stage declares the refresh build-arg right before its OS-package step, as the
# docs ask. `{base}` is the rig's busybox image; the context needs `src/*.txt`.
SAMPLE_DOCKERFILE = """\
FROM {base} AS builder
RUN dd if=/dev/urandom of=/deps-a bs=1M count=3 && sleep 2
RUN dd if=/dev/urandom of=/deps-b bs=1M count=3 && sleep 2
COPY src/ /src/
RUN cat /src/*.txt > /app.bin && dd if=/dev/urandom bs=1M count=2 >> /app.bin && sleep 1

FROM {base}
RUN dd if=/dev/urandom of=/runtime bs=1M count=3 && sleep 2
ARG LAYERCACHE_REFRESH_DATE
RUN echo "$LAYERCACHE_REFRESH_DATE" > /os-packages && dd if=/dev/urandom of=/os bs=1M count=3 \\
    && sleep 1
RUN dd if=/dev/urandom of=/app-deps bs=1M count=3 && sleep 1
COPY --from=builder /app.bin /app.bin
RUN wc -c /app.bin > /manifest.txt
"""


class BuildParameters(TypedDict):
    """What one build builds: `Rig.build(context, **parameters)`, `Rig.build_env` alike."""

    repository: str
    branch: str
    commit: str
    mode: NotRequired[str]  # normal (default), refresh, clean
    default_branch: NotRequired[str]  # "main" by default


class Rig(Lifecycle):
    """Registry + base image + builder, started together; see the module docstring."""

    BASE_REPOSITORY = "layercache/base"
    BASE_TAG = "busybox"
    #: The multi-platform base (`platforms_base_image`): one busybox per platform.
    PLATFORMS_BASE_TAG = "busybox-multi"
    BASE_PLATFORMS = ("linux/amd64", "linux/arm64")

    def __init__(self, workdir: Path, *, builder_kind: BuilderKind = "remote") -> None:
        self.workdir = workdir
        self.builder_kind = builder_kind
        self.docker = docker_binary()
        self.registry = Registry(workdir / "registry")
        suffix = uuid.uuid4().hex[:8]
        self._buildkit: StandaloneBuildKit | None = None
        if builder_kind == "remote":
            self._buildkit = StandaloneBuildKit(
                workdir / "buildkit", self.docker, f"lc-rig-{suffix}"
            )
            self.builder = self._buildkit.name
        else:
            self.builder = "default"  # the engine's own BuildKit (buildx docker driver)
        self.base_image = f"{self.registry.host}/{self.BASE_REPOSITORY}:{self.BASE_TAG}"

    # -- lifecycle (Lifecycle: `with Rig(...)` starts and stops it)

    def start(self) -> None:
        missing = missing_prerequisites(self.builder_kind)
        if missing:
            raise RigError("; ".join(missing))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.registry.start()
        if self._buildkit is not None:
            self._buildkit.start()
        self.push_base_image()

    def stop(self) -> None:
        if self._buildkit is not None:
            self._buildkit.stop()
        self.registry.stop()

    def fail_next_container_start(self) -> None:
        """The next container the builder starts fails to start, once (see `buildkit`)."""
        if self._buildkit is None:
            raise RigError("only the rig's own BuildKit can fail a container start on purpose")
        self._buildkit.fail_next_container_start()

    # -- images and contexts

    def repository(self, name: str) -> str:
        return f"{self.registry.host}/{name}"

    def push_base_image(self) -> None:
        """`FROM scratch` + a static busybox, pushed to the registry (no Docker Hub here)."""
        context = self.workdir / "base-image"
        context.mkdir(parents=True, exist_ok=True)
        busybox = Path("/bin/busybox") if Path("/bin/busybox").exists() else None
        source = busybox or Path(shutil.which("busybox") or "/usr/bin/busybox")
        shutil.copy2(source, context / "busybox")
        (context / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        )
        run_checked(
            [self.docker, "buildx", "build", "--builder", self.builder, "--network", "none",
             "--provenance=false", "--tag", self.base_image, "--push", str(context)]
        )  # fmt: skip

    @property
    def platforms_base_image(self) -> str:
        """The multi-platform base (linux/amd64 + linux/arm64); `push_platforms_base_image`."""
        return f"{self.registry.host}/{self.BASE_REPOSITORY}:{self.PLATFORMS_BASE_TAG}"

    def push_platforms_base_image(self) -> str:
        """`FROM scratch` + each platform's static busybox, one index for linux/amd64 and
        linux/arm64, pushed once (the arm64 half is built under qemu: see
        `missing_emulation_prerequisites`); its ref."""
        if self.registry.digest(self.BASE_REPOSITORY, self.PLATFORMS_BASE_TAG) is not None:
            return self.platforms_base_image
        missing = missing_emulation_prerequisites()
        if missing:
            raise RigError("; ".join(missing))
        context = self.workdir / "platforms-base-image"
        context.mkdir(parents=True, exist_ok=True)
        busybox = Path("/bin/busybox") if Path("/bin/busybox").exists() else None
        shutil.copy2(
            busybox or Path(shutil.which("busybox") or "/usr/bin/busybox"),
            context / "busybox-amd64",
        )
        shutil.copy2(ARM64_BUSYBOX, context / "busybox-arm64")
        (context / "Dockerfile").write_text(
            "FROM scratch\n"
            "ARG TARGETARCH\n"
            "COPY busybox-${TARGETARCH} /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        )
        run_checked(
            [self.docker, "buildx", "build", "--builder", self.builder, "--network", "none",
             "--provenance=false", "--platform", ",".join(self.BASE_PLATFORMS),
             "--tag", self.platforms_base_image, "--push", str(context)]
        )  # fmt: skip
        return self.platforms_base_image

    def write_platforms_context(
        self, directory: Path, dockerfile: str, files: Mapping[str, str] | None = None
    ) -> Path:
        """`write_context` for a multi-platform build: `{base}` stands for the
        multi-platform base image (pushed first if it is not there yet)."""
        base = self.push_platforms_base_image()
        return self.write_context(directory, dockerfile.replace("{base}", base), files)

    def copy_image(self, source: str, target: str) -> None:
        """Copy an image (or any manifest) to another ref in the registry."""
        run_checked([self.docker, "buildx", "imagetools", "create", "--tag", target, source])

    def write_context(
        self, directory: Path, dockerfile: str, files: Mapping[str, str] | None = None
    ) -> Path:
        """A build context: the Dockerfile (`{base}` stands for the base image) and files."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Dockerfile").write_text(dockerfile.replace("{base}", self.base_image))
        for name, text in (files or {}).items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return directory

    # -- the builder

    def reset_builder(self) -> None:
        """Empty the builder's local cache: a fresh build host.

        On the engine's own builder that is the engine's whole build cache, and the
        images this rig's builds left in the engine's store.
        """
        run_checked([self.docker, "buildx", "prune", "--builder", self.builder, "--all", "--force"])
        if self.builder_kind == "docker":
            listed = run_checked(
                [self.docker, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]
            )
            ours = sorted(
                {ref for ref in listed.stdout.split() if ref.startswith(f"{self.registry.host}/")}
            )
            if ours:
                run_checked([self.docker, "image", "rm", "--force", *ours], check=False)

    # -- builds

    def build_env(
        self,
        context: Path,
        *,
        extra: Mapping[str, str] | None = None,
        **build: Unpack[BuildParameters],
    ) -> dict[str, str]:
        """The environment CodeBuild would give the buildspec, pointed at this rig."""
        commit = build["commit"]
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LAYERCACHE_", "CODEBUILD_"))
        }
        env.update(
            {
                "LAYERCACHE_DRIVER_DIR": str(BUILDSPECS),
                "LAYERCACHE_IMAGE_REPOSITORY_URI": build["repository"],
                "LAYERCACHE_DOCKERFILE": str(context / "Dockerfile"),
                "LAYERCACHE_BUILD_CONTEXT": str(context),
                "LAYERCACHE_DEFAULT_BRANCH": build.get("default_branch", "main"),
                "LAYERCACHE_BRANCH": build["branch"],
                "LAYERCACHE_COMMIT": commit,
                "LAYERCACHE_TRIGGER": "manual",
                "LAYERCACHE_MODE": build.get("mode", "normal"),
                "LAYERCACHE_BUILDER": self.builder,
                "LAYERCACHE_BUILD_NETWORK": "none",
                "LAYERCACHE_DOCKER": self.docker,
                "CODEBUILD_RESOLVED_SOURCE_VERSION": commit,
            }
        )
        env.update(extra or {})
        return env

    def build(
        self,
        context: Path,
        *,
        extra_env: Mapping[str, str] | None = None,
        reset: bool = True,
        **build: Unpack[BuildParameters],
    ) -> BuildOutcome:
        """Run the buildspec once, on an emptied builder unless `reset=False`."""
        if reset:
            self.reset_builder()
        run_dir = self.workdir / "runs" / uuid.uuid4().hex[:12]
        run_dir.mkdir(parents=True)
        env = self.build_env(
            context,
            # TMPDIR: the buildspec's temporary files go with the run, not into /tmp.
            extra={
                "TMPDIR": str(run_dir),
                "LAYERCACHE_REPORT_FILE": str(report_path(run_dir)),
                **(extra_env or {}),
            },
            **build,
        )
        return run_buildspec(context, env, run_dir)
