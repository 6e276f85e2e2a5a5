"""The eCall service: triggers, the call state machine, the modem and the MSD, under the app's TaskGroup.

    ecall = EcallService(config.ecall, vin=config.vin, state=agent.state, clock=clock,
                         track=gnss_reader.track, sim=sim)
    tasks.create_task(ecall.run(), name="ecall")
    ecall.reports           # EcallReports: records for the backend, drained by telematics
    ecall.active            # asyncio.Event, set while an eCall pre-empts everything else
    ecall.radio_free        # asyncio.Event, cleared while the 112 eCall holds the radio (before the AL-ACK)
    ecall.subscribe(fn)     # fn(EcallActivity): started / ended, e.g. a remote-measure engine rolls back

It needs only the vehicle picture, the modem and the clock: no telematics service, consent, payment or
MQTT session is on its path, and it never waits on a disk or a telematics listener. Each step of the
engine runs the machine's modem commands first; the step's reports then go to `reports` (a bounded queue
that drops its oldest report when telematics does not keep up, `tcu.ecall.reports`) and its activity to
the listeners, scheduled on the loop after the step (`tcu.ecall.activity`).

Which call a trigger makes is `tcu.ecall.call_route.route_call` (legal eCall, SIM, 6AC, trigger): the
112 eCall below, the intelligent emergency call to the carmaker's call centre (`IntelligentCall`, which
falls back to the 112 eCall on a legal-eCall vehicle), or none. Whether 6AC runs is asked of
`intelligent_call_available` at the trigger; it is only ever read, and failing or missing it means "no
intelligent call" — the 112 path never depends on it.

One engine coroutine owns the state machine; triggers (VehicleState notifications), modem events,
requests and SIM changes arrive on one queue, timers are the machine's deadlines on the injected clock
(`wake()` after moving a ManualClock). Commands run in order; a failed one becomes the matching event
(a refused dial is `DialFailed`: "no network at trigger time" means redialling until coverage returns).

The MSD: VIN from the configuration; incident time and position captured at the trigger
(`tcu.ecall.incident`: trusted only when fresh and accurate; no position never stops the call).

SIM: in eCall-only mode (`telematics_deactivated`) the modem is kept dormant (`AT+COPS=2`), registered
at the trigger and kept registered until the callback window (T9) is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol

from tcu.clock import Clock
from tcu.ecall.activity import ActivityAnnouncer, ActivityListener, EcallActivity
from tcu.ecall.call_route import CallRoute, route_call
from tcu.ecall.config import EcallConfig, check_ecall_vin
from tcu.ecall.incident import Incident, IncidentCapture
from tcu.ecall.intelligent_call import IntelligentCall
from tcu.ecall.ng.dual_modem import TransportModem
from tcu.ecall.ng.ng_call import CarriesMsd, NgMsd
from tcu.ecall.ng.ng_modem import NgEcallModem
from tcu.ecall.ng.transport import EcallTransport
from tcu.ecall.reports import EcallReports
from tcu.ecall.state_machine import (
    AlAck,
    Answer,
    CallDropped,
    Dial,
    DialFailed,
    EcallState,
    EcallStateMachine,
    Event,
    HangUp,
    Instant,
    MsdFailed,
    Occurrence,
    Output,
    Report,
    SendMsd,
)
from tcu.ecall.triggers import CallType, DetectedTrigger, HangUpRequest, Trigger, TriggerDetector
from tcu.errors import ConfigError, DeviceGoneError, DeviceTimeoutError, ModemCommandError
from tcu.services.sim import Sim, SimPolicy, registration_wanted
from tcu.sources.modem import CallStatus, EcallIndication, EcallType
from tcu.sources.modem_client import (
    ModemCallEnded,
    ModemCallStatus,
    ModemClient,
    ModemClientConfig,
    ModemEvent,
    ModemIndication,
    ModemRing,
    ModemStatus,
)
from tcu.sources.nmea_track import GnssTrack
from tcu.vehicle.state import Signal, VehicleState
from telematics_wire.errors import MsdError, SipError
from telematics_wire.records import Record, RecordKind, to_millis
from telematics_wire.sim_state import SimState
from telematics_wire.sip.pidf_lo import Location

_LOGGER = logging.getLogger(__name__)
_INDICATION_EVENT: dict[EcallIndication, Event] = {
    EcallIndication.CONNECTED: Occurrence.CALL_CONNECTED,
    EcallIndication.SEND_MSD: Occurrence.MSD_REQUESTED,
    EcallIndication.LL_ACK: Occurrence.MSD_TRANSMITTED,
    EcallIndication.AL_ACK: AlAck(),
    EcallIndication.AL_ACK_CLEAR_DOWN: AlAck(clear_down=True),
    EcallIndication.CLEARED_DOWN: Occurrence.CLEAR_DOWN,
    EcallIndication.MSD_FAILED: MsdFailed(reason="the modem gave up the in-band transmission"),
}
_CALL_ENDING = frozenset({EcallIndication.CLEARED_DOWN, EcallIndication.AL_ACK_CLEAR_DOWN})
_MODEM_ERRORS = (ModemCommandError, DeviceTimeoutError, DeviceGoneError)


class EcallModem(Protocol):
    """What the service needs from a modem; `ModemClient` is the real one."""

    @property
    def calls(self) -> int:
        """Calls the modem accepted so far; its events carry the count when they were read."""
        ...

    async def run(self) -> NoReturn: ...
    async def dial(self, ecall_type: EcallType) -> None: ...
    async def voice_dial(self, number: str) -> None: ...
    async def send_msd(self, msd: bytes) -> None: ...
    async def answer(self) -> None: ...
    async def hang_up(self) -> None: ...
    async def set_registration(self, registered: bool) -> None: ...


ModemFactory = Callable[[Callable[[ModemEvent], None]], EcallModem]
# What the engine's queue carries; None: a timer may be due; CallType.TEST: a test call was asked for.
_Item = DetectedTrigger | ModemEvent | HangUpRequest | SimState | CallType | None


class EcallService:
    def __init__(
        self,
        config: EcallConfig,
        *,
        vin: str,
        state: VehicleState,
        clock: Clock,
        track: GnssTrack | None = None,
        sim: Sim | None = None,
        modem: ModemFactory | None = None,
        reports: EcallReports | None = None,
        intelligent_call_available: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.vin = check_ecall_vin(vin)  # an MSD without a valid VIN is no MSD: refuse to start
        self.sim = sim or Sim(SimPolicy(legal_ecall=config.legal_ecall))
        if config.legal_ecall and not self.sim.policy.legal_ecall:
            raise ConfigError("ecall.legal_ecall is true but the SIM policy was built for a vehicle without it")
        self.reports = reports or EcallReports()
        self.active = asyncio.Event()
        self.radio_free = asyncio.Event()
        self.radio_free.set()
        self._state = state
        self._clock = clock
        self._intelligent_available = intelligent_call_available or (lambda: False)
        self._capture = IncidentCapture(config, vin=self.vin, state=state, clock=clock, track=track)
        self._machine = EcallStateMachine(config.timers)
        self._detector = TriggerDetector(sos_hold_s=config.sos_hold_s, retrigger_suppress_s=config.retrigger_suppress_s)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._announcer = ActivityAnnouncer()
        self._incident: Incident | None = None
        self._session = 0
        self._registration_wanted: bool | None = None
        # What this step of the engine has to tell, told once its modem commands have run.
        self._step_records: list[Record] = []
        self._step_activity: list[EcallActivity] = []
        self.modem = (modem or self._default_modem)(self._queue.put_nowait)
        if isinstance(self.modem, CarriesMsd):  # NG eCall: the MSD rides in the INVITE (tcu.ecall.ng.ng_modem)
            self.modem.bind_service(msd=self._next_msd, report=self._report_body)
        self.intelligent = IntelligentCall(
            config,
            state=state,
            clock=clock,
            capture=self._capture,
            modem=self.modem,
            deliver=self._step_records.append,
            fall_back=self._fall_back,
            announce=self._sync_active,
        )
        self._warm_up()

    def _warm_up(self) -> None:
        """Encode a sample MSD: proves an MSD can be built with this VIN and configuration before the first
        crash needs one, else refuses to start."""
        try:
            self._capture.call_msd(None, 1, CallType.TEST)
        except MsdError as exc:
            raise ConfigError(f"ecall: cannot build an MSD with this configuration: {exc}") from exc

    def _default_modem(self, on_event: Callable[[ModemEvent], None]) -> EcallModem:
        config = self.config
        settings = ModemClientConfig(
            port=config.port,
            baudrate=config.baudrate,
            profile=config.profile,
            command_timeout_s=config.command_timeout_s,
            report_ims_emergency=config.transport is not EcallTransport.CS,
        )
        if config.transport is EcallTransport.CS:
            return ModemClient(settings, on_event=on_event)
        return TransportModem(
            on_event,
            configured=config.transport,
            cs=lambda leg_event: ModemClient(settings, on_event=leg_event),
            ng=lambda leg_event: NgEcallModem(config.ng, vin=self.vin, on_event=leg_event),
        )

    @property
    def state(self) -> EcallState:
        return self._machine.state

    def subscribe(self, listener: ActivityListener) -> Callable[[], None]:
        """Be told when an eCall starts (stop and roll back whatever you do) and ends; returns unsubscribe.
        The listener is called on the event loop after the engine's step, never inside it."""
        return self._announcer.subscribe(listener)

    def trigger_test_call(self) -> None:
        self._queue.put_nowait(CallType.TEST)

    def request_hang_up(self, reason: str) -> None:
        """An occupant asks to end the call; refused (and reported) for an automatic eCall."""
        self._queue.put_nowait(HangUpRequest(reason=reason))

    def wake(self) -> None:
        """Look at the clock again now (after moving a ManualClock)."""
        self._queue.put_nowait(None)

    async def run(self) -> NoReturn:
        unsubscribe_state = self._state.subscribe(self._on_signal)
        unsubscribe_sim = self.sim.subscribe(self._queue.put_nowait)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.modem.run(), name="ecall-modem")
                tasks.create_task(self._engine(), name="ecall-engine")
        finally:
            unsubscribe_state()
            unsubscribe_sim()
        raise AssertionError("the eCall tasks never end")

    # -- the engine ----------------------------------------------------------------------------------------
    def _on_signal(self, signal: Signal) -> None:
        detected = self._detector.on_signal(signal)
        if detected is not None:
            self._queue.put_nowait(detected)

    async def _engine(self) -> NoReturn:
        await self._apply_registration()
        while True:
            item: _Item = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_delay()):
                    item = await self._queue.get()
            try:
                await self._process(item)
            except Exception:  # a bug must never end the eCall service
                _LOGGER.exception("eCall engine failed on %r; carrying on", item)
            finally:
                self._tell_step()

    def _next_delay(self) -> float | None:
        delays = []
        machine_deadline = self._machine.next_deadline()
        if machine_deadline is not None:
            delays.append(machine_deadline - self._clock.monotonic())
        sos_deadline = self._detector.next_deadline()
        if sos_deadline is not None:
            delays.append((sos_deadline - self._clock.now()).total_seconds())
        call_centre_deadline = self.intelligent.next_deadline()
        if call_centre_deadline is not None:
            delays.append(call_centre_deadline - self._clock.monotonic())
        return max(0.0, min(delays)) if delays else None

    async def _process(self, item: _Item) -> None:
        sos = self._detector.tick(self._clock.now())
        if sos is not None:
            await self._trigger(sos)
        deadline = self._machine.next_deadline()
        if deadline is not None and deadline <= self._clock.monotonic():
            await self._feed(Occurrence.TICK)
        await self.intelligent.tick()
        if isinstance(item, ModemEvent) and self._ends_an_earlier_call(item):
            pass  # logged: never the end of the call dialled since
        elif isinstance(item, ModemEvent) and await self.intelligent.on_modem(item):
            pass  # about the call to the call centre
        elif isinstance(item, HangUpRequest) and self.intelligent.active:
            await self.intelligent.request_hang_up(item)
        elif isinstance(item, DetectedTrigger):
            await self._trigger(item)
        elif item is CallType.TEST:
            await self._trigger(self._detector.test_call(self._clock.now()))
        elif isinstance(item, HangUpRequest):
            await self._feed(item)
        elif isinstance(item, SimState):
            await self._apply_registration()
        elif isinstance(item, ModemStatus) and item.ready and item.registration.registered:
            await self._feed(Occurrence.NETWORK_AVAILABLE)
        elif isinstance(item, ModemIndication) and item.indication in _INDICATION_EVENT:
            await self._feed(_INDICATION_EVENT[item.indication])
        elif isinstance(item, ModemRing):
            await self._feed(Occurrence.INCOMING_CALL)
        elif isinstance(item, ModemCallEnded) and self._machine.active:
            await self._feed(CallDropped(reason=item.reason))
        await self._apply_registration()  # a call to the call centre may have begun or ended; no-op if unchanged

    def _ends_an_earlier_call(self, event: ModemEvent) -> bool:
        """The end of a call older than the modem's latest: read before the latest dial's or answer's OK, though
        handled after it (a crash right after a clear-down: the cleared call's NO CARRIER is still on its way
        when the new dial goes out). Taken for the new call it would fail the dial and delay it a redial
        spacing (30 s); `tcu.sources.modem_client` says why line order makes this certain."""
        if isinstance(event, ModemCallEnded):
            what = event.reason
        elif isinstance(event, ModemIndication) and event.indication in _CALL_ENDING:
            what = f"eCall indication {event.indication.value}"
        elif isinstance(event, ModemCallStatus) and event.status is CallStatus.DISCONNECTED:
            what = "call status disconnected"
        else:
            return False
        latest = self.modem.calls
        if event.call >= latest:
            return False
        _LOGGER.info("modem: %s ended call %d, not call %d placed since: ignored", what, event.call, latest)
        return True

    def _tell_step(self) -> None:
        """After a step's modem commands: its reports to the bounded queue, its activity to the listeners."""
        for record in self._step_records:
            self.reports.put(record)
        self._step_records.clear()  # in place: the intelligent call appends to this very list
        for activity in self._step_activity:
            self._announcer.schedule(activity)
        self._step_activity.clear()

    async def _trigger(self, detected: DetectedTrigger) -> None:
        call_type = detected.trigger.call_type
        route = route_call(
            legal_ecall=self.config.legal_ecall,
            sim=self.sim.state,
            intelligent_call=self._ask_intelligent(),
            call_type=call_type,
        )
        if self._machine.active or (route.route is CallRoute.ECALL_112 and not self.intelligent.active):
            await self._feed(detected.trigger, incident=self._capture.snapshot(detected.at, call_type))
        elif route.route is CallRoute.CALL_CENTRE or self.intelligent.active:
            _LOGGER.warning("emergency call: %s (%s)", route.reason, detected.trigger.reason)
            await self.intelligent.start(detected, self._capture.snapshot(detected.at, call_type))
        else:
            reason = f"{detected.trigger.reason}: {route.reason}"
            _LOGGER.error("eCall unavailable: %s", reason)
            body = {
                "event": "ecall_unavailable",
                "call_type": call_type.value,
                "reason": reason,
                "at_ms": to_millis(detected.at),
            }
            self._step_records.append(Record(kind=RecordKind.ECALL, created=detected.at, body=body))

    def _ask_intelligent(self) -> bool:
        try:
            return self._intelligent_available() is True
        except Exception:  # a telematics bug must not decide an emergency call: 112 (or none) as without 6AC
            _LOGGER.exception("cannot tell whether the intelligent emergency call runs; treating it as off")
            return False

    async def _fall_back(self, detected: DetectedTrigger, incident: Incident, reason: str) -> None:
        """The call centre failed: the 112 eCall for the same incident, at once."""
        trigger = Trigger(call_type=detected.trigger.call_type, reason=f"{detected.trigger.reason}; {reason}")
        await self._feed(trigger, incident=incident)

    async def _feed(self, event: Event, *, incident: Incident | None = None) -> None:
        outputs = self._machine.handle(event, Instant.of(self._clock))
        for output in outputs:
            if isinstance(output, Report):
                if output.session != self._session:
                    self._session = output.session
                    self._incident = incident
                self._note(output)
        self._sync_radio()
        self._sync_active()
        await self._apply_registration()
        for output in outputs:
            await self._execute(output)

    async def _execute(self, output: Output) -> None:
        if isinstance(output, Dial):
            try:
                await self._dial(EcallType[output.call_type.name])  # TEST, MANUAL, AUTOMATIC
            except _MODEM_ERRORS as exc:
                await self._feed(DialFailed(reason=f"dial refused: {exc}"))
        elif isinstance(output, SendMsd):
            try:
                await self.modem.send_msd(self._msd(output.message_identifier))
            except _MODEM_ERRORS as exc:
                await self._feed(MsdFailed(reason=str(exc)))
        elif isinstance(output, Answer):
            try:
                await self.modem.answer()
            except _MODEM_ERRORS as exc:
                await self._feed(CallDropped(reason=f"could not answer: {exc}"))
        elif isinstance(output, HangUp):
            try:
                await self.modem.hang_up()
            except _MODEM_ERRORS as exc:
                _LOGGER.warning("eCall hang-up (%s) failed: %s", output.reason, exc)

    async def _dial(self, ecall_type: EcallType) -> None:
        try:
            await self.modem.dial(ecall_type)
        except ModemCommandError as exc:
            if exc.code != 3:
                raise
            # "Operation not allowed": the modem holds a call the state machine does not know (placed while
            # the modem was mute, or left over). No eCall is established as far as the rules go: clear it.
            _LOGGER.warning("modem refuses to dial (%s): hanging up its orphan call and dialling again", exc)
            await self.modem.hang_up()
            await self.modem.dial(ecall_type)

    async def _apply_registration(self) -> None:
        """eCall-only mode: registered for the eCall and its callback window, dormant otherwise."""
        # A call to the call centre in progress keeps the modem registered too, even if the SIM goes eCall-only.
        engaged = self._machine.state is not EcallState.IDLE or self.intelligent.active
        wanted = registration_wanted(self.sim.state, ecall_engaged=engaged)
        if wanted == self._registration_wanted:
            return
        self._registration_wanted = wanted
        try:
            await self.modem.set_registration(wanted)  # remembered by the modem client even if this fails
        except _MODEM_ERRORS as exc:
            _LOGGER.warning("modem registration %s failed: %s", "on" if wanted else "off", exc)

    # -- the MSD -------------------------------------------------------------------------------------------
    def _msd(self, message_identifier: int) -> bytes:
        self._incident, msd = self._capture.call_msd(self._incident, message_identifier, self._call_type())
        return msd

    def _next_msd(self) -> NgMsd:
        """The MSD an NG dial carries in its INVITE: numbered as the machine's next transmission will be
        (tcu.ecall.ng.ng_modem says how the identifiers stay unique), with the incident's position."""
        session = self._machine.session
        identifier = min(255, (0 if session is None else session.message_identifier) + 1)
        msd = self._msd(identifier)
        incident = self._incident
        location = None
        if incident is not None and incident.fixes:
            latitude, longitude = incident.fixes[0]  # newest first
            with contextlib.suppress(SipError):  # a position PIDF-LO cannot carry: the MSD still has it
                location = Location(latitude=latitude, longitude=longitude, timestamp=incident.at)
        return NgMsd(message_identifier=identifier, msd=msd, location=location)

    def _report_body(self, body: Mapping[str, Any]) -> None:
        """A report of the NG transport (its choice, a call's SIP and RTP figures): to telematics, never waiting."""
        self.reports.put(Record(kind=RecordKind.ECALL, created=self._clock.now(), body=dict(body)))

    def _call_type(self) -> CallType:
        session = self._machine.session
        if session is None:
            return self.intelligent.machine.call_type or CallType.AUTOMATIC
        return session.call_type

    # -- what the call tells: reports, the radio hold, the activity ------------------------------------------
    def _note(self, report: Report) -> None:
        """Log a report now; its record goes to telematics after the step's modem commands."""
        routine = report.event in ("transition", "ll_ack") and report.from_state is not EcallState.IDLE
        _LOGGER.log(
            logging.INFO if routine else logging.WARNING,
            "eCall %d (%s) %s: %s → %s: %s",
            report.session,
            report.call_type.value,
            report.event,
            report.from_state.value,
            report.to_state.value,
            report.reason,
        )
        self._step_records.append(Record(kind=RecordKind.ECALL, created=report.at, body=report.body()))

    def _sync_radio(self) -> None:
        """Telematics keeps off the radio until the PSAP has the MSD (`RADIO_HOLDING_STATES`)."""
        if self._machine.holds_the_radio:
            self.radio_free.clear()
        else:
            self.radio_free.set()

    def _sync_active(self) -> None:
        """Note when an emergency call (112 or to the call centre) starts pre-empting, and when it stops."""
        started = self._machine.active or self.intelligent.active
        if started == self.active.is_set():
            return
        if started:
            self.active.set()
        else:
            self.active.clear()
        activity = EcallActivity(
            started=started,
            session=self._session,
            call_type=self._call_type(),
            state=self._machine.state,
            at=self._clock.now(),
        )
        self._step_activity.append(activity)
