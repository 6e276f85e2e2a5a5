"""VehicleState's subscribers: who hears of a reading when subscribers come and go, and the ordering of
readings without a monotonic time (the update path is written out for speed; these pin what it does)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tcu.vehicle.state import Signal, VehicleState

SPEED = "Vehicle.Speed"
WALL = datetime(2026, 1, 1, tzinfo=UTC)


def _reading(value: float, monotonic: float | None) -> Signal:
    return Signal(path=SPEED, value=value, timestamp=WALL, source="test", monotonic=monotonic)


def test_subscribers_hear_in_the_order_they_subscribed_and_not_after_unsubscribing() -> None:
    state, heard = VehicleState(), []
    state.subscribe(lambda signal: heard.append(("first", signal.value)))
    unsubscribe = state.subscribe(lambda signal: heard.append(("second", signal.value)))
    state.update(_reading(1.0, 1.0))
    unsubscribe()
    state.update(_reading(2.0, 2.0))
    assert heard == [("first", 1.0), ("second", 1.0), ("first", 2.0)]


def test_a_reading_goes_to_the_subscribers_there_were_when_it_came() -> None:
    """One subscriber unsubscribing another, or subscribing a third, while a reading is delivered: the
    reading still reaches the one unsubscribed and not the one added; the next reading the other way round."""
    state, heard = VehicleState(), []
    unsubscribe_last: list[object] = []

    def first(signal: Signal) -> None:
        heard.append(("first", signal.value))
        if signal.value == 1.0:
            unsubscribe_last.pop()()  # type: ignore[operator]
            state.subscribe(lambda later: heard.append(("added", later.value)))

    state.subscribe(first)
    unsubscribe_last.append(state.subscribe(lambda signal: heard.append(("last", signal.value))))
    state.update(_reading(1.0, 1.0))
    state.update(_reading(2.0, 2.0))
    assert heard == [("first", 1.0), ("last", 1.0), ("first", 2.0), ("added", 2.0)]


def test_unsubscribing_twice_is_an_error_and_leaves_the_others_subscribed() -> None:
    state, heard = VehicleState(), []
    unsubscribe = state.subscribe(lambda signal: heard.append(("gone", signal)))
    state.subscribe(lambda signal: heard.append(("kept", signal)))
    unsubscribe()
    with pytest.raises(ValueError, match="not in list"):
        unsubscribe()
    state.update(_reading(1.0, 1.0))
    assert [who for who, _ in heard] == ["kept"]


def test_a_failing_subscriber_does_not_keep_the_reading_from_the_others(caplog: pytest.LogCaptureFixture) -> None:
    state, heard = VehicleState(), []

    def broken(_signal: Signal) -> None:
        raise RuntimeError("subscriber broke")

    state.subscribe(broken)
    state.subscribe(heard.append)
    state.update(_reading(1.0, 1.0))
    assert [signal.value for signal in heard] == [1.0]
    assert state.value(SPEED) == 1.0
    assert "subscriber" in caplog.text


@pytest.mark.parametrize(
    ("stored", "arriving", "kept"),
    [
        (None, 5.0, 2.0),  # a reading made by hand is ordered by arrival: the arriving one wins
        (5.0, None, 2.0),
        (5.0, 5.0, 2.0),  # taken at the same moment: the later arrival wins
        (5.0, 4.0, 1.0),  # taken before the stored one: ignored
        (5.0, 6.0, 2.0),
    ],
)
def test_a_reading_replaces_the_stored_one_unless_taken_before_it(
    stored: float | None, arriving: float | None, kept: float
) -> None:
    state, heard = VehicleState(), []
    state.update(_reading(1.0, stored))
    state.subscribe(heard.append)
    state.update(_reading(2.0, arriving))
    assert state.value(SPEED) == kept
    assert len(heard) == (kept == 2.0)


@pytest.mark.parametrize("monotonic", [1.5, 2, 0.0, -3.25])
def test_a_reading_takes_a_finite_int_or_float_as_its_monotonic_time(monotonic: float) -> None:
    assert _reading(1.0, monotonic).monotonic == monotonic


@pytest.mark.parametrize("monotonic", [float("nan"), float("inf"), -float("inf"), True, "1.0"])
def test_a_reading_refuses_a_monotonic_time_that_is_no_finite_number(monotonic: object) -> None:
    with pytest.raises(ValueError, match="is not a finite number"):
        _reading(1.0, monotonic)  # type: ignore[arg-type]
