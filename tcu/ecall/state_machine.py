"""The eCall call state machine after EN 16072 / EN 16062, sans-I/O: events and `now` in, commands out.

    idle → triggered → dialling → call_established → msd_sent → msd_acknowledged → voice
         → cleared → callback_window → idle

`handle(event, now)` returns modem commands and a `Report` per transition or notable non-transition;
`next_deadline()` says when to feed `Occurrence.TICK`. The rules (FIELD-NOTES "eCall facts"):

- `triggered` = session open, not in a call. Before the first connection attempts are unlimited (unless
  `max_dial_attempts`, ERA-GLONASS), `redial_interval_s` apart; coverage coming back dials at once.
- A call dropped before the MSD was delivered (LL-ACK or AL-ACK) is redialled at once, then every
  `drop_redial_interval_s`; missing the 120 s window is reported, and redialling goes on at the normal
  spacing. After delivery: never a redial; the `callback_window` (T9) waits for the PSAP's callback.
- The PSAP may ask for the MSD again in any call; each transmission takes the next `messageIdentifier`.
- Only the PSAP (AL-ACK clear-down, hang-up) or T2 ends an automatic or connected manual eCall. The
  vehicle may end a test call; an emergency pre-empts a test call; a second trigger starts nothing.
- T5 (no SEND MSD), T7 (no LL-ACK) and T6 (no AL-ACK) fall back to voice; the MSD stays on request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tcu.clock import Clock
from tcu.ecall.call_report import CallReport
from tcu.ecall.config import EcallTimers
from tcu.ecall.deadlines import Deadlines
from tcu.ecall.triggers import CallType, HangUpRequest, Trigger


class EcallState(StrEnum):
    IDLE = "idle"
    TRIGGERED = "triggered"
    DIALLING = "dialling"
    CALL_ESTABLISHED = "call_established"  # connected, waiting for the PSAP's SEND MSD (T5)
    MSD_SENT = "msd_sent"  # waiting for LL-ACK (T7), then AL-ACK (T6)
    MSD_ACKNOWLEDGED = "msd_acknowledged"
    VOICE = "voice"
    CLEARED = "cleared"
    CALLBACK_WINDOW = "callback_window"


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment on both clocks: monotonic seconds drive timers, wall time stamps reports."""

    mono: float
    wall: datetime

    @classmethod
    def of(cls, clock: Clock) -> Instant:
        return cls(clock.monotonic(), clock.now())


class Occurrence(StrEnum):
    """Input events that carry nothing but their name (the others: `Trigger`, `DialFailed`, ... below)."""

    CALL_CONNECTED = "call_connected"
    MSD_REQUESTED = "msd_requested"  # the PSAP's SEND MSD
    MSD_TRANSMITTED = "msd_transmitted"  # link-layer ACK: the PSAP's modem has the MSD
    CLEAR_DOWN = "clear_down"  # the PSAP ended the call on purpose
    INCOMING_CALL = "incoming_call"
    NETWORK_AVAILABLE = "network_available"  # registered (again)
    TICK = "tick"  # look at the timers


@dataclass(frozen=True, slots=True, kw_only=True)
class DialFailed:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallDropped:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MsdFailed:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlAck:
    clear_down: bool = False


# Until the PSAP has acknowledged the MSD (AL-ACK), or the call went to voice without it, nothing else may
# use the radio: an uplink burst could delay the dial or disturb the in-band modem.
RADIO_HOLDING_STATES = frozenset(
    {EcallState.TRIGGERED, EcallState.DIALLING, EcallState.CALL_ESTABLISHED, EcallState.MSD_SENT}
)


Event = Occurrence | Trigger | DialFailed | CallDropped | MsdFailed | AlAck | HangUpRequest


# -- outputs: commands for the modem, and reports ------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Dial:
    call_type: CallType
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendMsd:
    message_identifier: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class HangUp:
    reason: str


class Report(CallReport[EcallState]):
    """A transition (`event == "transition"`) or a notice of the 112 eCall."""

    __slots__ = ()


Output = Dial | SendMsd | Answer | HangUp | Report


@dataclass(slots=True)
class Session:
    number: int
    call_type: CallType
    started: datetime
    attempts: int = 0
    last_dial: float | None = None
    connected_once: bool = False
    msd_delivered: bool = False
    message_identifier: int = 0
    dropped_at: float | None = None
    in_callback: bool = False


