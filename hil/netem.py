"""Network emulation between the agent and the broker: latency, jitter, loss, bandwidth, tunnels.

Why: what breaks a telematics uplink in the field (a slow or jittery cell, a tunnel, a gateway that
silently forgets a connection) never happens on a loopback bench. `NetworkEmulator` is a TCP proxy on
127.0.0.1 in front of the broker; the agent's broker URL is `net.url`, and a scenario changes the link
while everything runs:

    async with NetworkEmulator(upstream_port=broker.port) as net:
        net.latency_s = 0.2  # both directions; or net.up = LinkShape(...), net.down = LinkShape(...)
        net.cut()  # a tunnel (CutMode.BLACKHOLE)
        net.restore()

The link's shape and its loss model are in `hil.link_model`.

Tunnels, `cut(mode)` then `restore()`:

- `CutMode.BLACKHOLE` (coverage lost; the default): nothing is closed, nothing answers. Open
  connections freeze with their bytes held (TCP would retransmit them) and resume on `restore()`; new
  ones are accepted (the kernel completes the handshake) and reach upstream only after `restore()`, and
  not at all if the client gave up first. Endpoints notice through their own timeouts (keepalive).
- `CutMode.REFUSE` (the stack knows): open connections close at once, so does the listener: ECONNREFUSED
  until `restore()` listens on the same port again (OSError if another process took it meanwhile).

All forwarding tasks live in one TaskGroup owned by the emulator; `stop()` (or leaving `async with`)
ends them. Randomness comes from an injected `random.Random`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Self, TypeVar, cast

from hil.link_model import CutMode, LinkShape, TokenBucket, transit_delay

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")
_CHUNK = 65536
_QUEUE_CHUNKS = 64  # per connection and direction; beyond it the proxy stops reading (TCP backpressure)
_Queue = asyncio.Queue[tuple[float, bytes]]  # (loop time due at the other end, data; b"" = EOF)


@dataclass(slots=True)
class NetEmStats:
    connections: int = 0  # accepted
    bytes_up: int = 0  # delivered client → upstream
    bytes_down: int = 0  # delivered upstream → client
    cuts: int = 0  # times `cut()` took the link down
    dropped: int = 0  # connections closed by a REFUSE cut or by the loss model
    loss_cuts: int = 0  # ... of which by the loss model
    losses: int = 0  # chunk transmissions the loss model lost


class _BothWays(Generic[_T]):
    """A `LinkShape` field as an emulator attribute: set in both directions at once, read from `up`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, net: NetworkEmulator, owner: type | None = None) -> _T:
        return cast(_T, getattr(net.up, self._name))

    def __set__(self, net: NetworkEmulator, value: _T) -> None:
        change: dict[str, Any] = {self._name: value}
        net.up, net.down = replace(net.up, **change), replace(net.down, **change)


class _LinkEndedError(Exception):
    """Raised in a connection's TaskGroup to end all of its pumps at once."""


@dataclass(eq=False)
class _Connection:
    number: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    client_eof: bool = False
    eofs_delivered: int = 0

    def end(self, reason: str) -> bool:
        """Ask all of the connection's pumps to stop; False if it was ending already."""
        ending, self.reason = not self.ended.is_set(), self.reason or reason
        self.ended.set()
        return ending


