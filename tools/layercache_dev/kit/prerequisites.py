"""What the rig needs on this machine: a Docker engine with buildx, Debian's registry, a
static busybox and (for the `remote` builder) a standalone buildkitd."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

# "remote": the rig's own buildkitd, as CodeBuild's standalone BuildKit; "docker": the
# engine's own builder.
BuilderKind = Literal["remote", "docker"]


def docker_binary() -> str:
    """The docker CLI to use: LAYERCACHE_DOCKER, else the engine package's own, else PATH's.

    A client-only docker may come first on PATH; the engine's package installs its
    client (and finds its buildx plugin) at /usr/bin/docker.
    """
    configured = os.environ.get("LAYERCACHE_DOCKER")
    if configured:
        return configured
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def missing_prerequisites(builder_kind: BuilderKind = "remote") -> list[str]:
    """What this machine lacks for the rig, as readable reasons (empty: all there)."""
    docker = docker_binary()
    missing = []
    if not _works([docker, "info"]):
        missing.append(f"no running Docker engine ({docker} info failed)")
    if not _works([docker, "buildx", "version"]):
        missing.append("no docker buildx plugin")
    if shutil.which("docker-registry") is None:
        missing.append("no docker-registry binary (Debian package docker-registry)")
    if not Path("/bin/busybox").exists() and shutil.which("busybox") is None:
        missing.append("no static busybox (Debian package busybox-static)")
    if builder_kind == "remote" and shutil.which("buildkitd") is None:
        missing.append("no standalone buildkitd (built by .ci/setup-docker)")
    return missing
