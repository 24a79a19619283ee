"""Run `layercache demo` as a user does: a process of its own, in a session of its own.

Every demo process gets its own (empty) TMPDIR and a marker in its environment, which its
children inherit: after it exits, a process whose environment still holds the marker
was left running, and a file left in TMPDIR was left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from layercache_dev.kit.paths import ROOT
from tests.conftest import require_docker_tier


@pytest.fixture
def docker_tier() -> None:
    """Skip without the docker tier, unless LAYERCACHE_REQUIRE_DOCKER=1 (then fail)."""
    require_docker_tier("remote")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoProcess:
    """`layercache demo ARGS`, its output collected line by line as it comes."""

    def __init__(self, args: Sequence[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.tmpdir = tmp
        self.marker = f"layercache-demo-test-{uuid.uuid4().hex}"
        environment = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}
        environment.update(
            {"TMPDIR": str(self.tmpdir), "LAYERCACHE_DEMO_TEST_MARK": self.marker, **(env or {})}
        )
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "layercache_dev.cli", "demo", *args],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a job in a terminal
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, fragment: str, timeout: float) -> str:
        """The first output line containing `fragment`; fails if the demo ends or stalls first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if fragment in line:
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                pytest.fail(f"the demo ended ({self.process.returncode}):\n{self.all_output()}")
            time.sleep(0.2)
        pytest.fail(f"no {fragment!r} within {timeout:.0f}s:\n{self.all_output()}")

    def ctrl_c(self) -> None:
        """What Ctrl-C in a terminal does: SIGINT to the foreground job's process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        returncode = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return returncode

    def all_output(self) -> str:
        stderr = ""
        if self.process.poll() is not None and self.process.stderr is not None:
            stderr = self.process.stderr.read()
        return self.output + ("\n--- stderr\n" + stderr if stderr else "")

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def processes(self, *, marked: bool = True) -> list[tuple[str, bytes]]:
        """(pid, command line) of each process carrying the marker (the demo and the
        children that inherit its environment), or of every process (`marked=False`)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not marked or self.marker.encode() in (entry / "environ").read_bytes():
                    found.append((entry.name, (entry / "cmdline").read_bytes()))
            except OSError:
                continue
        return found

    def wait_for_command(self, timeout: float, *fragments: bytes) -> bytes:
        """The command line of the first process holding every one of `fragments`; fails if
        none runs within `timeout` seconds or the demo ends first. (The buildspec runs in
        an environment of its own, without the marker: any process is looked at.)"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, command in self.processes(marked=False):
                if all(fragment in command for fragment in fragments):
                    return command
            if self.process.poll() is not None:
                pytest.fail(f"the demo ended ({self.process.returncode}):\n{self.all_output()}")
            time.sleep(0.1)
        pytest.fail(f"no process running {fragments!r} within {timeout:.0f}s:\n{self.output}")

    def leftover_processes(self, timeout: float = 15.0) -> list[str]:
        """Processes still carrying the marker, after waiting up to `timeout` for them to end."""
        deadline = time.monotonic() + timeout
        while True:
            left = [f"{pid}: {command!r}" for pid, command in self.processes()]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)

    def leftover_files(self) -> list[str]:
        return sorted(str(path.relative_to(self.tmpdir)) for path in self.tmpdir.iterdir())

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """An empty TMPDIR for one demo, with a short path: BuildKit's socket lives under it,
    and a Unix socket's path may not be longer than 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="lcdemo-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Demos:
    """Starts demo processes in one TMPDIR; `stop_all` kills any still running."""

    def __init__(self, tmpdir: Path) -> None:
        self.tmpdir = tmpdir
        self.started: list[DemoProcess] = []

    def start(self, args: Sequence[str], env: dict[str, str] | None = None) -> DemoProcess:
        process = DemoProcess(args, self.tmpdir, env)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.kill()


@pytest.fixture
def demos(short_tmp: Path) -> Iterator[Demos]:
    """`demos.start(args)` runs `layercache demo args`; any still running at the end is killed."""
    started = Demos(short_tmp)
    yield started
    started.stop_all()
