"""The throttling proxy: forwards every byte, and holds a transfer to its rate."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from layercache_dev.throttle import ThrottleProxy

RATE = 4_000_000  # bytes per second
SIZE = 2_000_000  # half a second at RATE; the burst lets the first 200 KB through at once


class Sink:
    """A TCP server that sends SIZE bytes to each client, or counts what each client sends."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received: list[int] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            if self.mode == "send":
                connection.sendall(bytes(SIZE))
            else:
                total = 0
                while chunk := connection.recv(1 << 16):
                    total += len(chunk)
                self.received.append(total)


@pytest.fixture
def sender() -> Iterator[Sink]:
    sink = Sink("send")
    yield sink
    sink.server.close()


@pytest.fixture
def receiver() -> Iterator[Sink]:
    sink = Sink("receive")
    yield sink
    sink.server.close()


def download(port: int) -> int:
    total = 0
    with socket.create_connection(("127.0.0.1", port)) as client:
        while chunk := client.recv(1 << 16):
            total += len(chunk)
    return total


def expected_seconds(size: int, streams: int = 1) -> float:
    burst = RATE / 20
    return (size * streams - burst) / RATE


def test_download_is_held_to_the_rate(sender: Sink) -> None:
    with ThrottleProxy(("127.0.0.1", sender.port), RATE) as proxy:
        started = time.monotonic()
        received = download(proxy.port)
        elapsed = time.monotonic() - started
        assert received == SIZE
        assert proxy.bytes_down == SIZE
    # A loaded machine can only make a transfer slower, so the upper bound is loose.
    assert 0.5 <= expected_seconds(SIZE) / elapsed <= 1.1


def test_upload_is_held_to_the_rate(receiver: Sink) -> None:
    with ThrottleProxy(("127.0.0.1", receiver.port), RATE) as proxy:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", proxy.port)) as client:
            client.sendall(bytes(SIZE))
            client.shutdown(socket.SHUT_WR)
            client.recv(1)  # the proxy closes once the far side has everything
        elapsed = time.monotonic() - started
        assert proxy.bytes_up == SIZE
    deadline = time.monotonic() + 5
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert receiver.received == [SIZE]
    assert 0.5 <= expected_seconds(SIZE) / elapsed <= 1.1


def test_connections_share_one_link(sender: Sink) -> None:
    """Two downloads at once take as long as one of twice the size: the rate is the link's."""
    with ThrottleProxy(("127.0.0.1", sender.port), RATE) as proxy:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(download(proxy.port))) for _ in range(2)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    assert results == [SIZE, SIZE]
    assert 0.5 <= expected_seconds(SIZE, streams=2) / elapsed <= 1.1


def test_unreachable_target_closes_the_client() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = int(unused.getsockname()[1])
    with ThrottleProxy(("127.0.0.1", port), RATE) as proxy:
        assert download(proxy.port) == 0
