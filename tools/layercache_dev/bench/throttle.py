"""A rate-limited TCP link on loopback: a proxy with one token bucket per direction.

On loopback a registry answers at memory speed and hides what a real network costs.
The benchmark puts this proxy in front of the rig's registry, so every build, push and
pull goes through a link of a fixed rate::

    with ThrottleProxy(("127.0.0.1", registry_port), rate=50_000_000) as proxy:
        proxy.host                      # "127.0.0.1:PORT": use it as the registry's host
        proxy.bytes_up, proxy.bytes_down

`rate` is bytes per second in each direction (client to server is "up"), shared by all
connections as on one link. Docker and BuildKit treat any 127.0.0.0/8 registry as
plain HTTP, so builds push and pull through the proxy's port as they would the
registry's. The proxy runs an asyncio loop in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable

from layercache_dev.kit.lifecycle import Lifecycle

CHUNK = 64 * 1024


class TokenBucket:
    """`rate` bytes per second with a burst of `burst` bytes; `take` waits for its tokens.

    `clock` and `sleep` are the monotonic clock and asyncio's sleep (a test gives a clock
    of its own, and a sleep that moves it).
    """

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        # A burst of a twentieth of a second (at least one chunk) keeps the link smooth.
        self.burst = float(burst if burst is not None else max(CHUNK, int(rate / 20)))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, amount: int) -> None:
        """Wait until `amount` bytes may pass (amounts above the burst go through in parts)."""
        async with self._lock:  # first come, first served across connections
            remaining = float(amount)
            while remaining > 0:
                self._refill()
                part = min(remaining, self.burst)
                if self._tokens >= part:
                    self._tokens -= part
                    remaining -= part
                else:
                    await self._sleep((part - self._tokens) / self.rate)


class ThrottleProxy(Lifecycle):
    """Forward `listen` (a free 127.0.0.1 port by default) to `target`, at `rate` bytes/s."""

    def __init__(
        self,
        target: tuple[str, int],
        rate: float,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.target = target
        self.rate = rate
        self._listen = listen
        self.port = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return f"{self._listen[0]}:{self.port}"

    # -- lifecycle (Lifecycle: `with ThrottleProxy(...)` starts and stops it)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="throttle-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise RuntimeError(f"throttle proxy did not start: {self._error}")
        if not self.port:
            raise RuntimeError("throttle proxy did not start within 10s")

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._close(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except OSError as error:
            self._error = error
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _open(self) -> None:
        self._up = TokenBucket(self.rate)
        self._down = TokenBucket(self.rate)
        self._server = await asyncio.start_server(self._serve, self._listen[0], self._listen[1])
        sockets = self._server.sockets
        self.port = int(sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- forwarding

    async def _serve(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server = await asyncio.open_connection(*self.target)
        except OSError:
            client.close()
            return
        up = asyncio.ensure_future(self._pump(client_reader, server, self._up, "up"))
        down = asyncio.ensure_future(self._pump(server_reader, client, self._down, "down"))
        for task in (up, down):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.gather(up, down, return_exceptions=True)
        for writer in (client, server):
            writer.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        bucket: TokenBucket,
        direction: str,
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await bucket.take(len(data))
                writer.write(data)
                await writer.drain()
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()
