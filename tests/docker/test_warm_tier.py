"""The warm tier on a real engine and buildx 0.13: the driver's standalone BuildKit
(buildx `docker-container` driver, as on CodeBuild) kept between builds, and recycled.

CodeBuild's BuildKit image is on Docker Hub, out of reach here, so the test builds one
from the rig's own `buildkitd` and `runc`, with a small `buildctl` stand-in for the two
calls buildx makes into the container (`debug workers`, `dial-stdio`), compiled with the
Go toolchain `.ci/setup-docker` installs. Each build runs the real buildspec with
LAYERCACHE_BUILDER=docker-container and a buildx config (DOCKER_CONFIG) of its own, which
the test deletes to stand for a new build container on a kept host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.processes import run_checked
from layercache_dev.kit.rig import SAMPLE_DOCKERFILE, Rig
from tests.conftest import require

RIG_BUILDKIT_IMAGE = "layercache-test/buildkit:rig"
BUILDCTL_SHIM = """\
// buildctl as buildx's docker-container driver calls it: `debug workers` (is the daemon
// up?) and `dial-stdio` (the connection to it).
package main

import (
\t"io"
\t"net"
\t"os"
)

func main() {
\tconn, err := net.Dial("unix", "/run/buildkit/buildkitd.sock")
\tif err != nil {
\t\tos.Stderr.WriteString(err.Error() + "\\n")
\t\tos.Exit(1)
\t}
\tif len(os.Args) > 1 && os.Args[1] == "dial-stdio" {
\t\tdone := make(chan struct{}, 2)
\t\tgo func() { io.Copy(conn, os.Stdin); conn.(*net.UnixConn).CloseWrite(); done <- struct{}{} }()
\t\tgo func() { io.Copy(os.Stdout, conn); done <- struct{}{} }()
\t\t<-done
\t\treturn
\t}
\tconn.Close()
}
"""
IMAGE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2
COPY libc.so.6 libseccomp.so.2 /lib/x86_64-linux-gnu/
COPY buildkitd runc buildctl /usr/bin/
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /run/buildkit && chmod 1777 /tmp
ENV PATH=/usr/bin:/bin
ENTRYPOINT ["buildkitd", "--oci-worker=true", "--containerd-worker=false"]
"""
LIBRARIES = (
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libseccomp.so.2",
)


def missing_pieces() -> list[str]:
    wanted = {"go": shutil.which("go"), "buildkitd": shutil.which("buildkitd")}
    wanted |= {"runc": shutil.which("runc"), "busybox": shutil.which("busybox")}
    missing = [f"{name} not on PATH" for name, found in wanted.items() if not found]
    return missing + [f"{library} missing" for library in LIBRARIES if not Path(library).exists()]


def rig_buildkit_image(docker: str, workdir: Path) -> str:
    """A BuildKit image the docker-container driver can run, built once per engine."""
    present = subprocess.run([docker, "image", "inspect", RIG_BUILDKIT_IMAGE], capture_output=True)
    if present.returncode == 0:
        return RIG_BUILDKIT_IMAGE
    shim = workdir / "shim"
    shim.mkdir(parents=True)
    (shim / "main.go").write_text(BUILDCTL_SHIM)
    (shim / "go.mod").write_text("module shim\ngo 1.22\n")
    context = workdir / "image"
    context.mkdir()
    run_checked(
        ["go", "build", "-o", str(context / "buildctl"), "."],
        cwd=shim,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
    )
    for binary in ("buildkitd", "runc", "busybox"):
        shutil.copy2(shutil.which(binary) or binary, context / binary)
    for library in LIBRARIES:
        shutil.copy2(library, context / Path(library).name)
    (context / "Dockerfile").write_text(IMAGE_DOCKERFILE)
    run_checked(
        [docker, "buildx", "build", "--builder", "default", "--network", "none",
         "--tag", RIG_BUILDKIT_IMAGE, "--load", str(context)]
    )  # fmt: skip
    return RIG_BUILDKIT_IMAGE


@pytest.fixture
def warm_builder(rig: Rig, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The variables that make the buildspec build on a standalone BuildKit of its own
    (`docker-container:<name>`, network=host to reach the rig's registry); its container
    and state volume are removed afterwards."""
    require("warm tier", missing_pieces())
    image = rig_buildkit_image(rig.docker, tmp_path / "buildkit-image")
    name = f"lc-warm-{uuid.uuid4().hex[:8]}"
    env = {
        "LAYERCACHE_BUILDER": f"docker-container:{name}",
        "LAYERCACHE_BUILDKIT_IMAGE": image,
        "LAYERCACHE_BUILDKIT_DRIVER_OPTS": "network=host",
        "LAYERCACHE_BUILD_HOST": "fleet",
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "NAME": name,
    }
    yield env
    recycle(rig.docker, name)


def recycle(docker: str, name: str) -> None:
    """A recycled host: the builder's container and state volume are gone."""
    container = f"buildx_buildkit_{name}0"
    subprocess.run([docker, "container", "rm", "--force", container], capture_output=True)
    subprocess.run([docker, "volume", "rm", "--force", f"{container}_state"], capture_output=True)


def test_a_kept_builder_is_found_again_and_a_recycled_one_starts_from_the_registry(
    rig: Rig, warm_builder: dict[str, str], tmp_path: Path
) -> None:
    repository = rig.repository(f"warm/{uuid.uuid4().hex[:8]}")
    context = rig.write_context(tmp_path / "ctx", SAMPLE_DOCKERFILE, {"src/a.txt": "one"})
    config = Path(warm_builder["DOCKER_CONFIG"])

    def build(commit: str) -> tuple[BuildOutcome, int]:
        mark = rig.registry.mark()
        outcome = rig.build(
            context, repository=repository, branch="main", commit=commit,
            reset=False, extra_env=warm_builder,
        )  # fmt: skip
        assert outcome.ok, outcome.log[-3000:]
        return outcome, rig.registry.traffic(since=mark).downloaded_layer_bytes

    cold, _ = build("1" * 40)
    assert "LAYERCACHE_BUILDER_STATE=new" in cold.log
    total = len(cold.steps)

    # A new build container on the kept host: buildx's config is gone, the engine's
    # container and state volume are not. The driver finds the builder again by name.
    shutil.rmtree(config)
    (context / "src" / "a.txt").write_text("two")  # a change halfway (the builder stage's COPY)
    kept, kept_down = build("2" * 40)
    assert "LAYERCACHE_BUILDER_STATE=kept" in kept.log
    assert "kept from an earlier build on this engine" in kept.log
    kept_cached = sum(1 for step in kept.steps if step["cached"])
    assert kept_down == 0  # the layers the rebuilt steps run on were on the host already

    # A recycled host: no container, no state. The builder is new and starts warm from
    # the registry cache the warm builds kept exporting; it downloads the layers.
    shutil.rmtree(config)
    recycle(rig.docker, warm_builder["NAME"])
    (context / "src" / "a.txt").write_text("three")
    recycled, recycled_down = build("3" * 40)
    assert "LAYERCACHE_BUILDER_STATE=new" in recycled.log
    recycled_cached = sum(1 for step in recycled.steps if step["cached"])
    assert recycled_cached == kept_cached, (kept_cached, recycled_cached, total)
    assert 0 < recycled_cached < total
    assert recycled_down > 0
    assert recycled.variables["LAYERCACHE_CACHE_REF_HIT"].endswith(":cache-main")
