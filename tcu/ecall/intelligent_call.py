"""The intelligent emergency call (6AC) on the modem: the `CallCentreCall` machine, its data, its fall-back.

    call = IntelligentCall(config, state=..., clock=..., capture=..., modem=..., deliver=..., fall_back=...,
                           announce=...)
    await call.start(detected, incident)      # dial the call centre, then hand the data over
    await call.on_modem(event)                # True when the event was about this call
    call.next_deadline(); await call.tick()   # the answer timer, redial spacing, T2

`EcallService` owns it: it decides (tcu.ecall.call_route) that a trigger goes to the call centre, feeds
it the modem events while the call runs, and starts the 112 eCall when it says `FallBack`. The order of
work in each step is the eCall's: the reports are noted (logged, and handed to `deliver`, which only
collects them for after the engine's step), then the modem commands and the fall-back, then the data
record (building it encodes an MSD); nothing handed to `deliver` can hold up or touch the call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from tcu.clock import Clock
from tcu.ecall.call_centre_call import (
    Answered,
    CallCentreCall,
    CallCentreTimers,
    FallBack,
    HangUp,
    Report,
    SendData,
    Tick,
    Unreachable,
    VoiceDial,
)
from tcu.ecall.call_centre_call import Event as CallCentreEvent
from tcu.ecall.call_centre_data import belted_seats, call_centre_record
from tcu.ecall.config import EcallConfig
from tcu.ecall.incident import Incident, IncidentCapture
from tcu.ecall.state_machine import Instant
from tcu.ecall.triggers import CallType, DetectedTrigger, HangUpRequest
from tcu.errors import DeviceGoneError, DeviceTimeoutError, ModemCommandError
from tcu.sources.modem import CallStatus
from tcu.sources.modem_client import ModemCallEnded, ModemCallStatus, ModemEvent, ModemRing
from tcu.vehicle.state import VehicleState
from telematics_wire.records import Record, RecordKind

_LOGGER = logging.getLogger(__name__)
_MODEM_ERRORS = (ModemCommandError, DeviceTimeoutError, DeviceGoneError)
FallBackStarter = Callable[[DetectedTrigger, Incident, str], Awaitable[None]]


class VoiceModem(Protocol):
    async def voice_dial(self, number: str) -> None: ...
    async def hang_up(self) -> None: ...


class IntelligentCall:
    def __init__(
        self,
        config: EcallConfig,
        *,
        state: VehicleState,
        clock: Clock,
        capture: IncidentCapture,
        modem: VoiceModem,
        deliver: Callable[[Record], None],
        fall_back: FallBackStarter,
        announce: Callable[[], None],
    ) -> None:
        timers = CallCentreTimers(
            answer_timeout_s=config.call_centre_answer_s,
            redial_interval_s=config.timers.redial_interval_s,
            max_call_s=config.timers.t2_s,
            max_attempts=config.timers.max_dial_attempts,
        )
        self.machine = CallCentreCall(timers, fallback_to_112=config.legal_ecall)
        self._config = config
        self._state = state
        self._clock = clock
        self._capture = capture
        self._modem = modem
        self._deliver = deliver
        self._fall_back = fall_back
        self._announce = announce
        self._detected: DetectedTrigger | None = None
        self._incident: Incident | None = None
        self._session = 0

    @property
    def active(self) -> bool:
        return self.machine.active

    def next_deadline(self) -> float | None:
        return self.machine.next_deadline()

    async def start(self, detected: DetectedTrigger, incident: Incident) -> None:
        running = self.machine.call_type
        if running is None or (running is CallType.TEST and detected.trigger.call_type is not CallType.TEST):
            # a new session (an emergency pre-empts a test)
            self._detected = detected
            self._incident = incident
        await self._step(detected.trigger)

    async def tick(self) -> None:
        if (deadline := self.machine.next_deadline()) is not None and deadline <= self._clock.monotonic():
            await self._step(Tick())

    async def request_hang_up(self, request: HangUpRequest) -> None:
        await self._step(request)

    async def on_modem(self, event: ModemEvent) -> bool:
        """Feed a modem event about our call; False (not consumed) when no call centre call runs."""
        if not self.machine.active:
            return False
        if isinstance(event, ModemCallStatus) and event.status is CallStatus.ACTIVE:
            await self._step(Answered())
        elif isinstance(event, ModemCallStatus) and event.status is CallStatus.DISCONNECTED:
            await self._step(Unreachable(reason="the call was disconnected"))
        elif isinstance(event, ModemCallEnded):
            await self._step(Unreachable(reason=event.reason))
        else:
            return isinstance(event, ModemCallStatus | ModemRing)  # no 112 eCall runs to take a RING
        return True

    # -- one step: the machine, then its outputs in the eCall's order ----------------------------------------
    async def _step(self, event: CallCentreEvent) -> None:
        outputs = self.machine.handle(event, Instant.of(self._clock))
        for output in outputs:
            if isinstance(output, Report):
                if output.event == "transition" and output.from_state.value == "idle":
                    self._session = output.session
                self._note(output)  # before the commands: a nested step's reports then follow this one's
        self._announce()
        for output in outputs:
            if isinstance(output, HangUp):
                await self._hang_up(output.reason)
            elif isinstance(output, VoiceDial):
                await self._dial(output.attempt)
            elif isinstance(output, FallBack) and self._detected and self._incident:
                await self._fall_back(self._detected, self._incident, output.reason)
        if any(isinstance(output, SendData) for output in outputs):
            self._send_data()

    async def _dial(self, attempt: int) -> None:
        number = self._config.call_centre_number
        try:
            try:
                await self._modem.voice_dial(number)
            except ModemCommandError as exc:
                if exc.code != 3:
                    raise
                _LOGGER.warning("modem refuses to dial (%s): hanging up its orphan call and dialling again", exc)
                await self._modem.hang_up()
                await self._modem.voice_dial(number)
        except _MODEM_ERRORS as exc:
            await self._step(Unreachable(reason=f"dial {attempt} to {number} refused: {exc}"))

    async def _hang_up(self, reason: str) -> None:
        try:
            await self._modem.hang_up()
        except _MODEM_ERRORS as exc:
            _LOGGER.warning("call centre hang-up (%s) failed: %s", reason, exc)

    def _send_data(self) -> None:
        detected, incident = self._detected, self._incident
        if detected is None or incident is None:
            return
        try:
            belts = belted_seats(self._state)
            incident, msd = self._capture.msd(incident, 1, number_of_passengers=None if belts is None else belts[0])
            record = call_centre_record(
                config=self._config,
                session=self._session,
                detected=detected,
                incident=incident,
                msd=msd,
                state=self._state,
                fallback_to_112=self.machine.fallback_to_112,
            )
        except Exception:  # the voice call is up or on its way; data we cannot build must not end it
            _LOGGER.exception("intelligent emergency call: the call centre data could not be built")
            return
        self._hand_over(record)

    def _note(self, report: Report) -> None:
        log = _LOGGER.info if report.event == "transition" and report.to_state.value != "idle" else _LOGGER.warning
        states = f"{report.from_state.value} → {report.to_state.value}"
        call = f"intelligent call {report.session} ({report.call_type.value})"
        log("%s %s: %s: %s", call, report.event, states, report.reason)
        body = report.body() | {"event": f"call_centre_{report.event}", "call": "call_centre"}
        self._hand_over(Record(kind=RecordKind.ECALL, created=report.at, body=body))

    def _hand_over(self, record: Record) -> None:
        try:
            self._deliver(record)
        except Exception:  # the backend report is an afterthought; the call is not
            _LOGGER.exception("intelligent emergency call record could not be queued")
