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


# ---------------------------------------------------------------- linux/arm64 under emulation

#: Where .ci/setup-docker puts the arm64 static busybox (Debian's busybox-static:arm64),
#: the arm64 half of the rig's multi-platform base image.
ARM64_BUSYBOX = Path("/usr/local/lib/layercache/busybox-arm64")
BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
#: qemu-user-static's interpreter for aarch64, as Debian installs it.
QEMU_AARCH64 = Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P")


def missing_emulation_prerequisites() -> list[str]:
    """What this machine lacks to build linux/arm64 under emulation (empty: all there):
    qemu-user-static, its qemu-aarch64 entry in binfmt_misc (enabled, with the F flag,
    so build containers reach the interpreter), and the arm64 static busybox."""
    missing = []
    if not QEMU_AARCH64.exists() and shutil.which("qemu-aarch64-static") is None:
        missing.append("no qemu-user-static (Debian package qemu-user-static)")
    entry = BINFMT_MISC / "qemu-aarch64"
    if not (BINFMT_MISC / "register").exists():
        missing.append(f"binfmt_misc is not mounted at {BINFMT_MISC}")
    elif not entry.exists():
        missing.append("qemu-aarch64 is not registered in binfmt_misc")
    else:
        lines = entry.read_text().splitlines()
        flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags:")), "")
        if "enabled" not in lines:
            missing.append("qemu-aarch64 is registered in binfmt_misc but disabled")
        elif "F" not in flags:
            missing.append(
                "qemu-aarch64 is registered in binfmt_misc without the F flag "
                "(build containers cannot reach the interpreter)"
            )
    if not ARM64_BUSYBOX.exists():
        missing.append(f"no arm64 static busybox at {ARM64_BUSYBOX}")
    elif not missing and not _prints([str(ARM64_BUSYBOX), "uname", "-m"], "aarch64"):
        missing.append(f"{ARM64_BUSYBOX} does not run under qemu (uname -m is not aarch64)")
    return missing


def _prints(command: list[str], expected: str) -> bool:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == expected
