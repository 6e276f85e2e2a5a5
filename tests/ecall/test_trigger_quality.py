"""A STALE or INVALID reading is no news about a trigger signal: the last GOOD value stands.

The HIL bench found a second 112 call for one crash: the latched crash flag went GOOD True → STALE
(the CAN reader reconnecting) → GOOD True, and the stale reading had counted as False, so the next
GOOD True was a new rising edge once the suppression window was over.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcu.clock import ManualClock
from tcu.ecall.triggers import AIRBAG_DEPLOYED, CRASH_DETECTED, SOS_BUTTON, CallType, DetectedTrigger, TriggerDetector
from tcu.vehicle.can_target import THRESHOLD, CanTarget, convert
from tcu.vehicle.state import Quality, Signal, VehicleState

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SUPPRESS_S = 10.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(path: str, value: bool, seconds: float, quality: Quality = Quality.GOOD) -> Signal:
    return Signal(path=path, value=value, timestamp=at(seconds), source="can", quality=quality)


def fired(detector: TriggerDetector, readings: list[Signal]) -> list[DetectedTrigger]:
    return [t for signal in readings if (t := detector.on_signal(signal)) is not None]


def test_a_latched_crash_flag_through_a_reader_reconnect_is_one_crash() -> None:
    """The bench's case, through VehicleState as the agent wires it: the reader's device goes away
    (mark_stale), comes back a minute later, and the ECU still reports its latched crash flag."""
    clock = ManualClock(wall=T0)
    state, detector = VehicleState(), TriggerDetector(retrigger_suppress_s=SUPPRESS_S)
    triggers: list[DetectedTrigger] = []
    state.subscribe(lambda signal: triggers.extend(t for t in [detector.on_signal(signal)] if t is not None))

    def crash_flag() -> Signal:
        return Signal(path=CRASH_DETECTED, value=True, timestamp=clock.now(), source="can", monotonic=clock.monotonic())

    state.update(crash_flag())
    clock.advance(5)
    assert state.mark_stale("can", clock) == [CRASH_DETECTED]
    clock.advance(55)
    state.update(crash_flag())  # 60 s after the crash: past the suppression, the call long ended
    clock.advance(1)
    state.update(crash_flag())
    assert [t.at for t in triggers] == [T0]


@pytest.mark.parametrize("stale_value", [True, False], ids=["stale True", "stale False"])
@pytest.mark.parametrize("quality", [Quality.STALE, Quality.INVALID])
@pytest.mark.parametrize("path", [CRASH_DETECTED, AIRBAG_DEPLOYED])
def test_good_true_stale_good_true_after_a_minute_gives_one_trigger(
    path: str, quality: Quality, stale_value: bool
) -> None:
    detector = TriggerDetector(retrigger_suppress_s=SUPPRESS_S)
    readings = [reading(path, True, 0.0), reading(path, stale_value, 5.0, quality), reading(path, True, 60.0)]
    assert [t.at for t in fired(detector, readings)] == [at(0.0)]


def test_good_true_good_false_good_true_is_a_second_crash() -> None:
    detector = TriggerDetector(retrigger_suppress_s=SUPPRESS_S)
    readings = [
        reading(CRASH_DETECTED, True, 0.0),
        reading(CRASH_DETECTED, False, 30.0),
        reading(CRASH_DETECTED, True, 60.0),
    ]
    assert [t.at for t in fired(detector, readings)] == [at(0.0), at(60.0)]


def test_a_good_false_after_a_stale_spell_still_rearms() -> None:
    detector = TriggerDetector(retrigger_suppress_s=SUPPRESS_S)
    readings = [
        reading(CRASH_DETECTED, True, 0.0),
        reading(CRASH_DETECTED, True, 5.0, Quality.STALE),
        reading(CRASH_DETECTED, False, 30.0),
        reading(CRASH_DETECTED, False, 31.0, Quality.STALE),
        reading(CRASH_DETECTED, True, 60.0),
    ]
    assert [t.at for t in fired(detector, readings)] == [at(0.0), at(60.0)]


def test_a_threshold_rule_out_of_range_in_between_is_one_crash() -> None:
    """A rule `at_least = 4.0` g: a raw value outside the signal's range arrives as INVALID False,
    which must not re-arm the edge between two readings of the same deceleration."""
    target = CanTarget(name="CrashSeverity", path=CRASH_DETECTED, kind=THRESHOLD, raw_max=255, low=4.0, high=math.inf)
    detector = TriggerDetector(retrigger_suppress_s=SUPPRESS_S)
    triggers = []
    for seconds, raw in ((0.0, 6.0), (2.0, 999.0), (60.0, 6.0), (90.0, 1.0), (120.0, 6.0)):
        value, quality = convert(target, raw)
        assert isinstance(value, bool)
        if (t := detector.on_signal(reading(CRASH_DETECTED, value, seconds, quality))) is not None:
            triggers.append(t.at)
    assert triggers == [at(0.0), at(120.0)], "999 is out of range (no news); 1 g is a GOOD below-threshold reading"


def test_an_sos_press_goes_on_through_a_stale_reading() -> None:
    detector = TriggerDetector(sos_hold_s=0.5, retrigger_suppress_s=SUPPRESS_S)
    assert detector.on_signal(reading(SOS_BUTTON, True, 0.0)) is None
    assert detector.on_signal(reading(SOS_BUTTON, True, 0.2, Quality.STALE)) is None
    assert detector.next_deadline() is None, "no call on a reading the agent cannot trust"
    assert detector.tick(at(0.6)) is None
    call = detector.on_signal(reading(SOS_BUTTON, True, 0.7))
    assert call is not None, "pressed since 0.0 and still pressed: the hold is met"
    assert call.trigger.call_type is CallType.MANUAL
    # Held on through another outage, past the suppression: still the same press, no second call.
    assert detector.on_signal(reading(SOS_BUTTON, True, 5.0, Quality.STALE)) is None
    assert detector.on_signal(reading(SOS_BUTTON, True, 60.0)) is None
    assert detector.tick(at(61.0)) is None
    # Released (GOOD False) and pressed again: a new call.
    assert detector.on_signal(reading(SOS_BUTTON, False, 62.0)) is None
    assert detector.on_signal(reading(SOS_BUTTON, True, 63.0)) is None
    assert detector.next_deadline() == at(63.5)
    assert detector.tick(at(63.5)) is not None


def test_an_sos_press_not_yet_held_long_enough_waits_for_a_good_reading() -> None:
    detector = TriggerDetector(sos_hold_s=0.5, retrigger_suppress_s=SUPPRESS_S)
    detector.on_signal(reading(SOS_BUTTON, True, 0.0))
    detector.on_signal(reading(SOS_BUTTON, False, 0.1, Quality.INVALID))
    assert detector.on_signal(reading(SOS_BUTTON, True, 0.3)) is None, "held 0.3 s of 0.5: not yet"
    assert detector.next_deadline() == at(0.5), "the hold counts from the press, not the stale spell's end"
    assert detector.tick(at(0.5)) is not None


READINGS = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.STALE, Quality.INVALID]),
        st.integers(min_value=0, max_value=30_000),  # ms since the previous reading: exact in a timedelta
    ),
    max_size=40,
)


def expected_triggers(readings: list[tuple[bool, Quality, int]]) -> list[int]:
    """The rule, stated plainly: a GOOD True whose previous GOOD reading was not True (or that is the
    first GOOD reading) is an edge; an edge within the suppression window of the last trigger is
    dropped. Readings that are not GOOD are skipped."""
    last_good: bool | None = None
    last_fired: int | None = None
    times, now = [], 0
    for value, quality, gap in readings:
        now += gap
        if quality is not Quality.GOOD:
            continue
        edge = value and last_good is not True
        last_good = value
        if edge and (last_fired is None or now - last_fired >= SUPPRESS_S * 1000):
            last_fired = now
            times.append(now)
    return times


def signals(path: str, readings: list[tuple[bool, Quality, int]]) -> list[Signal]:
    out, now = [], 0
    for value, quality, gap in readings:
        now += gap
        out.append(reading(path, value, now / 1000, quality))
    return out


@settings(deadline=None, max_examples=300)
@given(READINGS, st.sampled_from([CRASH_DETECTED, AIRBAG_DEPLOYED, SOS_BUTTON]))
def test_triggers_are_the_good_rising_edges_outside_the_suppression(
    readings: list[tuple[bool, Quality, int]], path: str
) -> None:
    detector = TriggerDetector(sos_hold_s=0.0, retrigger_suppress_s=SUPPRESS_S)  # a hold of 0: an edge is a call
    got = [(t.at - T0) // timedelta(milliseconds=1) for t in fired(detector, signals(path, readings))]
    assert got == expected_triggers(readings)


@settings(deadline=None, max_examples=200)
@given(READINGS)
def test_stale_readings_never_add_a_trigger(readings: list[tuple[bool, Quality, int]]) -> None:
    """Dropping every non-GOOD reading from a sequence gives the same calls at the same times."""
    good_only = [(v, q, g) if q is Quality.GOOD else (v, None, g) for v, q, g in readings]
    with_stale = fired(TriggerDetector(retrigger_suppress_s=SUPPRESS_S), signals(CRASH_DETECTED, readings))
    now, kept = 0, []
    for value, quality, gap in good_only:
        now += gap
        if quality is not None:
            kept.append(reading(CRASH_DETECTED, value, now / 1000))
    without = fired(TriggerDetector(retrigger_suppress_s=SUPPRESS_S), kept)
    assert [t.at for t in with_stale] == [t.at for t in without]
