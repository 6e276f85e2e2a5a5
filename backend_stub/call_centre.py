"""The carmaker's call centre for the intelligent emergency call (6AC): answers the voice call, shows the data.

Two halves, as at a real call centre:

- the voice line: a listener on the simulated telephone network (`backend_stub.voice_line`, as the PSAP
  stub): `CALL voice <callback>` first, then `CONNECTED` when an agent picks up,
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
from dataclasses import dataclass

from backend_stub.call_centre_cases import CallCentreCase, is_case_record, parse_case, read_call_centre_cases
from backend_stub.ingest import Ingest
from backend_stub.voice_line import CallLine, LineCall, LineServer
from tcu.clock import Clock
from telematics_wire.records import ReceivedRecord

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
class VoiceCall(LineCall):
    """ended_by: "call_centre", "vehicle", "network"."""


class CallCentreStub(LineServer[VoiceCall]):
    name = "call centre"
    network = "the simulated telephone network"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: CallCentreBehaviour | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(host=host, port=port, clock=clock)
        self.behaviour = behaviour or CallCentreBehaviour()
        self.cases: list[CallCentreCase] = []

    def attach(self, ingest: Ingest) -> None:
        ingest.add_observer(self.on_record)

    def on_record(self, record: ReceivedRecord) -> None:
        """An ingest observer: quick, in memory only (the record itself is already in the store); it runs
        on the backend's database thread, so it only appends and sets a thread-safe wake-up."""
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

    async def wait_for_case(self, count: int = 1, *, within_s: float = 10.0) -> CallCentreCase:
        await self.wait_for(lambda: len(self.cases) >= count, within_s=within_s, what=f"case number {count}")
        return self.cases[count - 1]

    async def clear_down(self, call_id: int | None = None) -> None:
        call = self.call(call_id)
        if call.line is not None and call.ended_by is None:
            call.line.send("CLEARDOWN")
            self._end(call, "call_centre")
            await call.line.close()

    # -- the voice line ---------------------------------------------------------------------------------
    async def _take(self, line: CallLine, kind: str, callback: str | None) -> None:
        call = VoiceCall(id=len(self.calls) + 1, callback=callback, started=self._clock.now(), line=line)
        self.calls.append(call)
        self._mark(call, "ringing")
        try:
            await self._converse(call, line)
        finally:
            self._end(call, "network")

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
