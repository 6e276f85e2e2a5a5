"""The simulated telephone network that the PSAP stub (112) and the call centre stub (6AC) answer on.

TCP on loopback only, so a modem simulator in another process (a HIL bench) reaches a stub as easily as
one in the same event loop. One TCP connection is one call; ASCII lines end with "\\n"; the caller's first
line is `CALL <kind> <callback>` (callback: host:port where the caller takes calls, or -); closing the
connection ends the call (without CLEARDOWN/HANGUP first, that is a network drop). The verbs after the
first line are each service's own: `backend_stub.psap`, `backend_stub.call_centre`.

`LineServer` is what both stubs share as answerers on this network: the listener, the calls taken with
their timelines, waiting for a condition on them, and closing down with calls still up. What a stub does
with a call (`_take`) is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import ClassVar, Generic, NoReturn, Self, TypeVar

from backend_stub.wakeup import Wakeup
from tcu.clock import Clock, SystemClock

_LOGGER = logging.getLogger(__name__)
MAX_LINE = 1024
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class CallLine:
    """One call on the simulated network: line-framed messages over a TCP stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    def send(self, verb: str, *args: str) -> None:
        if not self._writer.is_closing():
            self._writer.write(" ".join((verb, *args)).encode("ascii") + b"\n")

    async def receive(self) -> tuple[str, list[str]] | None:
        """The next message as (VERB, args); None once the other side hung up or the line broke."""
        try:
            raw = await self._reader.readline()
        except (ConnectionError, ValueError):  # ValueError: a line longer than the stream limit
            return None
        if not raw:
            return None
        words = raw.decode("ascii", errors="replace").split()
        return (words[0].upper(), words[1:]) if words else ("", [])

    def abort(self) -> None:
        self._writer.close()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


@dataclass(slots=True, kw_only=True)
class LineCall:
    """A call a stub has taken (or placed): its events on the stub's monotonic clock, and who ended it."""

    id: int
    callback: str | None
    started: datetime
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (monotonic s, event)
    ended_by: str | None = None
    line: CallLine | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.ended_by is None

    def at(self, event: str) -> float | None:
        return next((t for t, name in self.timeline if name == event), None)


CallT = TypeVar("CallT", bound=LineCall)


class LineServer(ABC, Generic[CallT]):
    """An answerer on the simulated network. Subclasses name themselves and take each call (`_take`)."""

    name: ClassVar[str]  # in messages: "PSAP", "call centre"
    network: ClassVar[str]  # "the simulated 112 network"

    def __init__(self, *, host: str, port: int, clock: Clock | None) -> None:
        if host not in _LOOPBACK:
            raise ValueError(f"{self.network} listens on loopback only, not {host!r}")
        self._host, self._port = host, port
        self._clock = clock or SystemClock()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # owned: cancelled and awaited by close()
        # Set from the database thread too: the call centre's ingest observer runs there.
        self._changed = Wakeup()
        self._listening = asyncio.Event()  # set once start() listens: a caller waits on it, never polls
        self.calls: list[CallT] = []

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError(f"the {self.name} is not listening yet")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def wait_listening(self, *, within_s: float = 10.0) -> tuple[str, int]:
        """The address once the stub listens; a stub's start may take a while (the PSAP compiles first)."""
        try:
            async with asyncio.timeout(within_s):
                await self._listening.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the {self.name} did not start listening on {self._host}:{self._port} within {within_s:g} s"
            ) from None
        return self.address

    def call(self, call_id: int | None = None) -> CallT:
        """A call by id, or the most recent one."""
        if not self.calls:
            raise LookupError(f"the {self.name} has had no call")
        if call_id is None:
            return self.calls[-1]
        return next(c for c in self.calls if c.id == call_id)

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._incoming, self._host, self._port, limit=MAX_LINE)
        self._listening.set()
        _LOGGER.info("%s answering on %s (%s:%d)", self.name, self.network, *self.address)

    async def close(self) -> None:
        self._listening.clear()
        if self._server is not None:
            self._server.close()
        for call in self.calls:
            if call.line is not None:
                call.line.abort()  # not awaited: a cancelled task may hold the close waiter
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def run(self) -> NoReturn:
        """Serve until cancelled; for the backend app's TaskGroup."""
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.close()
        raise AssertionError("unreachable")

    # -- waiting, for tests and run reports -------------------------------------------------------------
    async def wait_for(self, condition: Callable[[], bool], *, within_s: float = 10.0, what: str = "event") -> None:
        try:
            async with asyncio.timeout(within_s):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no {what} within {within_s:g} s") from None

    # -- the network side -------------------------------------------------------------------------------
    async def _incoming(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = CallLine(reader, writer)
        first = await line.receive()
        if first is None or first[0] != "CALL" or not first[1]:
            _LOGGER.warning("%s: refused a connection that did not start with CALL: %r", self.name, first)
            await line.close()
            return
        kind, rest = first[1][0], first[1][1:]
        callback = rest[0] if rest and rest[0] != "-" else None
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._take(line, kind, callback)
        finally:
            await line.close()
            if task is not None:
                self._tasks.discard(task)

    @abstractmethod
    async def _take(self, line: CallLine, kind: str, callback: str | None) -> None:
        """Handle an incoming call until it ends; the line is closed when this returns."""

    # -- bookkeeping ------------------------------------------------------------------------------------
    def _end(self, call: CallT, by: str) -> None:
        if call.ended_by is None:
            call.ended_by = by
            self._mark(call, f"ended by {by}")

    def _mark(self, call: CallT, event: str) -> None:
        call.timeline.append((self._clock.monotonic(), event))
        self._changed.set()
