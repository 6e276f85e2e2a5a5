"""A remote measure sent to a car whose SIM is off waits for the SIM, instead of using up its attempts.

AGB 3.3, 6.1: no remote measure without an active SIM. The car answers `rejected`/`sim_inactive`; the
backend learns that the SIM is active again from the next capability report saying so.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from backend_stub.measure_answers import WAITS_FOR, SimReport, sim_of
from backend_stub.measure_store import MeasureState, MeasureStore
from backend_stub.measures import MeasureScheduler
from backend_stub.provisioning_history import CapabilityReport
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from telematics_wire.ecu_keys import load_key_specs
from telematics_wire.measure_order import verify_order
from telematics_wire.measure_plan import Fault, one_step_per_change
from telematics_wire.records import ReceivedRecord, RecordKind
from telematics_wire.vehicle_mode import VehicleMode
from tests.conftest import VIN

KEY = SigningKey(bytes(range(32)))
FAULT = Fault(ref="TICKET-7 firewall blocks the traffic service", service="gateway")
PLAN = one_step_per_change({"gateway.firewall_rules": "v13"}, expected_ms=1000)


class Car:
    """The backend's scheduler with a car whose SIM the test switches, and the capability reports it sends."""

    def __init__(self, path: Path, clock: ManualClock) -> None:
        self.clock = clock
        self.store = MeasureStore(path)
        self.report: SimReport | None = None
        self.scheduler = MeasureScheduler(
            self.store,
            signing_key=KEY,
            clock=clock,
            vehicle_mode=lambda _vin: "parked",
            online=lambda _vin: True,
            sim=lambda _vin: self.report,
            backoff=Backoff(base_s=60, cap_s=600, jitter=0),
            rng=random.Random(1),
        )

    def tick(self) -> list[int]:
        """One scheduler tick: the attempts whose orders it returned."""
        specs = load_key_specs()
        return [
            verify_order(due.payload, KEY.verify_key, vin=VIN, now=self.clock.now(), specs=specs).attempt
            for due in self.scheduler.tick()
        ]

    def answer(self, attempt: int, status: str, code: str | None = None) -> None:
        body = {"type": "measure_result", "measure_id": "M1", "attempt": attempt, "status": status, "code": code}
        self.scheduler.on_record(
            ReceivedRecord(vin=VIN, seq=attempt, kind=RecordKind.EVENT, created=self.clock.now(), body=body)
        )

    def reports_sim(self, state: str) -> None:
        self.report = SimReport(state=state, received=self.clock.now())

    def state(self) -> tuple[str, str | None]:
        measure = self.store.get("M1")
        assert measure is not None
        return measure.state, measure.reason


@pytest.fixture
def car(tmp_path: Path, clock: ManualClock) -> Iterator[Car]:
    car = Car(tmp_path / "backend.sqlite3", clock)
    yield car
    car.store.close()


def _send(car: Car, max_attempts: int = 3, hours: float = 48) -> None:
    car.scheduler.send(
        vin=VIN,
        measure_id="M1",
        fault=FAULT,
        steps=PLAN,
        allowed_states=(VehicleMode.PARKED,),
        max_attempts=max_attempts,
        deadline=timedelta(hours=hours),
    )


def test_sim_inactive_is_a_condition_the_backend_waits_for() -> None:
    assert WAITS_FOR["sim_inactive"] == "sim_active"


def test_a_measure_refused_for_an_inactive_sim_waits_for_the_sim_and_keeps_its_attempts(car: Car) -> None:
    """Before: the refusal fell through to the backoff; three hours of retries used up every attempt and
    abandoned the measure. Now it waits — no order at all while the SIM is off — and runs once the car
    reports its SIM active, with all its attempts left."""
    _send(car, max_attempts=1)
    car.reports_sim("telematics_deactivated")
    assert car.tick() == [1]
    car.answer(1, "rejected", "sim_inactive")
    for _ in range(24):  # a day in hours: far beyond any backoff
        car.clock.advance(3600)
        assert car.tick() == []
    assert car.state()[0] == MeasureState.PENDING
    car.reports_sim("active")  # the file that reactivates the SIM was applied; the car reports again
    assert car.tick() == [2]
    car.answer(2, "succeeded")
    assert car.state()[0] == MeasureState.SUCCEEDED


def test_a_report_of_an_active_sim_from_before_the_refusal_is_stale(car: Car) -> None:
    _send(car)
    car.reports_sim("active")  # what the backend knew before the dealer deactivated the SIM
    car.clock.advance(10)
    assert car.tick() == [1]
    car.answer(1, "rejected", "sim_inactive")
    car.clock.advance(7200)
    assert car.tick() == []  # the old report says nothing about the SIM now
    car.clock.advance(1)
    car.reports_sim("active")
    assert car.tick() == [2]


def test_without_a_report_of_an_active_sim_the_deadline_ends_the_wait_and_says_why(car: Car) -> None:
    _send(car, hours=2)
    assert car.tick() == [1]
    car.answer(1, "rejected", "sim_inactive")
    car.reports_sim("fully_deactivated")
    car.clock.advance(2 * 3600)
    assert car.tick() == []
    state, reason = car.state()
    assert state == MeasureState.EXPIRED
    assert reason is not None
    assert "SIM was not active" in reason


def test_other_failures_still_count_towards_max_attempts(car: Car) -> None:
    """Only the SIM refusal is not an attempt: a real failure after it still uses one up."""
    _send(car, max_attempts=1)
    assert car.tick() == [1]
    car.answer(1, "rejected", "sim_inactive")
    car.reports_sim("active")
    assert car.tick() == [2]
    car.answer(2, "rolled_back", "lock_or_unlock")
    car.clock.advance(3600)
    assert car.tick() == []
    assert car.state() == (MeasureState.ABANDONED, "no success in 1 attempts")


def test_the_sim_is_read_from_the_stored_capability_report() -> None:
    received = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    report = CapabilityReport(vin=VIN, seq=4, created=received, received=received, report={"sim": "active"})
    assert sim_of(report) == SimReport(state="active", received=received)
    assert sim_of(None) is None
    assert sim_of(CapabilityReport(vin=VIN, seq=4, created=received, received=received, report={"sim": 1})) is None
