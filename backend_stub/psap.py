"""The PSAP stub: answers eCalls on a simulated 112 network, decodes MSDs, acknowledges, calls back.

The simulated 112 network is the loopback telephone network of `backend_stub.voice_line` (one TCP
connection a call, one ASCII line a message); on it the PSAP and the IVS say:

    caller → callee   CALL <kind> <callback>      first line; kind: test|manual|automatic|callback;
                                                  callback: host:port where the IVS takes calls, or -
    PSAP → IVS        CONNECTED                   the call is answered (the IVS says it on a callback)
                      SEND-MSD                    send (or send again) the MSD
                      LL-ACK                      the MSD arrived (link layer)
                      AL-ACK positive|clear-down  the MSD was accepted (application layer)
                      CLEARDOWN                   the PSAP hangs up
    IVS → PSAP        MSD <hex>                   the MSD, as its UPER bytes
                      HANGUP                      the IVS hangs up

    async with PsapStub(behaviour=PsapBehaviour()) as psap:     # or tasks.create_task(psap.run())
        modem = ModemSimulator(psap_address=psap.address)
        received = await psap.wait_for_msd()                   # ReceivedMsd: bytes, decoded Msd, timings
        await psap.call_back(); await psap.request_msd(); await psap.clear_down()

Everything is kept in memory (`calls`, `msds`) and, with `database=`, in an SQLite table read back by
`read_psap_msds(path)` — what a CLI command such as `backend-stub psap-msds --db ...` prints. The acks
go out first; the row is written afterwards on the archive's own thread (`backend_stub.psap_archive`),
so neither a database locked by another process nor a slow disk holds up a call or the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backend_stub.psap_archive import PsapArchive
from backend_stub.voice_line import MAX_LINE, CallLine, LineCall, LineServer
from tcu.clock import Clock
from telematics_wire.errors import MsdError
from telematics_wire.msd import Msd, decode
from telematics_wire.records import to_millis

_LOGGER = logging.getLogger(__name__)
_MAX_RESENDS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class PsapBehaviour:
    request_msd_on_connect: bool = True  # pull mode: SEND-MSD as soon as the call is answered
    answer_delay_s: float = 0.0  # simulated ringing before the operator picks up
    al_ack: bool = True  # acknowledge a decodable MSD
    clear_down_with_ack: bool = False  # AL-ACK clear-down: the call ends after the MSD
    resend_invalid: bool = True  # SEND-MSD again when an MSD does not decode
    voice_s: float | None = None  # the operator talks this long after the AL-ACK, then clears down


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedMsd:
    call_id: int
    received: datetime
    mono: float
    raw: bytes
    msd: Msd | None
    error: str | None = None


@dataclass(slots=True, kw_only=True)
class PsapCall(LineCall):
    """ended_by: "psap", "ivs", "network"."""

    kind: str
    msds: list[ReceivedMsd] = field(default_factory=list)


class PsapStub(LineServer[PsapCall]):
    name = "PSAP"
    network = "the simulated 112 network"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: PsapBehaviour | None = None,
        clock: Clock | None = None,
        database: Path | None = None,
    ) -> None:
        super().__init__(host=host, port=port, clock=clock)
        self.behaviour = behaviour or PsapBehaviour()
        self._archive = None if database is None else PsapArchive(database)

    @property
    def msds(self) -> list[ReceivedMsd]:
        return [msd for call in self.calls for msd in call.msds]

    async def start(self) -> None:
        if self._archive is not None:  # its table made on its own thread before the first call answers
            await self._archive.open()
        await super().start()

    async def close(self) -> None:
        await super().close()
        if self._archive is not None:
            await self._archive.close()
            self._archive = None

    async def archived(self) -> None:
        """Once every MSD received so far is in the database (or its failure logged)."""
        if self._archive is not None:
            await self._archive.written()

    # -- operator actions ---------------------------------------------------------------------------------
    async def request_msd(self, call_id: int | None = None) -> None:
        self._send(self._active(call_id), "SEND-MSD")

    async def clear_down(self, call_id: int | None = None) -> None:
        call = self._active(call_id)
        self._send(call, "CLEARDOWN")
        self._end(call, "psap")
        if call.line is not None:
            await call.line.close()

    async def call_back(self, call_id: int | None = None, *, ring_for_s: float = 60.0) -> PsapCall:
        """Call the IVS back at the address its eCall gave; returns the ringing call at once.

        The call is answered when the IVS sends CONNECTED (`call.at("connected")`), or abandoned after
        `ring_for_s` (ended by "psap"); a refused connection raises `ConnectionError`.
        """
        original = self.call(call_id)
        if not original.callback or ":" not in original.callback:
            raise LookupError(f"call {original.id} left no callback address")
        host, port = original.callback.rsplit(":", 1)
        call = self._new_call("callback", None)
        try:
            reader, writer = await asyncio.open_connection(host, int(port), limit=MAX_LINE)
        except OSError as exc:
            self._end(call, "network")
            raise ConnectionError(f"callback to {original.callback} failed: {exc}") from exc
        call.line = CallLine(reader, writer)
        call.line.send("CALL", "callback", "112")
        task = asyncio.create_task(self._ring(call, ring_for_s), name=f"psap-call-{call.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call

    async def _ring(self, call: PsapCall, ring_for_s: float) -> None:
        assert call.line is not None
        try:
            async with asyncio.timeout(ring_for_s):
                message = await call.line.receive()
        except TimeoutError:
            message = None
            self._end(call, "psap")
        if message is None or message[0] != "CONNECTED":
            _LOGGER.warning("PSAP callback %d not answered (%s)", call.id, message)
            self._end(call, "network")
            await call.line.close()
            return
        self._mark(call, "connected")
        await self._converse(call)

    # -- waiting, for tests and run reports -----------------------------------------------------------------
    async def wait_for_msd(self, count: int = 1, *, within_s: float = 10.0) -> ReceivedMsd:
        await self.wait_for(lambda: len(self.msds) >= count, within_s=within_s, what=f"MSD number {count}")
        return self.msds[count - 1]

    def rows(self) -> list[dict[str, Any]]:
        """Every MSD received, JSON-ready: what a CLI prints."""
        return [msd_row(self.call(received.call_id), received) for received in self.msds]

    # -- the network side -----------------------------------------------------------------------------------
    async def _take(self, line: CallLine, kind: str, callback: str | None) -> None:
        call = self._new_call(kind, callback)
        call.line = line
        if self.behaviour.answer_delay_s > 0:
            await asyncio.sleep(self.behaviour.answer_delay_s)
        line.send("CONNECTED")
        self._mark(call, "connected")
        if self.behaviour.request_msd_on_connect:
            self._send(call, "SEND-MSD")
        await self._converse(call)

    async def _converse(self, call: PsapCall) -> None:
        line = call.line
        assert line is not None
        try:
            while (message := await line.receive()) is not None:
                verb, args = message
                if verb == "MSD" and args:
                    self._msd(call, args[0])
                elif verb == "HANGUP":
                    self._end(call, "ivs")
                    break
                else:
                    _LOGGER.warning("PSAP call %d: unexpected %r", call.id, message)
        finally:
            self._end(call, "network")
            await line.close()

    def _msd(self, call: PsapCall, text: str) -> None:
        received = self._decode(call, text)
        call.msds.append(received)
        self._mark(call, "msd")
        self._send(call, "LL-ACK")
        self._answer(call, received.msd, received.error)
        # Last, and off the loop: the acks are on the wire before the database is touched, which may
        # wait on another process's lock (busy timeout) or fail on a full disk.
        if self._archive is not None:
            row = msd_row(call, received)
            self._archive.add(call.id, {**row, "received_ms": to_millis(received.received)})

    def _decode(self, call: PsapCall, text: str) -> ReceivedMsd:
        now = self._clock.now()
        mono = self._clock.monotonic()
        try:
            raw = bytes.fromhex(text)
            msd = decode(raw)
        except (ValueError, MsdError) as exc:
            return ReceivedMsd(
                call_id=call.id, received=now, mono=mono, raw=text.encode("ascii", "replace"), msd=None, error=str(exc)
            )
        return ReceivedMsd(call_id=call.id, received=now, mono=mono, raw=raw, msd=msd)

    def _answer(self, call: PsapCall, msd: Msd | None, error: str | None) -> None:
        if msd is None:
            _LOGGER.warning("PSAP call %d: MSD does not decode: %s", call.id, error)
            if self.behaviour.resend_invalid and len(call.msds) <= _MAX_RESENDS:
                self._send(call, "SEND-MSD")
            return
        _LOGGER.info(
            "PSAP call %d: MSD %d from %s at %s, %s",
            call.id,
            msd.message_identifier,
            msd.vin,
            msd.latitude_deg,
            msd.longitude_deg,
        )
        if self.behaviour.al_ack:
            self._send(call, "AL-ACK", "clear-down" if self.behaviour.clear_down_with_ack else "positive")
            if self.behaviour.voice_s is not None and not self.behaviour.clear_down_with_ack:
                task = asyncio.create_task(self._clear_down_after(call, self.behaviour.voice_s))
                self._tasks.add(task)  # owned: cancelled and awaited by close()
                task.add_done_callback(self._tasks.discard)

    async def _clear_down_after(self, call: PsapCall, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if call.active:
            _LOGGER.info("PSAP call %d: operator clears down after %.0f s of voice", call.id, seconds)
            await self.clear_down(call.id)

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def _new_call(self, kind: str, callback: str | None) -> PsapCall:
        call = PsapCall(id=len(self.calls) + 1, kind=kind, callback=callback, started=self._clock.now())
        self.calls.append(call)
        self._mark(call, "call")
        _LOGGER.info("PSAP: %s call %d (callback %s)", kind, call.id, callback)
        return call

    def _active(self, call_id: int | None) -> PsapCall:
        call = self.call(call_id)
        if not call.active or call.line is None:
            raise LookupError(f"PSAP call {call.id} has ended ({call.ended_by})")
        return call

    def _send(self, call: PsapCall, verb: str, *args: str) -> None:
        if call.line is not None:
            call.line.send(verb, *args)
        self._mark(call, " ".join((verb.lower(), *args)))


def msd_row(call: PsapCall, received: ReceivedMsd, transport: str = "cs") -> dict[str, Any]:
    """One received MSD as a row: the table's columns, what `backend-stub psap-msds` prints.

    transport: "cs" (this module's 112 voice call) or "ng" (`backend_stub.psap_ng`, SIP)."""
    msd = received.msd
    started, answered = call.at("call"), call.at("connected")
    return {
        "call_id": call.id,
        "transport": transport,
        "kind": call.kind,
        "received": received.received.isoformat(timespec="milliseconds"),
        "message_identifier": None if msd is None else msd.message_identifier,
        "vin": None if msd is None else msd.vin,
        "latitude_deg": None if msd is None else msd.latitude_deg,
        "longitude_deg": None if msd is None else msd.longitude_deg,
        "position_trusted": None if msd is None else msd.position_can_be_trusted,
        "raw_hex": received.raw.hex(),
        "error": received.error,
        "answered_after_ms": None if started is None or answered is None else round((answered - started) * 1000),
        "msd_after_ms": None if started is None else round((received.mono - started) * 1000),
    }


def read_psap_msds(database: Path) -> list[dict[str, Any]]:
    """The MSDs the PSAP stubs (CS and NG) stored in `database`, oldest first (for the backend CLI).

    A table from before NG eCall (not yet migrated: the CLI only reads) held circuit-switched ones only."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute("SELECT * FROM psap_msds ORDER BY received_ms, call_id")]
    for row in rows:
        row.setdefault("transport", "cs")
    return rows