class NetworkEmulator:
    """A TCP proxy from 127.0.0.1:`port` to `upstream_host`:`upstream_port`; see the module docstring."""

    def __init__(
        self, *, upstream_port: int, upstream_host: str = "127.0.0.1", port: int = 0, rng: random.Random | None = None
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.up = self.down = LinkShape()
        self.stats = NetEmStats()
        self._port = port  # 0: a free one, chosen at start() and kept across REFUSE cuts
        self._rng = rng or random.Random(0)  # noqa: S311 - reproducible faults, not secrets
        self._buckets: dict[bool, TokenBucket] = {}  # by direction: True = up
        self._mode: CutMode | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._socket: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._connections: set[_Connection] = set()
        self._running = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    latency_s = _BothWays[float]()  # set: both directions (the round trip gains twice this); get: `up`'s
    jitter_s = _BothWays[float]()
    loss = _BothWays[float]()
    bandwidth_bps = _BothWays[float | None]()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the network emulator has no port before start()")
        return self._port

    @property
    def url(self) -> str:
        """The broker URL to give the agent instead of the broker's own."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def cut_mode(self) -> CutMode | None:
        """The current tunnel's mode, or None while the link is up."""
        return self._mode

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"the network emulator on port {self._port} is running already")
        self._running.clear()
        self._stopping.clear()
        listening = self._bind() if self._mode is not CutMode.REFUSE else None
        self._runner = asyncio.create_task(self._supervise(), name=f"netem-{self._port}")
        await self._running.wait()
        if listening is not None:
            await self._listen(listening)
        _LOGGER.info("netem 127.0.0.1:%d → %s:%d", self._port, self.upstream_host, self.upstream_port)

    async def stop(self) -> None:
        """Close the listener and every connection; re-raises a forwarding task's unexpected failure."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        try:
            await runner
        finally:
            self._close_listener()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def cut(self, mode: CutMode = CutMode.BLACKHOLE) -> None:
        """Take the link down until `restore()`; cutting again may change the mode."""
        if self._mode is None:
            self.stats.cuts += 1
        self._mode = mode
        self._open.clear()
        if mode is CutMode.REFUSE:
            self._close_listener()
            self.stats.dropped += sum(connection.end("cut: link refused") for connection in self._connections)
        elif self._socket is None and self._tasks is not None:  # REFUSE → BLACKHOLE: accept again
            self._tasks.create_task(self._listen(self._bind()), name=f"netem-{self._port}-listen")
        _LOGGER.info("netem %d: link cut (%s)", self._port, mode)

    def restore(self) -> None:
        """End the cut: held bytes flow, held connections go through, new ones are accepted."""
        if self._mode is None:
            return
        if self._socket is None and self._tasks is not None:
            self._tasks.create_task(self._listen(self._bind()), name=f"netem-{self._port}-listen")
        self._mode = None
        self._open.set()
        _LOGGER.info("netem %d: link restored", self._port)

    def _bind(self) -> socket.socket:
        """Listen now (a client may connect at once); serving starts in `_listen`."""
        try:
            self._socket = socket.create_server(("127.0.0.1", self._port))  # SO_REUSEADDR on POSIX
        except OSError as exc:
            raise OSError(exc.errno, f"netem cannot listen on 127.0.0.1:{self._port}: {exc.strerror}") from exc
        self._port = int(self._socket.getsockname()[1])
        return self._socket

    async def _listen(self, listening: socket.socket) -> None:
        if self._socket is listening:  # not closed by a REFUSE cut meanwhile
            # Without start_serving this does not suspend, so the server is ours before anything runs.
            server = self._server = await asyncio.start_server(self._accept, sock=listening, start_serving=False)
            await server.start_serving()

    def _close_listener(self) -> None:
        server, listening, self._server, self._socket = self._server, self._socket, None, None
        if server is not None:
            server.close()  # closes the socket too
        elif listening is not None:
            listening.close()

    async def _supervise(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self._running.set()
                await self._stopping.wait()
                self._close_listener()
                for connection in self._connections:
                    connection.end("emulator stopped")
        finally:
            self._tasks = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tasks is None or self._stopping.is_set() or self._mode is CutMode.REFUSE:
            writer.transport.abort()  # taken from the backlog just as the listener closed
            return
        self.stats.connections += 1
        connection = _Connection(self.stats.connections, writer)
        self._connections.add(connection)
        self._tasks.create_task(self._serve(connection, reader), name=f"netem-{self._port}-{connection.number}")

    async def _serve(self, connection: _Connection, client: asyncio.StreamReader) -> None:
        to_upstream: _Queue = asyncio.Queue(_QUEUE_CHUNKS)
        try:
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(self._watch(connection))
                pumps.create_task(self._read(connection, client, to_upstream, up=True))
                pumps.create_task(self._connect(connection, pumps, to_upstream))
        except* _LinkEndedError:
            _LOGGER.debug("netem %d: connection %d ended: %s", self._port, connection.number, connection.reason)
        finally:
            self._connections.discard(connection)
            for writer in (connection.client, connection.upstream):
                if writer is not None:
                    writer.transport.abort()

    @staticmethod
    async def _watch(connection: _Connection) -> None:
        await connection.ended.wait()
        raise _LinkEndedError(connection.reason)

    async def _connect(self, connection: _Connection, pumps: asyncio.TaskGroup, to_upstream: _Queue) -> None:
        held = not self._open.is_set()
        await self._open.wait()  # accepted in a black hole: its SYN would not have arrived yet
        if held and connection.client_eof:
            connection.end("the client gave up inside the black hole")
            return
        try:
            reader, writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError as exc:
            connection.end(f"upstream {self.upstream_host}:{self.upstream_port} unreachable: {exc}")
            return
        connection.upstream = writer
        to_client: _Queue = asyncio.Queue(_QUEUE_CHUNKS)
        pumps.create_task(self._write(connection, writer, to_upstream, up=True))
        pumps.create_task(self._read(connection, reader, to_client, up=False))
        pumps.create_task(self._write(connection, connection.client, to_client, up=False))

    def _pace(self, shape: LinkShape, nbytes: int, now: float, *, up: bool) -> float:
        bucket = self._buckets.get(up)
        if shape.bandwidth_bps is None:
            return 0.0
        if bucket is None or (bucket.rate_bps, bucket.burst_bytes) != (shape.bandwidth_bps, shape.burst_bytes):
            bucket = self._buckets[up] = TokenBucket(rate_bps=shape.bandwidth_bps, burst_bytes=shape.burst_bytes)
        return bucket.wait_s(nbytes, now)

    async def _read(self, connection: _Connection, reader: asyncio.StreamReader, queue: _Queue, *, up: bool) -> None:
        """Read chunks and stamp each with the loop time it is due at the other end."""
        loop = asyncio.get_running_loop()
        name, last_due = "up" if up else "down", 0.0
        while True:
            try:
                data = await reader.read(_CHUNK)
            except OSError as exc:
                connection.end(f"{name}: read failed: {exc}")
                return
            now, shape = loop.time(), self.up if up else self.down
            if not data:
                connection.client_eof = connection.client_eof or up
                await queue.put((max(now + shape.latency_s, last_due), b""))
                return
            delay, losses = transit_delay(shape, self._rng)
            self.stats.losses += losses
            if losses > shape.max_retransmits:
                self.stats.loss_cuts += 1
                self.stats.dropped += connection.end(f"{name}: a chunk lost {losses} times; the loss model cut it")
                return
            last_due = max(now + self._pace(shape, len(data), now, up=up) + delay, last_due)
            await queue.put((last_due, data))

    async def _write(self, connection: _Connection, writer: asyncio.StreamWriter, queue: _Queue, *, up: bool) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            while True:
                await self._open.wait()  # a black hole holds everything, in order
                wait = due - loop.time()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            try:
                if not data:
                    writer.write_eof()
                    break
                writer.write(data)
                await writer.drain()
            except OSError as exc:
                connection.end(f"{'up' if up else 'down'}: write failed: {exc}")
                return
            if up:
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)
        connection.eofs_delivered += 1
        if connection.eofs_delivered == 2:
            connection.end("closed by both ends")