class EcallStateMachine:
    def __init__(self, timers: EcallTimers | None = None) -> None:
        self.timers = timers or EcallTimers()
        self._state = EcallState.IDLE
        self._session: Session | None = None
        self._sessions = 0
        self._deadlines = Deadlines()
        self._out: list[Output] = []
        self._now = Instant(0.0, datetime.min)

    @property
    def state(self) -> EcallState:
        return self._state

    @property
    def active(self) -> bool:
        """A session that pre-empts everything else is under way (outside idle and the callback wait)."""
        return self._state not in (EcallState.IDLE, EcallState.CALLBACK_WINDOW)

    @property
    def holds_the_radio(self) -> bool:
        """Telematics keeps off the radio: a session is under way and the PSAP has not acknowledged the MSD."""
        return self._state in RADIO_HOLDING_STATES

    @property
    def session(self) -> Session | None:
        """The session under way or in its callback window (read it, do not change it)."""
        return self._session

    def next_deadline(self) -> float | None:
        """Monotonic time of the next timer, None when no timer runs."""
        return self._deadlines.next_due()

    def handle(self, event: Event, now: Instant) -> list[Output]:
        self._out = []
        self._now = now
        if isinstance(event, Trigger):
            self._trigger(event)
        elif event is Occurrence.TICK:
            self._tick()
        elif isinstance(event, HangUpRequest):
            self._hang_up_request(event)
        elif self._session is not None:
            self._dispatch(event, self._session)
        return self._out

    # -- dispatch ---------------------------------------------------------------------------------------
    def _dispatch(self, event: Event, session: Session) -> None:
        state = self._state
        if state in (EcallState.TRIGGERED, EcallState.DIALLING, EcallState.CALLBACK_WINDOW):
            handled = self._outside_call(event, session)
        else:
            handled = state in (EcallState.CALL_ESTABLISHED, EcallState.MSD_SENT, EcallState.VOICE)
            handled = handled and self._in_call(event, session)
        quiet = event in (Occurrence.NETWORK_AVAILABLE, Occurrence.INCOMING_CALL)  # routine news, not reported
        if not handled and not (quiet or isinstance(event, DialFailed | CallDropped)):
            name = event.value if isinstance(event, Occurrence) else type(event).__name__
            self._notice("unexpected", f"{name} ignored in state {state.value}")

    def _outside_call(self, event: Event, session: Session) -> bool:
        state = self._state
        if event is Occurrence.NETWORK_AVAILABLE and state is EcallState.TRIGGERED:
            # Coverage is back: dial now rather than at the end of the spacing, but never in a burst.
            now = self._now.mono
            due = now if session.last_dial is None else max(now, session.last_dial + self.timers.redial_min_gap_s)
            if due <= now:
                self._dial()
            elif due < self._deadlines.get("redial", float("inf")):
                self._deadlines["redial"] = due
        elif isinstance(event, DialFailed | CallDropped) and state is EcallState.DIALLING:
            self._redial_later(event.reason)
        elif event is Occurrence.CALL_CONNECTED and state is EcallState.DIALLING:
            again = session.dropped_at is not None
            self._connected(session)
            self._go(EcallState.CALL_ESTABLISHED, "call re-established" if again else "PSAP answered")
            self._deadlines["T5"] = self._now.mono + self.timers.t5_s
        elif event is Occurrence.INCOMING_CALL and state is not EcallState.DIALLING:
            # The PSAP calling while the vehicle waits (to redial, or for the callback): answer, always.
            self._out.append(Answer())
            session.in_callback = state is EcallState.CALLBACK_WINDOW
            self._connected(session)
            self._go(EcallState.VOICE, "PSAP callback answered automatically")
        else:
            return False
        return True

    def _in_call(self, event: Event, session: Session) -> bool:
        state = self._state
        if event is Occurrence.MSD_REQUESTED:
            again = session.message_identifier > 0
            self._send_msd("PSAP requested the MSD again" if again else "PSAP requested the MSD (SEND MSD)")
        elif event is Occurrence.MSD_TRANSMITTED and state is not EcallState.CALL_ESTABLISHED:
            session.msd_delivered = True  # also when late, after T7 gave up: delivered rules out a redial
            if state is EcallState.MSD_SENT:
                self._deadlines.pop("T7", None)
                self._deadlines["T6"] = self._now.mono + self.timers.t6_s
            self._notice("ll_ack", f"LL-ACK: the PSAP's modem received MSD {session.message_identifier}")
        elif isinstance(event, AlAck) and state is not EcallState.CALL_ESTABLISHED:
            session.msd_delivered = True
            self._go(EcallState.MSD_ACKNOWLEDGED, f"AL-ACK {'clear-down' if event.clear_down else 'positive'}")
            if event.clear_down:
                self._out.append(HangUp(reason="PSAP clear-down (AL-ACK)"))
                self._cleared("PSAP cleared down with the AL-ACK")
            else:
                self._go(EcallState.VOICE, f"voice after the AL-ACK for MSD {session.message_identifier}")
        elif isinstance(event, MsdFailed) and state is EcallState.MSD_SENT:
            self._go(EcallState.VOICE, f"MSD transmission failed ({event.reason}); voice, MSD still on request")
        elif event is Occurrence.CLEAR_DOWN:
            self._cleared("PSAP cleared down")
        elif isinstance(event, CallDropped):
            self._dropped(event.reason)
        else:
            return False
        return True

    def _connected(self, session: Session) -> None:
        session.connected_once = True
        session.dropped_at = None
        self._deadlines.pop("redial_window", None)
        self._deadlines["T2"] = self._now.mono + self.timers.t2_s

    def _tick(self) -> None:
        for name in self._deadlines.expire(self._now.mono):
            self._expired(name)

    def _expired(self, name: str) -> None:
        timers = self.timers
        if name == "redial":
            self._dial()
        elif name == "dial":
            self._out.append(HangUp(reason=f"not connected within {timers.dial_timeout_s:g} s"))
            self._redial_later(f"dial attempt not connected within {timers.dial_timeout_s:g} s")
        elif name in _TO_VOICE:  # the MSD phase gives up waiting; the call goes on, the MSD stays on request
            self._go(EcallState.VOICE, _TO_VOICE[name].format(timers=timers))
        elif name == "T2":
            self._out.append(HangUp(reason=f"T2 fallback: call up for {timers.t2_s:g} s"))
            self._cleared(f"T2: clear-down fallback after {timers.t2_s:g} s")
        elif name == "redial_window":
            gone = f"not re-established {timers.drop_redial_window_s:g} s after the drop"
            self._notice("redial_window_exceeded", f"{gone}; trying every {timers.redial_interval_s:g} s")
        elif name == "T9":
            self._go(EcallState.IDLE, f"T9: callback window of {timers.t9_s:g} s over")
            self._session = None

    # -- the rules --------------------------------------------------------------------------------------
    def _trigger(self, event: Trigger) -> None:
        session = self._session
        if session is not None and self.active:
            if session.call_type is CallType.TEST and event.call_type is not CallType.TEST:
                if self._state is not EcallState.TRIGGERED:
                    self._out.append(HangUp(reason="test call pre-empted by an emergency"))
                self._notice("test_call_preempted", f"{event.reason}: the test call gives way to the emergency")
            else:
                what = f"{event.call_type.value} trigger ({event.reason})"
                self._notice("trigger_ignored", f"{what} ignored: session {session.number} is {self._state.value}")
                return
        self._sessions += 1
        self._session = Session(number=self._sessions, call_type=event.call_type, started=self._now.wall)
        self._deadlines.clear()
        self._go(EcallState.TRIGGERED, event.reason)
        self._dial()

    def _dial(self) -> None:
        session = self._require()
        limit = self.timers.max_dial_attempts
        if limit is not None and session.attempts >= limit and not session.connected_once:
            self._cleared(f"gave up after {session.attempts} dial attempts (limit {limit})")
            return
        session.attempts += 1
        session.last_dial = self._now.mono
        self._deadlines.pop("redial", None)
        self._go(EcallState.DIALLING, f"dial attempt {session.attempts}", attempt=session.attempts)
        self._out.append(Dial(call_type=session.call_type, attempt=session.attempts))
        self._deadlines["dial"] = self._now.mono + self.timers.dial_timeout_s

    def _redial_later(self, reason: str) -> None:
        session = self._require()
        timers = self.timers
        in_window = session.dropped_at is not None and "redial_window" in self._deadlines
        delay = timers.drop_redial_interval_s if in_window else timers.redial_interval_s
        self._go(EcallState.TRIGGERED, reason, redial_in_s=delay)
        self._deadlines["redial"] = self._now.mono + delay

    def _dropped(self, reason: str) -> None:
        session = self._require()
        if session.in_callback:
            self._cleared(f"{reason}; callback call ended")
        elif session.msd_delivered:
            self._cleared(f"{reason}; MSD delivered, so no redial: the PSAP calls back")
        else:
            if session.dropped_at is None:
                session.dropped_at = self._now.mono
                self._deadlines["redial_window"] = self._now.mono + self.timers.drop_redial_window_s
            self._deadlines.pop("T2", None)
            self._go(EcallState.TRIGGERED, f"{reason}; MSD not delivered: re-establishing the call")
            self._dial()

    def _send_msd(self, reason: str) -> None:
        session = self._require()
        session.message_identifier = min(255, session.message_identifier + 1)
        self._go(EcallState.MSD_SENT, reason, message_identifier=session.message_identifier)
        for name in ("T5", "T6"):
            self._deadlines.pop(name, None)
        self._deadlines["T7"] = self._now.mono + self.timers.t7_s  # restarted by every retransmission
        self._out.append(SendMsd(message_identifier=session.message_identifier))

    def _cleared(self, reason: str) -> None:
        self._go(EcallState.CLEARED, reason)
        self._require().in_callback = False
        self._deadlines.clear()
        self._go(EcallState.CALLBACK_WINDOW, f"reachable for the PSAP's callback for T9 = {self.timers.t9_s:g} s")
        self._deadlines["T9"] = self._now.mono + self.timers.t9_s

    def _hang_up_request(self, event: HangUpRequest) -> None:
        session = self._session
        if session is None or not self.active:
            return
        unconnected = self._state in (EcallState.TRIGGERED, EcallState.DIALLING)
        if not (session.call_type is CallType.TEST or (session.call_type is CallType.MANUAL and unconnected)):
            why = f"a {session.call_type.value} eCall ends only by the PSAP or T2"
            self._notice("hangup_refused", f"hang-up refused ({event.reason}): {why}")
            return
        if self._state is not EcallState.TRIGGERED:
            self._out.append(HangUp(reason=event.reason))
        self._go(EcallState.CLEARED, f"ended in the vehicle: {event.reason}")
        self._deadlines.clear()
        self._go(EcallState.IDLE, "no callback expected")
        self._session = None

    # -- bookkeeping ------------------------------------------------------------------------------------
    def _require(self) -> Session:
        assert self._session is not None, "no eCall session"  # every caller runs inside a session
        return self._session

    def _go(self, to: EcallState, reason: str, **details: str | int | float | bool) -> None:
        previous = self._state
        self._state = to
        if to is not previous:
            for name in _STATE_TIMERS.get(previous, ()):
                self._deadlines.pop(name, None)
        self._report("transition", previous, reason, **details)

    def _notice(self, event: str, reason: str) -> None:
        self._report(event, self._state, reason)

    def _report(self, event: str, previous: EcallState, reason: str, **details: str | int | float | bool) -> None:
        report = Report.about(
            self._require(),
            event=event,
            from_state=previous,
            to_state=self._state,
            reason=reason,
            at=self._now.wall,
            details=details,
        )
        self._out.append(report)


_TO_VOICE = {
    "T5": "T5: no SEND MSD within {timers.t5_s:g} s; voice",
    "T7": "T7: MSD not acknowledged within {timers.t7_s:g} s; voice",
    "T6": "T6: no AL-ACK within {timers.t6_s:g} s of the LL-ACK; voice",
}
_STATE_TIMERS: Mapping[EcallState, tuple[str, ...]] = {  # timers that end when their state is left
    EcallState.TRIGGERED: ("redial",),
    EcallState.DIALLING: ("dial",),
    EcallState.CALL_ESTABLISHED: ("T5",),
    EcallState.MSD_SENT: ("T6", "T7"),
    EcallState.CALLBACK_WINDOW: ("T9",),
}
