"""Trigger detection from VehicleState notifications: edges, quality, SOS hold time, suppression, test calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tcu.ecall.triggers import AIRBAG_DEPLOYED, CRASH_DETECTED, SOS_BUTTON, CallType, DetectedTrigger, TriggerDetector
from tcu.vehicle.state import Quality, Signal, VehicleState

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(path: str, value: bool, seconds: float = 0.0, quality: Quality = Quality.GOOD) -> Signal:
    return Signal(path=path, value=value, timestamp=at(seconds), source="can", quality=quality)


@pytest.fixture
def detector() -> TriggerDetector:
    return TriggerDetector(sos_hold_s=0.5, retrigger_suppress_s=10.0)


@pytest.mark.parametrize(("path", "reason"), [(CRASH_DETECTED, "crash detected"), (AIRBAG_DEPLOYED, "airbag deployed")])
def test_crash_and_airbag_are_automatic_triggers_on_the_rising_edge(
    detector: TriggerDetector, path: str, reason: str
) -> None:
    assert detector.on_signal(reading(path, False)) is None
    fired = detector.on_signal(reading(path, True, 1.0))
    assert fired is not None
    assert fired.trigger.call_type is CallType.AUTOMATIC
    assert fired.trigger.reason == reason
    assert (fired.at, fired.path) == (at(1.0), path)
    assert detector.on_signal(reading(path, True, 1.1)) is None, "still True: no new edge"


def test_a_crash_flag_true_at_the_first_reading_triggers(detector: TriggerDetector) -> None:
    assert detector.on_signal(reading(CRASH_DETECTED, True)) is not None


@pytest.mark.parametrize("quality", [Quality.STALE, Quality.INVALID])
def test_only_good_readings_trigger(detector: TriggerDetector, quality: Quality) -> None:
    assert detector.on_signal(reading(CRASH_DETECTED, True, 0.0, quality)) is None
    fired = detector.on_signal(reading(CRASH_DETECTED, True, 1.0))
    assert fired is not None, "the first GOOD True is the edge"


def test_crash_and_airbag_of_one_impact_give_one_trigger(detector: TriggerDetector) -> None:
    assert detector.on_signal(reading(CRASH_DETECTED, True, 0.0)) is not None
    assert detector.on_signal(reading(AIRBAG_DEPLOYED, True, 0.05)) is None
    assert detector.on_signal(reading(SOS_BUTTON, True, 1.0)) is None
    assert detector.tick(at(2.0)) is None, "suppressed within 10 s of the crash"
    detector.on_signal(reading(CRASH_DETECTED, False, 20.0))
    assert detector.on_signal(reading(CRASH_DETECTED, True, 21.0)) is not None, "a second impact later does"


def test_the_sos_button_must_be_held(detector: TriggerDetector) -> None:
    assert detector.on_signal(reading(SOS_BUTTON, True, 0.0)) is None
    assert detector.next_deadline() == at(0.5)
    assert detector.on_signal(reading(SOS_BUTTON, False, 0.2)) is None, "a bounce"
    assert detector.next_deadline() is None
    assert detector.on_signal(reading(SOS_BUTTON, True, 1.0)) is None
    assert detector.tick(at(1.4)) is None
    fired = detector.tick(at(1.5))
    assert fired is not None
    assert fired.trigger.call_type is CallType.MANUAL
    assert detector.tick(at(3.0)) is None, "one trigger per press"
    assert detector.on_signal(reading(SOS_BUTTON, True, 3.1)) is None, "held on: still the same press"


def test_a_held_button_reported_periodically_fires_without_a_tick(detector: TriggerDetector) -> None:
    fired = [detector.on_signal(reading(SOS_BUTTON, True, t / 10)) for t in range(8)]  # CAN frames every 100 ms
    assert [f is not None for f in fired] == [False] * 5 + [True, False, False]


def test_a_test_call_is_never_suppressed(detector: TriggerDetector) -> None:
    detector.on_signal(reading(CRASH_DETECTED, True, 0.0))
    fired = detector.test_call(at(0.1))
    assert fired.trigger.call_type is CallType.TEST
    assert fired.path is None


def test_the_detector_works_as_a_vehicle_state_subscriber() -> None:
    state, detector = VehicleState(), TriggerDetector(sos_hold_s=0.0)
    fired: list[DetectedTrigger] = []
    state.subscribe(lambda signal: fired.extend(t for t in [detector.on_signal(signal)] if t is not None))
    state.update(Signal(path="Vehicle.Speed", value=50.0, timestamp=T0, source="can"))
    state.update(reading(SOS_BUTTON, True))
    assert [f.trigger.call_type for f in fired] == [CallType.MANUAL]


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        TriggerDetector(sos_hold_s=-1.0)
