"""The intelligent emergency call (6AC) as a state machine, sans-I/O: events and `now` in, commands out.

    idle → dialling → connected → idle            the call centre answered, talked, hung up
    idle → dialling → idle (FallBack)             legal-eCall vehicle: unreachable or no answer in time
    idle → dialling → waiting → dialling → ...    no legal eCall: the call centre is the only call; redial

It is a voice call to the carmaker's call centre (`VoiceDial`); the MSD and the additional data go to
the call centre as a record on the uplink (`SendData`, once per session, right after the first dial
command — see `tcu.ecall.call_centre_data` for why that channel). The rules:

- Legal-eCall vehicle (`fallback_to_112`): the call centre stands in for the 112 eCall only while it
  works (Delegated Regulation (EU) 2017/79 Annex IV). A refused dial, a call that ends before the
  answer, or no answer within `answer_timeout_s` → `HangUp` (if dialling) and `FallBack`: the service
  starts the 112 eCall for the same incident at once. Once the centre has answered it has the case
  (and the data): a later drop ends the call, the centre calls back.
- Without legal eCall: no fall-back exists, so the call centre is redialled every `redial_interval_s`
  (an unanswered attempt is hung up at `answer_timeout_s`), without limit unless `max_attempts`.
- Who may end it: as the 112 eCall — the vehicle may end a test call, a manual call before the centre
  answered; an automatic call ends only by the call centre, a drop, or `max_call_s` (T2).
- A trigger while a call runs starts nothing (reported by the service).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tcu.ecall.call_report import CallReport
from tcu.ecall.deadlines import Deadlines
from tcu.ecall.state_machine import Instant
from tcu.ecall.triggers import CallType, HangUpRequest, Trigger


class CallCentreState(StrEnum):
    IDLE = "idle"
    DIALLING = "dialling"  # ringing at the call centre, the answer timer runs
    WAITING = "waiting"  # no legal eCall: waiting to redial the call centre
    CONNECTED = "connected"  # the call centre answered: voice


@dataclass(frozen=True, slots=True, kw_only=True)
class Answered:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Unreachable:
    """The dial was refused, or the call ended (NO CARRIER, BUSY, a modem reset)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    pass


Event = Trigger | Answered | Unreachable | Tick | HangUpRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class VoiceDial:
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendData:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class HangUp:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FallBack:
    """Start the 112 eCall for this incident now."""

    reason: str


class Report(CallReport[CallCentreState]):
    """A transition (`event == "transition"`) or a notice of the call to the call centre."""

    __slots__ = ()


Output = VoiceDial | SendData | HangUp | FallBack | Report


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCentreTimers:
    answer_timeout_s: float = 20.0
    redial_interval_s: float = 30.0
    max_call_s: float = 3600.0  # T2: the only clearing the vehicle does on its own
    max_attempts: int | None = None  # without legal eCall; None: no limit


@dataclass(slots=True)
class _Session:
    number: int
    call_type: CallType
    started: datetime
    attempts: int = 0


