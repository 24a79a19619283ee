"""`sam`, where `--docker-network host` puts the function's container on the host's network.

SAM CLI (1.170) takes `--docker-network host` to mean "connect to no other network": the
container stays on Docker's default bridge, where SAM publishes the emulator's port and
the function reaches the host through `host.docker.internal:host-gateway`. An engine
without a default bridge (`"bridge": "none"`, as on this project's CI) leaves such a
container with a loopback interface only: SAM cannot reach the emulator, nor the
function the host. Here the container gets the host's network instead, and the runtime
interface emulator listens on the port SAM would have published (its Lambda runtime API
on another free port), so nothing else changes. Every other use of SAM is untouched.

    .venv/bin/python scripts/sam_host_network.py local invoke GitHubWebhookFunction \
        --docker-network host --add-host host.docker.internal:127.0.0.1 ...
"""

from __future__ import annotations

import sys
from typing import Any

from docker.models.containers import ContainerCollection  # type: ignore[import-untyped]
from samcli.cli.main import cli  # type: ignore[import-untyped]
from samcli.local.docker.container import Container  # type: ignore[import-untyped]
from samcli.local.docker.utils import find_free_port  # type: ignore[import-untyped]

RIE = "/var/rapid/aws-lambda-rie"
_create = Container.create
_create_in_docker = ContainerCollection.create


def _create_on_host_network(self: Any, context: Any) -> Any:
    """Container.create, with host networking when SAM was given `--docker-network host`."""
    if self.network_id == "host" and self._entrypoint and self._entrypoint[0] == RIE:
        self._container_opts = {**(self._container_opts or {}), "network_mode": "host"}
        runtime_api_port = find_free_port(network_interface="127.0.0.1", start=9001, end=9999)
        self._entrypoint = [
            *self._entrypoint,
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{self.rapid_port_host}",
            "--runtime-api-address",
            f"127.0.0.1:{runtime_api_port}",
        ]
    return _create(self, context)


def _create_in_docker_without_ports(self: Any, image: str, **kwargs: Any) -> Any:
    """docker-py refuses published ports on the host's network (they would be discarded)."""
    if kwargs.get("network_mode") == "host":
        kwargs.pop("ports", None)
    return _create_in_docker(self, image, **kwargs)


def main() -> None:
    Container.create = _create_on_host_network
    ContainerCollection.create = _create_in_docker_without_ports
    sys.exit(cli(prog_name="sam"))


if __name__ == "__main__":
    main()
