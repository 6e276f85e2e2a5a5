"""The eCall state machine on an injected clock: every transition, redial rules, timers, callback, invariants."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcu.clock import ManualClock
from tcu.ecall.config import EcallTimers
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
from tcu.ecall.triggers import CallType, HangUpRequest, Trigger

S = EcallState
CRASH = Trigger(call_type=CallType.AUTOMATIC, reason="crash detected")
SOS = Trigger(call_type=CallType.MANUAL, reason="SOS button pressed")
TEST = Trigger(call_type=CallType.TEST, reason="test call requested")


class Harness:
    def __init__(self, timers: EcallTimers | None = None) -> None:
        self.clock = ManualClock(wall=datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
        self.machine = EcallStateMachine(timers)
        self.log: list[Output] = []

    def feed(self, *events: Event) -> list[Output]:
        out: list[Output] = []
        for event in events:
            out += self.machine.handle(event, Instant.of(self.clock))
        self.log += out
        return out

    def advance(self, seconds: float) -> list[Output]:
        """Move the clock, ticking at every deadline on the way (as the service's engine does)."""
        target = self.clock.mono + seconds
        out: list[Output] = []
        while (deadline := self.machine.next_deadline()) is not None and deadline <= target:
            self.clock.advance(max(0.0, deadline - self.clock.mono))
            out += self.feed(Occurrence.TICK)
        self.clock.advance(target - self.clock.mono)
        return out

    @property
    def state(self) -> EcallState:
        return self.machine.state

    def connect(self, trigger: Trigger = CRASH) -> None:
        self.feed(trigger, Occurrence.CALL_CONNECTED)

    def deliver(self, trigger: Trigger = CRASH) -> None:
        self.connect(trigger)
        self.feed(Occurrence.MSD_REQUESTED, Occurrence.MSD_TRANSMITTED, AlAck())


def moves(out: list[Output]) -> list[tuple[str, str]]:
    return [(r.from_state.value, r.to_state.value) for r in out if isinstance(r, Report) and r.event == "transition"]


def commands(out: list[Output]) -> list[Output]:
    return [o for o in out if not isinstance(o, Report)]


def notices(out: list[Output]) -> list[str]:
    return [r.event for r in out if isinstance(r, Report) and r.event != "transition"]


def test_the_whole_call_passes_every_state_and_reports_each_transition() -> None:
    h = Harness()
    out = h.feed(CRASH)
    assert moves(out) == [("idle", "triggered"), ("triggered", "dialling")]
    assert commands(out) == [Dial(call_type=CallType.AUTOMATIC, attempt=1)]
    assert moves(h.feed(Occurrence.CALL_CONNECTED)) == [("dialling", "call_established")]
    out = h.feed(Occurrence.MSD_REQUESTED)
    assert moves(out) == [("call_established", "msd_sent")]
    assert commands(out) == [SendMsd(message_identifier=1)]
    assert notices(h.feed(Occurrence.MSD_TRANSMITTED)) == ["ll_ack"]
    assert moves(h.feed(AlAck())) == [("msd_sent", "msd_acknowledged"), ("msd_acknowledged", "voice")]
    assert moves(h.feed(Occurrence.CLEAR_DOWN)) == [("voice", "cleared"), ("cleared", "callback_window")]
    assert not h.machine.active
    assert moves(h.advance(3599.0)) == []
    assert moves(h.advance(1.0)) == [("callback_window", "idle")]
    assert h.machine.next_deadline() is None

    reports = [o for o in h.log if isinstance(o, Report)]
    assert {r.session for r in reports} == {1}
    assert {r.call_type for r in reports} == {CallType.AUTOMATIC}
    assert reports[0].at == reports[0].session_started == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert reports[-1].at == datetime(2026, 11, 23, 11, 0, tzinfo=UTC), "T9 later"
    transitions = [r for r in reports if r.event == "transition"]
    for before, after in itertools.pairwise(transitions):
        assert before.to_state is after.from_state, "transitions chain without gaps"
    assert all(r.reason for r in reports)


def test_al_ack_with_clear_down_hangs_up_and_waits_for_the_callback() -> None:
    h = Harness()
    h.connect()
    h.feed(Occurrence.MSD_REQUESTED)
    out = h.feed(AlAck(clear_down=True))
    assert moves(out) == [
        ("msd_sent", "msd_acknowledged"),
        ("msd_acknowledged", "cleared"),
        ("cleared", "callback_window"),
    ]
    assert commands(out) == [HangUp(reason="PSAP clear-down (AL-ACK)")]


def test_no_attempt_limit_before_the_first_connection_and_attempts_are_30_s_apart() -> None:
    h = Harness()
    h.feed(CRASH)
    for attempt in range(2, 60):
        out = h.feed(DialFailed(reason="+CME ERROR: 30 (no network service)"))
        assert moves(out) == [("dialling", "triggered")]
        assert [r.details for r in out if isinstance(r, Report)] == [{"redial_in_s": 30.0}]
        assert commands(h.advance(29.9)) == []
        assert commands(h.advance(0.1)) == [Dial(call_type=CallType.AUTOMATIC, attempt=attempt)]
    assert h.state is S.DIALLING, "still trying after an hour without coverage"


def test_coverage_returning_dials_at_once_but_never_faster_than_the_minimum_gap() -> None:
    h = Harness()
    h.feed(CRASH, DialFailed(reason="no network"))
    out = h.feed(Occurrence.NETWORK_AVAILABLE)
    assert commands(out) == [], "the failed attempt was 0 s ago: wait for the 2 s gap"
    assert commands(h.advance(2.0)) == [Dial(call_type=CallType.AUTOMATIC, attempt=2)]
    h.feed(DialFailed(reason="no network"))
    h.advance(5.0)
    assert commands(h.feed(Occurrence.NETWORK_AVAILABLE)) == [Dial(call_type=CallType.AUTOMATIC, attempt=3)]
    assert commands(h.feed(Occurrence.NETWORK_AVAILABLE)) == [], "already dialling"


def test_an_attempt_limit_when_configured_ends_the_session_in_the_callback_window() -> None:
    h = Harness(EcallTimers(max_dial_attempts=10, redial_interval_s=30.0))  # ERA-GLONASS style
    h.feed(CRASH)
    for _ in range(9):
        h.feed(DialFailed(reason="no network"))
        h.advance(30.0)
    assert sum(isinstance(o, Dial) for o in h.log) == 10
    out = h.feed(DialFailed(reason="no network")) + h.advance(30.0)
    assert commands(out) == []
    assert h.state is S.CALLBACK_WINDOW
    assert any("gave up after 10 dial attempts" in r.reason for r in out if isinstance(r, Report))


def test_an_unanswered_attempt_is_hung_up_and_redialled() -> None:
    h = Harness()
    h.feed(CRASH)
    out = h.advance(60.0)
    assert commands(out) == [HangUp(reason="not connected within 60 s")]
    assert h.state is S.TRIGGERED
    assert commands(h.advance(30.0)) == [Dial(call_type=CallType.AUTOMATIC, attempt=2)]


def test_a_drop_before_the_msd_was_delivered_redials_at_once_then_keeps_trying() -> None:
    h = Harness()
    h.connect()
    h.feed(Occurrence.MSD_REQUESTED)
    dropped_at = h.clock.mono
    out = h.feed(CallDropped(reason="NO CARRIER"))
    assert moves(out) == [("msd_sent", "triggered"), ("triggered", "dialling")]
    assert commands(out) == [Dial(call_type=CallType.AUTOMATIC, attempt=2)]
    spacing: list[tuple[float, float]] = []
    while h.clock.mono - dropped_at < 300.0:
        out = h.feed(DialFailed(reason="no network"))
        delay = next(float(r.details["redial_in_s"]) for r in out if isinstance(r, Report))
        spacing.append((h.clock.mono - dropped_at, delay))
        assert isinstance(commands(h.advance(delay))[-1], Dial)
    assert {d for t, d in spacing if t < 120.0} == {5.0}, "inside the 120 s window: 5 s apart"
    assert {d for t, d in spacing if t >= 120.0} == {30.0}, "then the normal spacing, never giving up"
    assert notices(h.log).count("redial_window_exceeded") == 1
    out = h.feed(Occurrence.CALL_CONNECTED)
    assert any(r.reason == "call re-established" for r in out if isinstance(r, Report))
    assert commands(h.feed(Occurrence.MSD_REQUESTED)) == [SendMsd(message_identifier=2)], "the session's next id"


def test_no_redial_after_the_msd_was_delivered_and_the_callback_is_answered() -> None:
    h = Harness()
    h.connect()
    h.feed(Occurrence.MSD_REQUESTED, Occurrence.MSD_TRANSMITTED)  # LL-ACK: delivered, AL-ACK still missing
    out = h.feed(CallDropped(reason="NO CARRIER"))
    assert commands(out) == []
    assert moves(out) == [("msd_sent", "cleared"), ("cleared", "callback_window")]
    assert commands(h.advance(600.0)) == []
    out = h.feed(Occurrence.INCOMING_CALL)
    assert commands(out) == [Answer()]
    assert moves(out) == [("callback_window", "voice")]
    assert h.machine.active
    assert commands(h.feed(Occurrence.MSD_REQUESTED)) == [SendMsd(message_identifier=2)]
    out = h.feed(CallDropped(reason="NO CARRIER"))
    assert commands(out) == [], "a dropped callback is not redialled either"
    assert h.state is S.CALLBACK_WINDOW
    assert h.machine.next_deadline() == pytest.approx(h.clock.mono + 3600.0), "T9 runs again from the callback"


def test_the_psap_may_request_the_msd_again_and_each_sending_takes_the_next_identifier() -> None:
    h = Harness()
    h.connect()
    ids = []
    for _ in range(3):
        ids += [o.message_identifier for o in h.feed(Occurrence.MSD_REQUESTED) if isinstance(o, SendMsd)]
    h.feed(Occurrence.MSD_TRANSMITTED, AlAck())
    ids += [o.message_identifier for o in h.feed(Occurrence.MSD_REQUESTED) if isinstance(o, SendMsd)]
    assert ids == [1, 2, 3, 4]
    h.feed(Occurrence.CLEAR_DOWN)
    h.connect(SOS)  # a new session from the callback window
    assert commands(h.feed(Occurrence.MSD_REQUESTED)) == [SendMsd(message_identifier=1)]


def test_the_vehicle_never_clears_an_automatic_ecall_only_t2_does() -> None:
    h = Harness()
    h.deliver()
    out = h.feed(HangUpRequest(reason="occupant pressed end"))
    assert commands(out) == []
    assert notices(out) == ["hangup_refused"]
    assert h.state is S.VOICE
    assert commands(h.advance(3599.0)) == []
    out = h.advance(1.0)
    assert commands(out) == [HangUp(reason="T2 fallback: call up for 3600 s")]
    assert h.state is S.CALLBACK_WINDOW


@pytest.mark.parametrize(
    ("trigger", "connected", "allowed"),
    [(CRASH, False, False), (SOS, False, True), (SOS, True, False), (TEST, False, True), (TEST, True, True)],
)
def test_who_may_end_a_call_from_the_vehicle(trigger: Trigger, connected: bool, allowed: bool) -> None:
    h = Harness()
    h.feed(trigger)
    if connected:
        h.feed(Occurrence.CALL_CONNECTED)
    out = h.feed(HangUpRequest(reason="cancel"))
    assert (h.state is S.IDLE) is allowed
    assert (HangUp(reason="cancel") in out) is allowed
    assert ("hangup_refused" in notices(out)) is not allowed


@pytest.mark.parametrize(
    "state_events", [(), (Occurrence.CALL_CONNECTED,), (Occurrence.CALL_CONNECTED, Occurrence.MSD_REQUESTED)]
)
def test_a_second_trigger_during_an_active_call_starts_nothing_and_is_reported(state_events: tuple[Event, ...]) -> None:
    h = Harness()
    h.feed(CRASH, *state_events)
    before = h.state
    out = h.feed(SOS) + h.feed(CRASH)
    assert commands(out) == []
    assert h.state is before
    assert notices(out) == ["trigger_ignored", "trigger_ignored"]
    assert all(r.session == 1 for r in out if isinstance(r, Report))


def test_an_emergency_pre_empts_a_test_call() -> None:
    h = Harness()
    h.deliver(TEST)
    out = h.feed(CRASH)
    assert commands(out) == [
        HangUp(reason="test call pre-empted by an emergency"),
        Dial(call_type=CallType.AUTOMATIC, attempt=1),
    ]
    assert "test_call_preempted" in notices(out)
    assert h.machine.session is not None
    assert h.machine.session.call_type is CallType.AUTOMATIC


@pytest.mark.parametrize(
    ("events", "seconds", "timer"),
    [
        ((), 5.0, "T5"),
        ((Occurrence.MSD_REQUESTED,), 20.0, "T7"),
        ((Occurrence.MSD_REQUESTED, Occurrence.MSD_TRANSMITTED), 5.0, "T6"),
    ],
)
def test_msd_timers_fall_back_to_voice_and_the_msd_stays_on_request(
    events: tuple[Event, ...], seconds: float, timer: str
) -> None:
    h = Harness()
    h.connect()
    h.feed(*events)
    assert moves(h.advance(seconds - 0.01)) == []
    out = h.advance(0.01)
    assert h.state is S.VOICE
    assert any(r.reason.startswith(timer) for r in out if isinstance(r, Report))
    assert commands(h.feed(Occurrence.MSD_REQUESTED))[0] == SendMsd(message_identifier=2 if events else 1)


def test_a_late_ll_ack_after_t7_still_counts_as_delivery() -> None:
    h = Harness()
    h.connect()
    h.feed(Occurrence.MSD_REQUESTED)
    h.advance(20.0)
    assert notices(h.feed(Occurrence.MSD_TRANSMITTED)) == ["ll_ack"], "late, still delivery"
    assert commands(h.feed(CallDropped(reason="NO CARRIER"))) == [], "delivered: no redial"


def test_a_failed_msd_transmission_falls_back_to_voice() -> None:
    h = Harness()
    h.connect()
    h.feed(Occurrence.MSD_REQUESTED)
    assert moves(h.feed(MsdFailed(reason="modem gave up"))) == [("msd_sent", "voice")]
    assert commands(h.feed(CallDropped(reason="NO CARRIER")))[0] == Dial(call_type=CallType.AUTOMATIC, attempt=2)


def test_events_out_of_place_are_reported_not_acted_upon() -> None:
    h = Harness()
    assert h.feed(Occurrence.INCOMING_CALL, Occurrence.CALL_CONNECTED, AlAck()) == [], "idle: not an eCall matter"
    h.feed(CRASH, Occurrence.CALL_CONNECTED)
    out = h.feed(AlAck())
    assert notices(out) == ["unexpected"]
    assert commands(out) == []


def test_the_psap_calling_while_the_vehicle_waits_to_redial_is_answered() -> None:
    h = Harness()
    h.feed(CRASH, DialFailed(reason="no network"))
    assert commands(h.feed(Occurrence.INCOMING_CALL)) == [Answer()]
    assert h.state is S.VOICE
    assert commands(h.feed(Occurrence.MSD_REQUESTED)) == [SendMsd(message_identifier=1)]


# -- invariants over random event sequences -------------------------------------------------------------------
EVENTS = st.sampled_from(
    [
        CRASH,
        SOS,
        TEST,
        *Occurrence,
        AlAck(),
        AlAck(clear_down=True),
        DialFailed(reason="x"),
        CallDropped(reason="x"),
        MsdFailed(reason="x"),
        HangUpRequest(reason="x"),
    ]
)
STEPS = st.lists(st.tuples(EVENTS, st.sampled_from([0.0, 1.0, 5.0, 30.0, 200.0, 4000.0])), max_size=60)
VEHICLE_MAY_END = ("not connected within", "T2 fallback", "PSAP clear-down", "test call pre-empted", "x")


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_invariants_hold_for_any_event_sequence(steps: list[tuple[Event, float]]) -> None:
    h = Harness(replace(EcallTimers(), t9_s=600.0))
    ids: dict[int, list[int]] = {}
    for event, seconds in steps:
        current = h.machine.session
        delivered = current is not None and current.msd_delivered
        call_type = None if current is None else current.call_type
        session = h.machine._sessions
        out = h.feed(event) + h.advance(seconds)
        for o in out:
            if isinstance(o, HangUp):
                assert o.reason.startswith(VEHICLE_MAY_END), o
                if o.reason == "x":
                    assert call_type is not CallType.AUTOMATIC, "the vehicle never clears an automatic eCall"
            if isinstance(o, SendMsd):
                ids.setdefault(h.machine._sessions, []).append(o.message_identifier)
            if isinstance(o, Dial) and h.machine._sessions == session and delivered:
                raise AssertionError("redialled after the MSD was delivered")
        reports = [o for o in out if isinstance(o, Report) and o.event == "transition"]
        for before, after in itertools.pairwise(reports):
            assert before.to_state is after.from_state
        assert h.state is S.IDLE or h.machine.next_deadline() is not None, "no state waits without a timer"
    for sent in ids.values():
        assert sent == list(range(1, len(sent) + 1)), "1 first, +1 per transmission"