class CallCentreCall:
    def __init__(self, timers: CallCentreTimers, *, fallback_to_112: bool) -> None:
        self.timers = timers
        self.fallback_to_112 = fallback_to_112
        self._state = CallCentreState.IDLE
        self._session: _Session | None = None
        self._sessions = 0
        self._deadlines = Deadlines()
        self._out: list[Output] = []
        self._now = Instant(0.0, datetime.min)

    @property
    def state(self) -> CallCentreState:
        return self._state

    @property
    def active(self) -> bool:
        return self._state is not CallCentreState.IDLE

    @property
    def call_type(self) -> CallType | None:
        return None if self._session is None else self._session.call_type

    def next_deadline(self) -> float | None:
        return self._deadlines.next_due()

    def handle(self, event: Event, now: Instant) -> list[Output]:
        self._out = []
        self._now = now
        if isinstance(event, Trigger):
            self._start(event)
        elif self._session is None:
            pass  # news about no call of ours (a 112 eCall, a callback): not ours to judge
        elif isinstance(event, Tick):
            for name in self._deadlines.expire(now.mono):
                self._expired(name)
        elif isinstance(event, Answered) and self._state is CallCentreState.DIALLING:
            self._deadlines.clear()
            self._deadlines["T2"] = now.mono + self.timers.max_call_s
            self._go(CallCentreState.CONNECTED, "the call centre answered")
        elif isinstance(event, Unreachable) and self._state is CallCentreState.DIALLING:
            self._failed(event.reason, hang_up=False)
        elif isinstance(event, Unreachable) and self._state is CallCentreState.CONNECTED:
            self._end(f"{event.reason}; the call centre has the case and calls back")
        elif isinstance(event, HangUpRequest):
            self._hang_up_request(event)
        return self._out

    def _start(self, trigger: Trigger) -> None:
        session = self._session
        if session is not None and session.call_type is CallType.TEST and trigger.call_type is not CallType.TEST:
            if self._state is not CallCentreState.WAITING:
                self._out.append(HangUp(reason="test call pre-empted by an emergency"))
            self._report("test_call_preempted", self._state, f"{trigger.reason}: the test call gives way")
            self._session = None
            self._deadlines.clear()
        elif session is not None:
            what = f"{trigger.call_type.value} trigger ({trigger.reason})"
            self._report("trigger_ignored", self._state, f"{what} ignored: the call centre call is {self._state.value}")
            return
        self._sessions += 1
        self._session = _Session(number=self._sessions, call_type=trigger.call_type, started=self._now.wall)
        self._dial(trigger.reason)
        self._out.append(SendData())

    def _dial(self, reason: str) -> None:
        session = self._require()
        session.attempts += 1
        self._go(CallCentreState.DIALLING, f"{reason}: dialling the call centre", attempt=session.attempts)
        self._out.append(VoiceDial(attempt=session.attempts))
        self._deadlines["answer"] = self._now.mono + self.timers.answer_timeout_s

    def _expired(self, name: str) -> None:
        if name == "answer":
            self._failed(f"the call centre did not answer within {self.timers.answer_timeout_s:g} s", hang_up=True)
        elif name == "redial":
            self._dial("redial")
        elif name == "T2":
            self._out.append(HangUp(reason=f"T2: call up for {self.timers.max_call_s:g} s"))
            self._end(f"T2: cleared after {self.timers.max_call_s:g} s")

    def _failed(self, reason: str, *, hang_up: bool) -> None:
        self._deadlines.pop("answer", None)
        if hang_up:
            self._out.append(HangUp(reason=reason))
        session = self._require()
        if self.fallback_to_112:
            self._end(f"{reason}; falling back to the 112 eCall")
            self._out.append(FallBack(reason=f"intelligent emergency call failed: {reason}"))
            return
        limit = self.timers.max_attempts
        if limit is not None and session.attempts >= limit:
            self._end(f"{reason}; gave up after {session.attempts} attempts (limit {limit})")
            return
        self._go(CallCentreState.WAITING, reason, redial_in_s=self.timers.redial_interval_s)
        self._deadlines["redial"] = self._now.mono + self.timers.redial_interval_s

    def _hang_up_request(self, event: HangUpRequest) -> None:
        session = self._require()
        unanswered = self._state is not CallCentreState.CONNECTED
        if not (session.call_type is CallType.TEST or (session.call_type is CallType.MANUAL and unanswered)):
            why = f"a {session.call_type.value} call ends only by the call centre or T2"
            self._report("hangup_refused", self._state, f"hang-up refused ({event.reason}): {why}")
            return
        if self._state is not CallCentreState.WAITING:
            self._out.append(HangUp(reason=event.reason))
        self._end(f"ended in the vehicle: {event.reason}")

    def _end(self, reason: str) -> None:
        self._deadlines.clear()
        self._go(CallCentreState.IDLE, reason)
        self._session = None

    def _require(self) -> _Session:
        assert self._session is not None, "no call centre session"  # every caller runs inside one
        return self._session

    def _go(self, to: CallCentreState, reason: str, **details: str | int | float | bool) -> None:
        previous = self._state
        self._state = to
        self._report("transition", previous, reason, **details)

    def _report(self, event: str, previous: CallCentreState, reason: str, **details: str | int | float | bool) -> None:
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
