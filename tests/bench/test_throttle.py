"""The throttling proxy: forwards every byte, and holds a transfer to its rate.

What the proxy does is checked by counts (every byte arrives; the token bucket's own
clock says how long a transfer must take). That a real transfer through it takes as long
as its rate says is a wall-clock measurement: those tests carry the `timing` marker
(`make bench` runs them, `make test` does not).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from layercache_dev.bench.throttle import ThrottleProxy, TokenBucket

RATE = 4_000_000  # bytes per second
SIZE = 2_000_000  # half a second at RATE; the burst lets the first 200 KB through at once


class Sink:
    """A TCP server that sends SIZE bytes to each client, or counts what each client sends."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received: list[int] = []
        self.done = threading.Event()  # set once a client's bytes are all counted
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
                self.done.set()


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


def upload(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(bytes(SIZE))
        client.shutdown(socket.SHUT_WR)
        client.recv(1)  # the proxy closes once the far side has everything


def expected_seconds(size: int, streams: int = 1) -> float:
    burst = RATE / 20
    return (size * streams - burst) / RATE


# ---------------------------------------------------------------- what it does (counts)


def test_a_download_arrives_whole(sender: Sink) -> None:
    with ThrottleProxy(("127.0.0.1", sender.port), RATE) as proxy:
        received = download(proxy.port)
        assert received == SIZE
        assert proxy.bytes_down == SIZE
        assert proxy.bytes_up == 0


def test_an_upload_arrives_whole(receiver: Sink) -> None:
    with ThrottleProxy(("127.0.0.1", receiver.port), RATE) as proxy:
        upload(proxy.port)
        assert proxy.bytes_up == SIZE
    assert receiver.done.wait(timeout=30)
    assert receiver.received == [SIZE]


class FakeClock:
    """The bucket's clock: it moves only when the bucket sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # A nanosecond more, as any real sleep overshoots: the refilled tokens then cover
        # what the bucket waited for despite float rounding.
        self.now += seconds + 1e-9
        await asyncio.sleep(0)  # let the other takers run, as a real sleep would


def test_the_bucket_lets_a_transfer_through_at_its_rate() -> None:
    clock = FakeClock()

    async def transfer() -> None:
        bucket = TokenBucket(RATE, clock=clock, sleep=clock.sleep)
        for _ in range(SIZE // 65_536):
            await bucket.take(65_536)
        await bucket.take(SIZE % 65_536)

    asyncio.run(transfer())

    assert clock.now == pytest.approx(expected_seconds(SIZE))


def test_the_bucket_is_one_link_shared_by_its_connections() -> None:
    """Two transfers at once take as long as one of twice the size: the rate is the link's."""
    clock = FakeClock()
    finished: list[float] = []

    async def transfers() -> None:
        bucket = TokenBucket(RATE, clock=clock, sleep=clock.sleep)

        async def one() -> None:
            for _ in range(SIZE // 65_536):
                await bucket.take(65_536)
            await bucket.take(SIZE % 65_536)
            finished.append(clock.now)

        await asyncio.gather(one(), one())

    asyncio.run(transfers())

    assert max(finished) == pytest.approx(expected_seconds(SIZE, streams=2))
    # Shared turn by turn, not one after the other: both end near the end.
    assert min(finished) > expected_seconds(SIZE)


def test_unreachable_target_closes_the_client() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = int(unused.getsockname()[1])
    with ThrottleProxy(("127.0.0.1", port), RATE) as proxy:
        assert download(proxy.port) == 0


# ---------------------------------------------------------------- how long it takes (timing)


@pytest.mark.timing
def test_download_is_held_to_the_rate(sender: Sink) -> None:
    with ThrottleProxy(("127.0.0.1", sender.port), RATE) as proxy:
        started = time.monotonic()
        received = download(proxy.port)
        elapsed = time.monotonic() - started
        assert received == SIZE
        assert proxy.bytes_down == SIZE
    # A loaded machine can only make a transfer slower, so the upper bound is loose.
    assert 0.5 <= expected_seconds(SIZE) / elapsed <= 1.1


@pytest.mark.timing
def test_upload_is_held_to_the_rate(receiver: Sink) -> None:
    with ThrottleProxy(("127.0.0.1", receiver.port), RATE) as proxy:
        started = time.monotonic()
        upload(proxy.port)
        elapsed = time.monotonic() - started
        assert proxy.bytes_up == SIZE
    assert receiver.done.wait(timeout=30)
    assert receiver.received == [SIZE]
    assert 0.5 <= expected_seconds(SIZE) / elapsed <= 1.1


@pytest.mark.timing
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
