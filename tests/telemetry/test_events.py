"""Issue 12 item 10: event data — the automatic service call, the parked position, door and lock changes —
sent once, pushed at once, within the data policy. Time is a ManualClock; nothing sleeps."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tcu.clock import ManualClock
from tcu.telemetry.data_policy import Verdict
from tcu.telemetry.events import VehicleEvents
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.catalogue import Catalogue, Category
from telematics_wire.records import Record, RecordKind
from telematics_wire.signal_values import SignalValue

CATALOGUE = Catalogue.load()
DISTANCE = "Vehicle.Service.DistanceToService"
TIME = "Vehicle.Service.TimeToService"
OIL = "Vehicle.Powertrain.CombustionEngine.EngineOilLevel"
PAD_FRONT_LEFT = "Vehicle.Chassis.Axle.Row1.Wheel.Left.Brake.PadWear"
DOOR = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"
LOCK = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"
LAT, LON = "Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocation.Longitude"


class _Gate:
    """The data policy as events see it, with categories the test can block."""

    def __init__(self) -> None:
        self.blocked: set[Category] = set()

    def category_of(self, path: str) -> Category:
        return CATALOGUE.category_of(path)

    def verdict(self, category: Category) -> Verdict:
        if category in self.blocked:
            return Verdict(False, "blocked by the customer's privacy setting")
        return Verdict(True, "allowed")


class _Car:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = ManualClock()
        self.state = VehicleState()
        self.gate = _Gate()
        self.records: list[Record] = []
        self.store = tmp_path / "service_calls.json"
        self.events = self._start()

    def restart(self) -> VehicleEvents:
        """A fresh agent on the same data dir: new state, the same service-call record, as the agent before
        left it (a stopping agent's writer finishes what it was handed)."""
        asyncio.run(self.events.service_calls.settled())
        return self._start()

    def _start(self) -> VehicleEvents:
        self.state = VehicleState()
        self.events = VehicleEvents(
            state=self.state,
            clock=self.clock,
            gate=self.gate,
            report=self.records.append,
            store_path=self.store,
            debounce_s=1.0,
            standstill_s=180.0,
        )
        self.events.load()
        self.state.subscribe(self.events.on_signal)
        return self.events

    def read(self, path: str, value: SignalValue, quality: Quality = Quality.GOOD) -> None:
        self.state.update(
            Signal(
                path=path,
                value=value,
                timestamp=self.clock.now(),
                source="test",
                quality=quality,
                monotonic=self.clock.monotonic(),
            )
        )

    def wait(self, seconds: float, step: float = 0.25) -> None:
        """Time passes; the agent's event task ticks."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.events.tick()

    def bodies(self, kind: str | None = None) -> list[dict[str, object]]:
        assert all(r.kind is RecordKind.EVENT for r in self.records)
        return [r.body for r in self.records if kind is None or r.body["type"] == kind]


@pytest.fixture
def car(tmp_path: Path) -> _Car:
    return _Car(tmp_path)


# -- the automatic service call ------------------------------------------------------------------


def test_a_service_falling_due_is_called_once_not_on_every_reading(car: _Car) -> None:
    car.read("Vehicle.TraveledDistance", 20_000.0)
    for km in (2.0, 1.0, 0.1):
        car.read(DISTANCE, km)
    assert car.bodies() == []
    for km in (0.0, -0.1, -0.2, -5.0):
        car.read(DISTANCE, km)
    calls = car.bodies("service_call")
    assert len(calls) == 1
    assert calls[0]["item"] == "service"
    assert calls[0]["due"] == [DISTANCE]
    assert calls[0]["readings"][DISTANCE]["v"] == 0.0  # type: ignore[index]
    assert calls[0]["context"]["Vehicle.TraveledDistance"]["v"] == 20_000.0  # type: ignore[index]


def test_each_item_is_called_once_oil_brakes_and_time(car: _Car) -> None:
    car.read(TIME, 3600)
    car.read(OIL, "NORMAL")
    car.read(PAD_FRONT_LEFT, 79)
    assert car.bodies() == []
    car.read(OIL, "LOW")
    car.read(OIL, "CRITICALLY_LOW")
    car.read(PAD_FRONT_LEFT, 80)
    car.read(PAD_FRONT_LEFT, 81)
    car.read(TIME, 0)
    car.read(TIME, -60)
    assert [b["item"] for b in car.bodies("service_call")] == ["engine_oil", "brake_pads_front", "service"]


def test_a_restart_while_due_does_not_call_again(car: _Car) -> None:
    car.read(DISTANCE, -1.0)
    assert len(car.bodies("service_call")) == 1
    car.restart()
    car.read(DISTANCE, -1.2)
    car.read(DISTANCE, -1.3)
    assert len(car.bodies("service_call")) == 1


def test_after_the_workshop_reset_the_next_due_date_calls_again(car: _Car) -> None:
    car.read(DISTANCE, -1.0)
    car.read(DISTANCE, 30_000.0)  # serviced
    car.restart()
    car.read(DISTANCE, 5.0)
    assert len(car.bodies("service_call")) == 1
    car.read(DISTANCE, -0.1)
    assert len(car.bodies("service_call")) == 2


def test_a_service_call_of_blocked_maintenance_data_is_not_sent_and_says_so(
    car: _Car, caplog: pytest.LogCaptureFixture
) -> None:
    car.gate.blocked = {Category.MAINTENANCE}
    with caplog.at_level(logging.INFO):
        car.read(DISTANCE, -1.0)
    assert car.bodies() == []
    assert "service_call event not sent: Vehicle.Service.DistanceToService is maintenance data: blocked" in caplog.text
    car.gate.blocked = set()
    car.read(DISTANCE, -1.5)
    assert car.bodies() == []  # lifting the block sends nothing from the time it was in force


def test_the_mileage_goes_with_a_service_call_only_when_status_data_is_allowed(car: _Car) -> None:
    car.gate.blocked = {Category.VEHICLE_STATUS}
    car.read("Vehicle.TraveledDistance", 20_000.0)
    car.read(DISTANCE, -1.0)
    (call,) = car.bodies("service_call")
    assert call["context"] == {}


@pytest.mark.parametrize("value", [True, False, float("nan"), float("inf"), "0", ()])
def test_a_reading_that_is_not_a_number_neither_calls_nor_clears(car: _Car, value: SignalValue) -> None:
    car.read(DISTANCE, -1.0)
    car.read(DISTANCE, value)  # True == 1 would otherwise say "not due": forgotten, called again
    car.read(DISTANCE, -2.0)
    assert len(car.bodies("service_call")) == 1


def test_a_stale_reading_neither_calls_nor_clears(car: _Car) -> None:
    car.read(DISTANCE, -1.0)
    car.read(DISTANCE, 500.0, Quality.STALE)
    car.read(DISTANCE, -1.0)
    assert len(car.bodies("service_call")) == 1


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff", b"[]", b'{"called": 5}', b'{"called": [1, "service"]}', b"[" * 10**5],
    ids=["empty", "not-utf8", "list", "not-a-list", "mixed", "deep"],
)
def test_an_unreadable_service_call_record_starts_empty_and_says_so(
    car: _Car, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    car.store.write_bytes(content)
    events = car.restart()
    assert events.service_calls.called <= {"service"}
    car.read(OIL, "LOW")
    assert len(car.bodies("service_call")) == 1
    if content != b'{"called": [1, "service"]}':
        assert "unreadable" in caplog.text


# -- the parked position ------------------------------------------------------------------------------


def _drive(car: _Car) -> None:
    car.read(LAT, 48.1)
    car.read(LON, 11.5)
    car.read("Vehicle.Speed", 30.0)
    car.read(LAT, 48.2)
    car.read(LON, 11.6)
    car.read("Vehicle.Speed", 0.0)


def test_parking_after_driving_sends_the_last_position_once(car: _Car) -> None:
    car.read("Vehicle.Mode", "driving")
    _drive(car)
    car.read("Vehicle.Mode", "living")
    car.wait(600)  # a long stop with the ignition on is not parking
    assert car.bodies() == []
    car.read("Vehicle.Mode", "parked")
    car.read("Vehicle.Mode", "parked")
    car.read("Vehicle.LowVoltageSystemState", "OFF")
    (parked,) = car.bodies("parked_position")
    assert parked["trigger"] == "ignition_off"
    assert {p: v["v"] for p, v in parked["position"].items()} == {LAT: 48.2, LON: 11.6}  # type: ignore[attr-defined]
    car.read("Vehicle.Mode", "driving")
    car.read("Vehicle.Speed", 10.0)
    car.read("Vehicle.Mode", "parked")
    assert len(car.bodies("parked_position")) == 2  # the next parking is reported again


def test_without_an_ignition_state_a_standstill_after_driving_is_parking(car: _Car) -> None:
    _drive(car)
    car.wait(179)
    assert car.bodies() == []
    car.wait(2)
    (parked,) = car.bodies("parked_position")
    assert parked["trigger"] == "standstill"
    car.wait(3600)
    assert len(car.bodies()) == 1


def test_a_car_that_never_drove_since_the_start_sends_no_parked_position(car: _Car) -> None:
    car.read(LAT, 48.1)
    car.read(LON, 11.5)
    car.read("Vehicle.Mode", "parked")
    car.read("Vehicle.Speed", 0.0)
    car.wait(600)
    assert car.bodies() == []


def test_a_parked_position_is_not_sent_when_position_data_is_blocked(
    car: _Car, caplog: pytest.LogCaptureFixture
) -> None:
    car.gate.blocked = {Category.POSITION}
    car.read("Vehicle.Mode", "driving")
    _drive(car)
    with caplog.at_level(logging.INFO):
        car.read("Vehicle.Mode", "parked")
    assert car.bodies() == []
    assert "parked_position event not sent: Vehicle.CurrentLocation.Latitude is position data" in caplog.text


# -- doors and locks -----------------------------------------------------------------------------------


def test_a_door_opening_and_closing_are_two_events_after_the_debounce(car: _Car) -> None:
    car.read(DOOR, False)  # the state at start: not an event
    car.read(DOOR, True)
    assert car.bodies() == []  # not yet: the contact may bounce
    car.wait(1.0)
    car.read(DOOR, False)
    car.wait(1.0)
    assert [(b["type"], b["value"], b["previous"]) for b in car.bodies()] == [
        ("door", True, False),
        ("door", False, True),
    ]


def test_a_bouncing_contact_within_the_debounce_is_no_event(car: _Car) -> None:
    car.read(DOOR, False)
    for _ in range(20):
        car.read(DOOR, True)
        car.clock.advance(0.1)
        car.read(DOOR, False)
        car.clock.advance(0.1)
    car.wait(5)
    assert car.bodies() == []


def test_a_flapping_signal_gives_no_event_storm(car: _Car, caplog: pytest.LogCaptureFixture) -> None:
    car.read(LOCK, False)
    for i in range(60):  # a change every 1.5 s for 90 s: slower than the debounce, faster than a person
        car.read(LOCK, i % 2 == 0)
        car.wait(1.5)
    locks = car.bodies("lock")
    assert len(locks) <= 12  # at most 6 a minute
    assert "changes more than 6 times in 60 s" in caplog.text
    assert caplog.text.count("changes more than") <= 2  # logged once per burst, not per change
    assert any("suppressed" in b for b in locks)


def test_lock_and_unlock_through_the_central_lock(car: _Car) -> None:
    car.read("Vehicle.Body.CentralLock.State", "UNLOCKED")
    car.read("Vehicle.Body.CentralLock.State", "LOCKED")
    car.wait(1)
    (lock,) = car.bodies("lock")
    assert (lock["path"], lock["value"], lock["previous"]) == ("Vehicle.Body.CentralLock.State", "LOCKED", "UNLOCKED")


def test_a_stale_or_numeric_door_reading_is_no_change(car: _Car) -> None:
    car.read(DOOR, False)
    car.read(DOOR, True, Quality.STALE)
    car.read(DOOR, 1)
    car.wait(5)
    assert car.bodies() == []


def test_door_events_of_blocked_status_data_are_not_sent(car: _Car, caplog: pytest.LogCaptureFixture) -> None:
    car.gate.blocked = {Category.VEHICLE_STATUS}
    car.read(DOOR, False)
    car.read(DOOR, True)
    with caplog.at_level(logging.INFO):
        car.wait(1)
    assert car.bodies() == []
    assert "door event not sent: Vehicle.Cabin.Door.Row1.DriverSide.IsOpen is vehicle_status data" in caplog.text


def test_events_ignore_other_signals_cheaply(car: _Car) -> None:
    car.read("Vehicle.Powertrain.CombustionEngine.Speed", 2000.0)
    car.read("Vehicle.Cabin.Door.Row1.DriverSide.Window.Position", 50)
    car.wait(5)
    assert car.bodies() == []
