"""The docker tier: a real engine, a real registry, a standalone BuildKit (see the rig).

Without them the tests skip with the reason, except under LAYERCACHE_REQUIRE_DOCKER=1
(CI), where a missing piece fails the run instead of silently passing it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from layercache_dev.kit.prerequisites import BuilderKind
from layercache_dev.kit.rig import Rig
from tests.conftest import require_docker_tier


def started_rig(factory: pytest.TempPathFactory, kind: BuilderKind) -> Iterator[Rig]:
    require_docker_tier(kind)
    with Rig(factory.mktemp(f"rig-{kind}"), builder_kind=kind) as rig:
        yield rig


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The CodeBuild stand-in: registry + standalone BuildKit (buildx remote driver)."""
    yield from started_rig(tmp_path_factory, "remote")


@pytest.fixture(scope="session")
def engine_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Registry + the engine's own builder (buildx docker driver)."""
    yield from started_rig(tmp_path_factory, "docker")


class _Refuse(BaseHTTPRequestHandler):
    """A registry that refuses everything, as ECR refuses a role without push rights."""

    BODY = json.dumps(
        {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}
    ).encode()

    def _refuse(self) -> None:
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        if self.command != "HEAD":
            with contextlib.suppress(OSError):
                self.wfile.write(self.BODY)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads BuildKit's account of the refusal, not ours."""


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up on a refusal is no error here."""


@pytest.fixture
def refusing_registry() -> Iterator[str]:
    """`127.0.0.1:<port>` of a registry that answers every request 403 DENIED."""
    server = _QuietServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
