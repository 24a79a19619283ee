"""Running the rig's programs: a command that must succeed, a daemon to wait for, a port."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any


class RigError(RuntimeError):
    """The rig could not start or drive one of its parts."""


def run_checked(
    command: list[str], *, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run `command`, its output captured; a failure (unless `check=False`) is a RigError."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        raise RigError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Until `check()` holds; a RigError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RigError(f"{what} did not come up within {timeout:.0f}s")
