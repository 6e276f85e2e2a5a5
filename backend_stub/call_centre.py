"""The carmaker's call centre for the intelligent emergency call (6AC): answers the voice call, shows the data.

Two halves, as at a real call centre:

- the voice line: a listener on the simulated telephone network (TCP on 127.0.0.1, the line protocol of
  `backend_stub.psap`: `CALL voice <callback>` first, then `CONNECTED` when an agent picks up,
  `CLEARDOWN`/`HANGUP` or a closed connection to end it). The modem simulator reaches it by the number
  the vehicle dials (`ModemSimulator(numbers={number: call_centre.address})`);
- the case data: the vehicle sends the MSD and the additional data as an `ecall` record with
  `event = "call_centre_data"` on the uplink (tcu/ecall/call_centre_data.py says why); `attach(ingest)`
  shows each one as it is stored, `read_call_centre_cases(store)` reads them back (the CLI's
  `backend-stub call-centre-cases`).

    async with CallCentreStub(behaviour=CallCentreBehaviour(answer_delay_s=2)) as centre:
        centre.attach(backend.ingest)
        case = await centre.wait_for_case()                # CallCentreCase: VIN, MSD, occupants, ...

A case is whatever a vehicle sent, so `parse_case` is total: every field is checked (type, range,
size; bools are not integers, floats must be finite) and a bad one is dropped with its reason in
`problems` — the agent on the phone still gets every field that is good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, NoReturn, Self, TypeGuard

from backend_stub.ingest import Ingest
from backend_stub.psap import MAX_LINE, CallLine
from backend_stub.store import BackendStore
from tcu.clock import Clock, SystemClock
from tcu.ecall.msd import Msd, decode
from tcu.errors import MsdError
from tcu.uplink.records import MAX_MILLIS, ReceivedRecord, RecordKind, from_millis
from tcu.uplink.strict_cbor import describe

_LOGGER = logging.getLogger(__name__)
EVENT = "call_centre_data"  # tcu.ecall.call_centre_data.EVENT
_CALL_TYPES = frozenset({"automatic", "manual", "test"})
_SEVERITIES = frozenset({"airbag_deployed", "crash_detected", "none_reported"})
_MAX_TEXT = 200
_MAX_MSD = 140  # EN 15722: an MSD is at most 140 bytes
_MAX_SIGNALS = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCentreCase:
    vin: str
    received: datetime
    call_type: str | None = None
    trigger: str | None = None
    trigger_signal: str | None = None
    at: datetime | None = None
    number: str | None = None
    fallback_to_112: bool | None = None
    msd: Msd | None = None
    severity: str | None = None
    occupants_belted: int | None = None
    seats_known: int | None = None
    model: str | None = None
    colour: str | None = None
    vehicle_type: str | None = None
    propulsion: tuple[str, ...] = ()
    signals: Mapping[str, bool | float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        """JSON-ready, what the CLI prints and an agent on the phone reads first."""
        msd = self.msd
        return {
            "vin": self.vin,
            "at": None if self.at is None else self.at.isoformat(timespec="milliseconds"),
            "received": self.received.isoformat(timespec="milliseconds"),
            "call_type": self.call_type,
            "trigger": self.trigger,
            "severity": self.severity,
            "latitude_deg": None if msd is None else msd.latitude_deg,
            "longitude_deg": None if msd is None else msd.longitude_deg,
            "position_trusted": None if msd is None else msd.position_can_be_trusted,
            "occupants_belted": self.occupants_belted,
            "seats_known": self.seats_known,
            "model": self.model,
            "colour": self.colour,
            "vehicle_type": self.vehicle_type,
            "propulsion": ",".join(self.propulsion),
            "speed_kmh": self.signals.get("Vehicle.Speed"),
            "fallback_to_112": self.fallback_to_112,
            "problems": "; ".join(self.problems),
        }


def is_case_record(kind: str, body: Mapping[str, Any]) -> bool:
    return kind == RecordKind.ECALL.value and isinstance(body, Mapping) and body.get("event") == EVENT


def parse_case(vin: str, body: Mapping[str, Any], received: datetime) -> CallCentreCase:
    """A case from a record body; never raises: each bad field is left out and named in `problems`."""
    r = _Reader(body)
    call_type = r.text("call_type")
    if call_type is not None and call_type not in _CALL_TYPES:
        r.bad("call_type", call_type, "automatic, manual or test")
        call_type = None
    r.fields.update(call_type=call_type, trigger=r.text("trigger"), number=r.text("number", limit=32))
    r.fields["trigger_signal"] = r.text("trigger_signal", optional=True)
    at_ms = body.get("at_ms")
    if _int(at_ms, 0, MAX_MILLIS):
        r.fields["at"] = from_millis(at_ms)
    else:
        r.bad("at_ms", at_ms, f"milliseconds since 1970 within 0..{MAX_MILLIS}")
    fallback = body.get("fallback_to_112")
    if isinstance(fallback, bool):
        r.fields["fallback_to_112"] = fallback
    else:
        r.bad("fallback_to_112", fallback, "true or false")
    severity = body.get("severity")
    if isinstance(severity, str) and severity in _SEVERITIES:
        r.fields["severity"] = severity
    else:
        r.bad("severity", severity, ", ".join(sorted(_SEVERITIES)))
    r.msd(vin)
    r.occupants()
    r.vehicle()
    r.fields["signals"] = _signals(body.get("signals"), r.problems)
    return CallCentreCase(vin=vin, received=received, problems=tuple(r.problems), **r.fields)


class _Reader:
    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = body
        self.problems: list[str] = []
        self.fields: dict[str, Any] = {}

    def bad(self, name: str, value: object, expected: str) -> None:
        self.problems.append(f"{name}: got {describe(value)[:80]}; expected {expected}")

    def text(self, name: str, *, limit: int = _MAX_TEXT, optional: bool = False) -> str | None:
        value = self.body.get(name)
        if value is None and optional:
            return None
        if isinstance(value, str) and len(value) <= limit and value.isprintable():
            return value
        self.bad(name, value, f"printable text of at most {limit} characters")
        return None

    def msd(self, vin: str) -> None:
        raw = self.body.get("msd")
        if not isinstance(raw, bytes) or not 0 < len(raw) <= _MAX_MSD:
            self.bad("msd", raw, f"the MSD's bytes (1..{_MAX_MSD})")
            return
        try:
            msd = decode(raw)
        except MsdError as exc:
            self.problems.append(f"msd: does not decode: {exc}")
            return
        self.fields["msd"] = msd
        if msd.vin != vin:
            self.problems.append(f"msd: names VIN {msd.vin}, but the record came from {vin}")

    def occupants(self) -> None:
        occupants = self.body.get("occupants")
        if occupants is None:
            return
        if isinstance(occupants, Mapping):
            belted, known = occupants.get("belted"), occupants.get("seats_known")
            if _int(belted, 0, 255) and _int(known, 0, 255) and belted <= known:
                self.fields.update(occupants_belted=belted, seats_known=known)
                return
        self.bad("occupants", occupants, "null or {belted, seats_known}: integers 0..255, belted <= seats_known")

    def vehicle(self) -> None:
        vehicle = self.body.get("vehicle")
        if not isinstance(vehicle, Mapping):
            self.bad("vehicle", vehicle, "a map")
            return
        for key, name in (("model", "model"), ("colour", "colour"), ("type", "vehicle_type")):
            value = vehicle.get(key)
            if isinstance(value, str) and len(value) <= 60 and value.isprintable():
                self.fields[name] = value
            else:
                self.bad(f"vehicle.{key}", value, "printable text of at most 60 characters")
        propulsion = vehicle.get("propulsion")
        if isinstance(propulsion, list) and len(propulsion) <= 8 and all(_short(p) for p in propulsion):
            self.fields["propulsion"] = tuple(propulsion)
        else:
            self.bad("vehicle.propulsion", propulsion, "a list of at most 8 short names")


def _signals(value: object, problems: list[str]) -> dict[str, bool | float]:
    if not isinstance(value, Mapping) or len(value) > _MAX_SIGNALS:
        problems.append(f"signals: got {describe(value)[:80]}; expected a map of at most {_MAX_SIGNALS} signals")
        return {}
    out: dict[str, bool | float] = {}
    for path, item in value.items():
        good_path = isinstance(path, str) and path.startswith("Vehicle.") and len(path) <= _MAX_TEXT
        if good_path and (isinstance(item, bool) or (isinstance(item, float) and math.isfinite(item))):
            out[path] = item
        else:
            expected = "expected true/false or a finite number"
            problems.append(f"signal {describe(path)[:80]}: got {describe(item)[:40]}; {expected}")
    return out


def _int(value: object, low: int, high: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _short(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 20 and value.isprintable()


def read_call_centre_cases(store: BackendStore, vin: str | None = None) -> list[CallCentreCase]:
    """Every intelligent-call case the backend stored, per vehicle in its order (the CLI's query)."""
    vins = [vin] if vin is not None else [v.vin for v in store.vehicles()]
    return [
        parse_case(record.vin, record.body, record.received)
        for v in vins
        for record in store.records(v, kind=RecordKind.ECALL.value)
        if is_case_record(record.kind, record.body)
    ]


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
