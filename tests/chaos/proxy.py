"""A fault-injecting TCP proxy on asyncio, placed between a client and one upstream address.

    proxy = FaultProxy("127.0.0.1", redis_port).start()   # its own thread and event loop
    env["REDIS_URL"] = f"redis://{proxy.address}/0"
    proxy.faults = Faults(latency_s=0.05, jitter_s=0.02)   # every chunk, both directions
    proxy.faults = Faults(spike_rate=0.3, spike_s=2.0)     # 30 % of chunks wait 2 s
    proxy.faults = Faults(blackhole=True)                  # bytes vanish; connections stay open
    proxy.faults = Faults(blackhole_replies=True)          # requests arrive, answers never do
    proxy.faults = Faults(refuse=True)                     # new connections are reset at once
    proxy.reset_connections()                              # RST every open connection now
    proxy.stop()

The proxy runs in a thread of its own, so a test blocking its own loop (a synchronous
Redis restart, a subprocess wait) never stalls the traffic it carries. Faults are one
immutable value swapped whole, read for every chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Faults:
    latency_s: float = 0.0  # added to every chunk, both directions
    jitter_s: float = 0.0  # plus uniform 0..jitter_s
    spike_rate: float = 0.0  # share of chunks that wait spike_s more
    spike_s: float = 0.0
    reset_rate: float = 0.0  # share of chunks after which the connection is reset (RST)
    blackhole: bool = False  # swallow every byte (both directions)
    blackhole_replies: bool = False  # forward requests, swallow what the upstream answers
    refuse: bool = False  # reset new connections at once


CLEAN = Faults()


@dataclass
class ProxyCounters:
    connections: int = 0
    resets: int = 0
    swallowed_bytes: int = 0
    forwarded_bytes: int = 0


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, name: str = "", seed: int | None = None):
        self.upstream = (upstream_host, upstream_port)
        self.name = name or f"proxy-{upstream_port}"
        self.faults = CLEAN
        self.counters = ProxyCounters()
        self.port = 0
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", port, reuse_address=True)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            self._abort_all()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def reset_connections(self) -> None:
        """RST every open connection (both sides see ECONNRESET), as a crashed middlebox would."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._abort_all)

    def open_connections(self) -> int:
        return len(self._writers) // 2

    # -- inside the proxy's loop -----------------------------------------------------------

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            _abort(writer)
        self.counters.resets += len(self._writers) // 2

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        if self.faults.refuse:
            _abort(client_writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(client_writer)  # the upstream is down: the client sees a reset, as without us
            return
        pair = {client_writer, upstream_writer}
        self._writers |= pair
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer, pair, reply=False),
                self._pipe(upstream_reader, client_writer, pair, reply=True),
            )
        finally:
            self._writers -= pair
            for writer in pair:
                writer.close()

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: set[asyncio.StreamWriter],
        *,
        reply: bool,
    ) -> None:
        try:
            while data := await source.read(65536):
                faults = self.faults
                if faults.blackhole or (reply and faults.blackhole_replies):
                    self.counters.swallowed_bytes += len(data)
                    continue
                delay = faults.latency_s + (self._rng.uniform(0, faults.jitter_s) if faults.jitter_s else 0)
                if faults.spike_rate and self._rng.random() < faults.spike_rate:
                    delay += faults.spike_s
                if delay > 0:
                    await asyncio.sleep(delay)
                if faults.reset_rate and self._rng.random() < faults.reset_rate:
                    self.counters.resets += 1
                    for writer in pair:
                        _abort(writer)
                    return
                sink.write(data)
                self.counters.forwarded_bytes += len(data)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()
        except (ConnectionError, OSError):
            for writer in pair:
                _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
