"""The carmaker's call centre for the intelligent emergency call (6AC): answers the voice call, shows the data.

Two halves, as at a real call centre:

- the voice line: a listener on the simulated telephone network (TCP on 127.0.0.1, the line protocol of
  `backend_stub.psap`: `CALL voice <callback>` first, then `CONNECTED` when an agent picks up,
  `CLEARDOWN`/`HANGUP` or a closed connection to end it). The modem simulator reaches it by the number
  the vehicle dials (`ModemSimulator(numbers={number: call_centre.address})`);
- the case data: the vehicle sends the MSD and the additional data as an `ecall` record on the uplink;
  `attach(ingest)` shows each one as it is stored (read by `backend_stub.call_centre_cases`, which also
  reads them back from the store for the CLI's `backend-stub call-centre-cases`).

    async with CallCentreStub(behaviour=CallCentreBehaviour(answer_delay_s=2)) as centre:
        centre.attach(backend.ingest)
        case = await centre.wait_for_case()                # CallCentreCase: VIN, MSD, occupants, ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import NoReturn, Self

from backend_stub.call_centre_cases import CallCentreCase, is_case_record, parse_case, read_call_centre_cases
from backend_stub.ingest import Ingest
from backend_stub.psap import MAX_LINE, CallLine
from tcu.clock import Clock, SystemClock
from tcu.uplink.records import ReceivedRecord

__all__ = [
    "CallCentreBehaviour",
    "CallCentreCase",
    "CallCentreStub",
    "VoiceCall",
    "parse_case",
    "read_call_centre_cases",
]
_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCentreBehaviour:
    answer: bool = True  # False: nobody picks up (the vehicle's answer timer decides)
    answer_delay_s: float = 0.0  # ringing before an agent picks up
    voice_s: float | None = None  # the agent talks this long, then clears down; None: until the vehicle hangs up


@dataclass(slots=True, kw_only=True)
class VoiceCall:
    id: int
    callback: str | None
    started: datetime
    timeline: list[tuple[float, str]] = field(default_factory=list)
    ended_by: str | None = None  # "call_centre", "vehicle", "network"
    line: CallLine | None = field(default=None, repr=False)

    def at(self, event: str) -> float | None:
        return next((t for t, name in self.timeline if name == event), None)


class CallCentreStub:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: CallCentreBehaviour | None = None,
        clock: Clock | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the simulated telephone network listens on loopback only, not {host!r}")
        self.behaviour = behaviour or CallCentreBehaviour()
        self._host, self._port = host, port
        self._clock = clock or SystemClock()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self.calls: list[VoiceCall] = []
        self.cases: list[CallCentreCase] = []

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the call centre is not listening yet")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def attach(self, ingest: Ingest) -> None:
        ingest.add_observer(self.on_record)

    def on_record(self, record: ReceivedRecord) -> None:
        """An ingest observer: quick, in memory only (the record itself is already in the store)."""
        if not is_case_record(record.kind_name or record.kind.value, record.body):
            return
        case = parse_case(record.vin, record.body, self._clock.now())
        self.cases.append(case)
        row = case.row()
        where = f"{row['latitude_deg']}, {row['longitude_deg']}"
        vehicle = f"{row['colour']} {row['model']}"
        what = f"{row['call_type']} call ({row['trigger']}, {row['severity']})"
        _LOGGER.warning(
            "call centre: %s from %s at %s; belted %s; %s", what, case.vin, where, row["occupants_belted"], vehicle
        )
        if case.problems:
            _LOGGER.warning("call centre: case from %s has problems: %s", case.vin, row["problems"])
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool], *, within_s: float = 10.0, what: str = "event") -> None:
        try:
            async with asyncio.timeout(within_s):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"call centre: no {what} within {within_s:g} s") from None

    async def wait_for_case(self, count: int = 1, *, within_s: float = 10.0) -> CallCentreCase:
        await self.wait_for(lambda: len(self.cases) >= count, within_s=within_s, what=f"case number {count}")
        return self.cases[count - 1]

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._incoming, self._host, self._port, limit=MAX_LINE)
        _LOGGER.info("call centre answering on %s:%d", *self.address)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for call in self.calls:
            if call.line is not None:
                call.line.abort()
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
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.close()
        raise AssertionError("unreachable")

    async def clear_down(self, call_id: int | None = None) -> None:
        call = self.calls[-1] if call_id is None else next(c for c in self.calls if c.id == call_id)
        if call.line is not None and call.ended_by is None:
            call.line.send("CLEARDOWN")
            self._end(call, "call_centre")
            await call.line.close()

    # -- the voice line ---------------------------------------------------------------------------------
    async def _incoming(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = CallLine(reader, writer)
        first = await line.receive()
        if first is None or first[0] != "CALL" or not first[1]:
            _LOGGER.warning("call centre: refused a connection that did not start with CALL: %r", first)
            await line.close()
            return
        callback = first[1][1] if len(first[1]) > 1 and first[1][1] != "-" else None
        call = VoiceCall(id=len(self.calls) + 1, callback=callback, started=self._clock.now(), line=line)
        self.calls.append(call)
        self._mark(call, "ringing")
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._converse(call, line)
        finally:
            self._end(call, "network")
            await line.close()
            if task is not None:
                self._tasks.discard(task)

    async def _converse(self, call: VoiceCall, line: CallLine) -> None:
        b = self.behaviour
        if not b.answer:
            await line.receive()  # rings until the caller gives up
            self._end(call, "vehicle")
            return
        if b.answer_delay_s > 0:
            try:
                async with asyncio.timeout(b.answer_delay_s):
                    await line.receive()  # anything (or the line closing) before the pick-up: the caller gave up
            except TimeoutError:
                pass
            else:
                self._end(call, "vehicle")
                return
        line.send("CONNECTED")
        self._mark(call, "answered")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(b.voice_s):
                while (message := await line.receive()) is not None:
                    if message[0] == "HANGUP":
                        break
                self._end(call, "vehicle")
                return
        await self.clear_down(call.id)

    def _end(self, call: VoiceCall, by: str) -> None:
        if call.ended_by is None:
            call.ended_by = by
            self._mark(call, f"ended by {by}")

    def _mark(self, call: VoiceCall, event: str) -> None:
        call.timeline.append((self._clock.monotonic(), event))
        self._changed.set()
