"""A standalone BuildKit of the rig's own, reached as a buildx `remote` builder.

CodeBuild builds on a standalone BuildKit (buildx ``docker-container`` driver). Its image
is on Docker Hub, out of reach here, so the rig runs a ``buildkitd`` binary itself
(``.ci/setup-docker`` builds one from Debian's sources) and reaches it through buildx's
``remote`` driver: the same daemon, started differently.

That buildkitd runs its containers through a thin wrapper around ``runc`` that passes
every call through, except that ``fail_next_container_start()`` makes the next container
start fail the way a loaded host sometimes does (``runc run failed: ... read init-p:
connection reset by peer``), once.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
from pathlib import Path

from layercache_dev.kit.lifecycle import Lifecycle
from layercache_dev.kit.processes import run_checked, wait_for

#: What runc prints when a container's init process dies before it starts; seen on
#: a loaded 2-core host, and what `StandaloneBuildKit.fail_next_container_start` mimics.
START_FAILURE_MESSAGE = (
    "runc run failed: unable to start container process: error during container init: "
    "read init-p: connection reset by peer"
)
_RUNC_WRAPPER = """#!/bin/sh
# The rig's runc: the real one, except that one `run` fails while {flag} exists.
case " $* " in
*" run "*)
  if rm {flag} 2>/dev/null; then
    echo {message} >&2
    exit 1
  fi ;;
esac
exec {runc} "$@"
"""


class StandaloneBuildKit(Lifecycle):
    """A buildkitd of our own (OCI worker), as a buildx `remote` builder."""

    def __init__(self, workdir: Path, docker: str, name: str) -> None:
        self.workdir = workdir
        self.docker = docker
        self.name = name
        self.socket = workdir / "buildkitd.sock"
        self.log_path = workdir / "buildkitd.log"
        self.runc_wrapper = workdir / "runc"
        self.fail_start_flag = workdir / "fail-next-container-start"
        self._process: subprocess.Popen[bytes] | None = None

    def fail_next_container_start(self) -> None:
        """Make the next container BuildKit starts fail to start, once."""
        self.fail_start_flag.touch()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("buildkitd") or "buildkitd"
        self.runc_wrapper.write_text(
            _RUNC_WRAPPER.format(
                flag=shlex.quote(str(self.fail_start_flag)),
                message=shlex.quote(START_FAILURE_MESSAGE),
                runc=shlex.quote(shutil.which("runc") or "runc"),
            )
        )
        self.runc_wrapper.chmod(0o755)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "--root", str(self.workdir / "root"),
                    "--addr", f"unix://{self.socket}",
                    "--oci-worker=true",
                    "--oci-worker-binary", str(self.runc_wrapper),
                    "--containerd-worker=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self.socket.exists, f"buildkitd ({self.log_path})")
        run_checked([self.docker, "buildx", "rm", self.name], check=False)
        run_checked(
            [self.docker, "buildx", "create", "--name", self.name, "--driver", "remote",
             f"unix://{self.socket}"]
        )  # fmt: skip
        run_checked([self.docker, "buildx", "inspect", "--bootstrap", self.name])

    def stop(self) -> None:
        stop_buildkitd(self.docker, self.name, self._process)
        self._process = None


def stop_buildkitd(docker: str, name: str, process: subprocess.Popen[bytes] | None) -> None:
    """Forget the buildx builder `name`, then stop its buildkitd (SIGTERM, then SIGKILL)."""
    run_checked([docker, "buildx", "rm", name], check=False)
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
