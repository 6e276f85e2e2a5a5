"""The intelligent call's state machine, sans-I/O: which commands it gives for each event, on each clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tcu.ecall import call_centre_call as cc
from tcu.ecall.call_centre_call import CallCentreCall, CallCentreState, CallCentreTimers
from tcu.ecall.state_machine import Instant
from tcu.ecall.triggers import CallType, HangUpRequest, Trigger

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CRASH = Trigger(call_type=CallType.AUTOMATIC, reason="crash detected")


def at(seconds: float) -> Instant:
    return Instant(seconds, T0 + timedelta(seconds=seconds))


def commands(outputs: list[cc.Output]) -> list[cc.Output]:
    return [o for o in outputs if not isinstance(o, cc.Report)]


def test_dial_first_then_the_data_and_the_answer_timer() -> None:
    call = CallCentreCall(CallCentreTimers(answer_timeout_s=20.0), fallback_to_112=True)
    assert commands(call.handle(CRASH, at(0))) == [cc.VoiceDial(attempt=1), cc.SendData()]
    assert call.next_deadline() == 20.0
    assert commands(call.handle(cc.Tick(), at(19.9))) == []
    assert commands(call.handle(cc.Tick(), at(20.0))) == [
        cc.HangUp(reason="the call centre did not answer within 20 s"),
        cc.FallBack(reason="intelligent emergency call failed: the call centre did not answer within 20 s"),
    ]
    assert call.state is CallCentreState.IDLE


def test_once_answered_a_drop_is_no_reason_to_fall_back() -> None:
    call = CallCentreCall(CallCentreTimers(max_call_s=600.0), fallback_to_112=True)
    call.handle(CRASH, at(0))
    call.handle(cc.Answered(), at(3))
    assert call.state is CallCentreState.CONNECTED
    assert call.next_deadline() == 603.0, "T2 only"
    assert commands(call.handle(cc.Unreachable(reason="NO CARRIER"), at(40))) == []
    assert call.state is CallCentreState.IDLE


def test_t2_ends_a_call_that_nobody_ends() -> None:
    call = CallCentreCall(CallCentreTimers(max_call_s=600.0), fallback_to_112=False)
    call.handle(CRASH, at(0))
    call.handle(cc.Answered(), at(1))
    assert commands(call.handle(cc.Tick(), at(601))) == [cc.HangUp(reason="T2: call up for 600 s")]
    assert not call.active


def test_without_fallback_it_redials_up_to_the_limit() -> None:
    timers = CallCentreTimers(answer_timeout_s=10.0, redial_interval_s=30.0, max_attempts=2)
    call = CallCentreCall(timers, fallback_to_112=False)
    call.handle(CRASH, at(0))
    assert commands(call.handle(cc.Unreachable(reason="BUSY"), at(1))) == []
    assert call.state is CallCentreState.WAITING
    assert commands(call.handle(cc.Tick(), at(31))) == [cc.VoiceDial(attempt=2)], "no second SendData"
    outputs = call.handle(cc.Unreachable(reason="NO CARRIER"), at(32))
    assert commands(outputs) == []
    assert call.state is CallCentreState.IDLE
    assert "gave up after 2 attempts" in [o for o in outputs if isinstance(o, cc.Report)][-1].reason


def test_who_may_hang_up() -> None:
    call = CallCentreCall(CallCentreTimers(), fallback_to_112=True)
    call.handle(CRASH, at(0))
    refused = call.handle(HangUpRequest(reason="occupant"), at(1))
    assert [o.event for o in refused if isinstance(o, cc.Report)] == ["hangup_refused"]
    assert call.active
    manual = CallCentreCall(CallCentreTimers(), fallback_to_112=True)
    manual.handle(Trigger(call_type=CallType.MANUAL, reason="SOS"), at(0))
    assert commands(manual.handle(HangUpRequest(reason="by mistake"), at(1))) == [cc.HangUp(reason="by mistake")]
    assert not manual.active
    manual.handle(Trigger(call_type=CallType.MANUAL, reason="SOS"), at(2))
    manual.handle(cc.Answered(), at(3))
    manual.handle(HangUpRequest(reason="too late"), at(4))
    assert manual.active, "a manual call the centre answered ends only by the centre"


def test_an_emergency_pre_empts_a_test_call_and_a_second_trigger_starts_nothing() -> None:
    call = CallCentreCall(CallCentreTimers(), fallback_to_112=False)
    call.handle(Trigger(call_type=CallType.TEST, reason="test"), at(0))
    outputs = call.handle(CRASH, at(1))
    assert commands(outputs) == [
        cc.HangUp(reason="test call pre-empted by an emergency"),
        cc.VoiceDial(attempt=1),
        cc.SendData(),
    ]
    assert call.call_type is CallType.AUTOMATIC
    again = call.handle(Trigger(call_type=CallType.MANUAL, reason="SOS"), at(2))
    assert commands(again) == []
    assert [o.event for o in again if isinstance(o, cc.Report)] == ["trigger_ignored"]


def test_news_about_no_call_of_ours_is_ignored() -> None:
    call = CallCentreCall(CallCentreTimers(), fallback_to_112=True)
    assert call.handle(cc.Unreachable(reason="NO CARRIER"), at(0)) == []
    assert call.handle(cc.Answered(), at(0)) == []
    assert call.handle(cc.Tick(), at(0)) == []
