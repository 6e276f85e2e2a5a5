"""The backend's measure scheduler: planning before an attempt, retries, retry-at-once, one attempt per
vehicle, give-up rules, no blind retry after the 10-minute cap."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from backend_stub.errors import MeasureRefusedError
from backend_stub.measure_store import MeasureState, MeasureStore
from backend_stub.measures import MeasureScheduler
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from telematics_wire.ecu_keys import KeyClass, load_key_specs
from telematics_wire.measure_order import MeasureOrder, verify_order
from telematics_wire.measure_plan import Fault, MeasureStep, one_step_per_change
from telematics_wire.records import ReceivedRecord, RecordKind
from telematics_wire.vehicle_mode import VehicleMode
from tests.conftest import OTHER_VIN, VIN

KEY = SigningKey(bytes(range(32)))
FAULT = Fault(ref="TICKET-1 firewall blocks the traffic service", service="gateway")
PLAN = one_step_per_change({"gateway.firewall_rules": "v13"}, expected_ms=1000)


class World:
    def __init__(self, path: Path, clock: ManualClock) -> None:
        self.clock = clock
        self.store = MeasureStore(path)
        self.mode: dict[str, str | None] = {VIN: "parked", OTHER_VIN: "parked"}
        self.online: dict[str, bool] = {VIN: True, OTHER_VIN: True}
        self.sent: list[MeasureOrder] = []
        self.scheduler = MeasureScheduler(
            self.store,
            signing_key=KEY,
            clock=clock,
            vehicle_mode=self.mode.get,
            online=self.online.get,
            backoff=Backoff(base_s=60, cap_s=600, jitter=0),
            attempt_timeout_s=900,
            rng=random.Random(1),
        )

    def tick(self) -> list[tuple[str, int]]:
        """One scheduler tick; the orders it returns, checked as the vehicle checks them."""
        ticked = []
        for due in self.scheduler.tick():
            order = verify_order(due.payload, KEY.verify_key, vin=due.vin, now=self.clock.now(), specs=load_key_specs())
            assert due.topic == f"vehicles/{order.vin}/down/measure"
            assert (due.measure_id, due.attempt) == (order.measure_id, order.attempt)
            self.sent.append(order)
            ticked.append((order.measure_id, order.attempt))
        return ticked

    def answer(
        self, measure_id: str, attempt: int, status: str, code: str | None = None, vin: str = VIN, **extra: Any
    ) -> None:
        body = {
            "type": "measure_result",
            "measure_id": measure_id,
            "attempt": attempt,
            "status": status,
            "code": code,
            "reason": f"because {code}",
            **extra,
        }
        self.scheduler.on_record(
            ReceivedRecord(vin=vin, seq=1, kind=RecordKind.EVENT, created=self.clock.now(), body=body)
        )

    def send(self, measure_id: str = "M1", vin: str = VIN, **kwargs: Any) -> None:
        self.scheduler.send(
            vin=vin,
            measure_id=measure_id,
            **{"fault": FAULT, "steps": PLAN, "allowed_states": (VehicleMode.PARKED,), **kwargs},
        )

    def state(self, measure_id: str = "M1") -> str:
        measure = self.store.get(measure_id)
        assert measure is not None
        return measure.state


@pytest.fixture
def world(tmp_path: Path, clock: ManualClock) -> Iterator[World]:
    world = World(tmp_path / "backend.sqlite3", clock)
    yield world
    world.store.close()


def test_retried_with_backoff_until_it_succeeds(world: World) -> None:
    world.send()
    assert world.tick() == [("M1", 1)]
    assert world.tick() == []  # in flight
    world.answer("M1", 1, "rolled_back", "lock_or_unlock", impaired={"services": [], "seconds": 12.5})
    assert world.tick() == []  # backoff: 60 s
    world.clock.advance(61)
    assert world.tick() == [("M1", 2)]
    world.answer("M1", 2, "succeeded")
    world.clock.advance(3600)
    assert world.tick() == []
    assert world.state() == MeasureState.SUCCEEDED
    history = world.store.history("M1")
    assert [(a.attempt, a.status, a.code) for a in history] == [
        (1, "rolled_back", "lock_or_unlock"),
        (2, "succeeded", None),
    ]
    assert history[0].impaired_s == 12.5


def test_retried_at_once_when_the_vehicle_comes_back_online(world: World) -> None:
    world.send()
    world.tick()
    world.online[VIN] = False
    world.answer("M1", 1, "rolled_back", "coverage_lost")
    assert world.tick() == []
    world.online[VIN] = True
    assert world.tick() == [("M1", 2)]  # no waiting for the backoff


def test_retried_at_once_when_the_vehicle_reaches_an_allowed_state(world: World) -> None:
    world.send()
    world.tick()
    world.mode[VIN] = "driving"
    world.answer("M1", 1, "not_started", "vehicle_state_not_allowed")
    assert world.tick() == []
    world.mode[VIN] = "parked"
    assert world.tick() == [("M1", 2)]


def test_never_two_attempts_at_once_on_one_vehicle(world: World) -> None:
    world.send("M1")
    world.send("M2")
    world.send("M3", vin=OTHER_VIN)
    assert world.tick() == [("M1", 1), ("M3", 1)]
    assert world.tick() == []
    world.answer("M1", 1, "succeeded")
    assert world.tick() == [("M2", 1)]


@pytest.mark.parametrize(
    "code",
    ["vehicle_function", "personal_data", "outside_fault", "bad_signature", "unknown_key", "other_vehicle"],
)
def test_given_up_when_retrying_cannot_help(world: World, code: str) -> None:
    world.send()
    world.tick()
    world.answer("M1", 1, "rejected", code)
    world.clock.advance(10_000)
    assert world.tick() == []
    assert world.state() == MeasureState.ABANDONED
    measure = world.store.get("M1")
    assert measure is not None
    assert code in (measure.reason or "")


def test_given_up_after_max_attempts(world: World) -> None:
    world.send(max_attempts=2)
    for attempt in (1, 2):
        assert world.tick() == [("M1", attempt)]
        world.answer("M1", attempt, "rolled_back", "ecall")
        world.clock.advance(10_000)
    assert world.tick() == []
    assert world.state() == MeasureState.ABANDONED


def test_expires_at_its_deadline(world: World) -> None:
    world.send(deadline=timedelta(hours=1))
    world.tick()
    world.answer("M1", 1, "rolled_back", "ecall")
    world.clock.advance(3600)
    assert world.tick() == []
    assert world.state() == MeasureState.EXPIRED


def test_unanswered_attempt_is_counted_lost_and_retried(world: World) -> None:
    world.send()
    world.tick()
    world.clock.advance(900)
    assert world.tick() == []  # marks attempt 1 lost, schedules the retry
    assert world.store.history("M1")[0].status == "lost"
    world.clock.advance(61)
    assert world.tick() == [("M1", 2)]
    world.answer("M1", 1, "succeeded")  # the late answer to the lost attempt changes nothing
    assert world.state() == MeasureState.PENDING


def test_duplicate_results_are_counted_once(world: World) -> None:
    world.send()
    world.tick()
    world.answer("M1", 1, "rolled_back", "lock_or_unlock")
    world.answer("M1", 1, "succeeded")
    assert world.state() == MeasureState.PENDING
    assert world.store.history("M1")[0].status == "rolled_back"


def test_lost_attempt_of_another_measure_on_the_vehicle_waits_its_backoff(world: World) -> None:
    world.send("M1")
    assert world.tick() == [("M1", 1)]
    world.answer("M1", 1, "rolled_back", "lock_or_unlock")  # M1 waits 60 s
    world.send("M2")
    assert world.tick() == [("M2", 1)]
    world.clock.advance(900)  # M2's attempt gets no answer
    assert world.tick() == []  # found lost while looking at M1; M2 is rescheduled, not resent at once
    assert world.store.history("M2")[0].status == "lost"
    assert world.tick() == [("M1", 2)]


def _steps(*durations_ms: int) -> tuple[MeasureStep, ...]:
    keys = ("gateway.firewall_rules", "gateway.ids_signatures")
    return tuple(MeasureStep(changes={key: "new"}, expected_ms=ms) for key, ms in zip(keys, durations_ms, strict=False))


@pytest.mark.parametrize(
    ("changes", "kwargs", "reason"),
    [
        ({"ecall.enabled": False}, {}, r"\(vehicle_function\).*vehicle function 'ecall'"),
        ({"brakes.abs_calibration": "A4"}, {}, r"vehicle function 'brakes'.*AGB 3.4 a"),
        ({"lights.adaptive_beam_map": "X"}, {}, r"vehicle function 'lights'.*even a brief failure"),
        ({"gateway.firewall_rules": "v13"}, {"impairs": ("6AP", "engine_start")}, r"impair the vehicle function"),
        ({"personal.seat_memory": 2}, {}, r"\(personal_data\).*personal settings.*AGB 3.4 d"),
        ({"telematics.apn": "x"}, {}, r"\(outside_fault\).*'telematics', not 'gateway'.*AGB 3.4 c"),
        ({"no.such.key": 1}, {}, "unknown configuration key"),
        ({"gateway.firewall_rules": 13}, {}, "takes a str value"),
        ({"navigation.traffic_feed_enabled": 1}, {"fault": Fault(ref="T", service="navigation")}, "takes a bool"),
        ({"gateway.firewall_rules": 2**64}, {}, "an integer outside 64 bits"),
        ({"gateway.firewall_rules": "v13"}, {"deadline": timedelta(days=3_000_000)}, "past the year 9999"),
        ({"gateway.firewall_rules": "v13"}, {"fault": Fault(ref="", service="gateway")}, "fault.ref must be 1 to"),
        ({"gateway.firewall_rules": "v13"}, {"fault": Fault(ref="T", service="warp")}, r"\(unknown_service\)"),
        ({"gateway.firewall_rules": "v13"}, {"fault": Fault(ref="T", service="airbag")}, r"vehicle function 'airbag'"),
        ({}, {"steps": ()}, "steps must be 1 to 64 steps"),
        ({}, {"steps": _steps(600_001)}, "expected_ms must be an integer in 0..600000"),
        ({}, {"steps": _steps(True)}, "expected_ms must be an integer in 0..600000, got True"),
        ({}, {"steps": _steps(1.5)}, "expected_ms must be an integer"),  # type: ignore[arg-type]
        ({}, {"steps": _steps(-1)}, "expected_ms must be an integer"),
        ({}, {"steps": _steps(300_000, 300_001)}, r"\(over_cap\).*600.001 s in all, more than the 600 s"),
    ],
)
def test_the_backend_refuses_to_plan_what_the_vehicle_would_refuse(
    world: World, changes: dict[str, Any], kwargs: dict[str, Any], reason: str
) -> None:
    """Judged at `send`, before anything is stored or published, with a reason a person can act on."""
    plan = {"steps": one_step_per_change(changes, expected_ms=1000)} if changes else {}
    with pytest.raises(MeasureRefusedError, match=reason):
        world.send(**{**plan, **kwargs})
    assert world.store.get("M1") is None
    assert world.tick() == []


@pytest.mark.parametrize("durations_ms", [(599_999,), (600_000,), (300_000, 300_000), (0, 600_000)])
def test_a_plan_of_at_most_ten_minutes_is_sent(world: World, durations_ms: tuple[int, ...]) -> None:
    world.send(steps=_steps(*durations_ms))
    assert world.tick() == [("M1", 1)]
    assert [s.expected_ms for s in world.sent[0].steps] == list(durations_ms)


def test_the_backend_and_the_vehicle_apply_one_key_rule(world: World) -> None:
    """Every key of the vehicle's table: the backend plans exactly what the vehicle accepts."""
    for index, (key, spec) in enumerate(load_key_specs().items()):
        fault = Fault(ref="T", service=spec.owner or "navigation")
        try:
            world.send(f"M{index}", fault=fault, steps=one_step_per_change({key: spec.default}, expected_ms=0))
        except MeasureRefusedError:
            assert spec.key_class is not KeyClass.SERVICE
        else:
            assert spec.key_class is KeyClass.SERVICE


def test_a_stored_measure_the_vehicle_would_refuse_is_abandoned_not_signed(world: World) -> None:
    """Written by an older backend (or by hand) before the check existed."""
    world.send()
    measure = world.store.get("M1")
    assert measure is not None
    steps = one_step_per_change({"ecall.enabled": False}, expected_ms=0)
    world.store.add(replace(measure, measure_id="M2", vin=OTHER_VIN, steps=steps))
    assert world.tick() == [("M1", 1)]
    state = world.store.get("M2")
    assert state is not None
    assert state.state == MeasureState.ABANDONED
    assert "would refuse it (vehicle_function)" in (state.reason or "")


@pytest.mark.parametrize(
    "body",
    [
        {"measure_id": "M1", "attempt": True, "status": "succeeded"},
        {"measure_id": "M1", "attempt": 2**64, "status": "succeeded"},
        {"measure_id": "M1", "attempt": 10**5000, "status": "succeeded"},
        {"measure_id": "M1", "attempt": 7, "status": "succeeded"},  # never sent
        {"measure_id": "M1", "attempt": 1.0, "status": "succeeded"},
        {"measure_id": 10**5000, "attempt": 1, "status": "succeeded"},
        {"measure_id": ["M1"], "attempt": 1, "status": "succeeded"},
        {"measure_id": "M1", "attempt": 1, "status": 5},
        {"measure_id": "?", "attempt": None, "status": "rejected", "code": "bad_signature"},
    ],
)
def test_an_answer_that_names_no_attempt_we_sent_is_logged_only(world: World, body: dict[str, Any]) -> None:
    world.send()
    world.tick()
    world.scheduler.on_record(
        ReceivedRecord(
            vin=VIN, seq=1, kind=RecordKind.EVENT, created=world.clock.now(), body={"type": "measure_result", **body}
        )
    )
    assert world.state() == MeasureState.PENDING
    assert world.store.history("M1")[0].status == "sent"


def test_odd_codes_reasons_and_durations_are_stored_safely(world: World) -> None:
    world.send()
    world.tick()
    world.answer("M1", 1, "rolled_back", code=None, impaired={"seconds": float("nan")})  # type: ignore[arg-type]
    [attempt] = world.store.history("M1")
    assert (attempt.status, attempt.impaired_s) == ("rolled_back", None)
    world.clock.advance(10_000)
    world.tick()
    world.scheduler.on_record(
        ReceivedRecord(
            vin=VIN,
            seq=2,
            kind=RecordKind.EVENT,
            created=world.clock.now(),
            body={
                "type": "measure_result",
                "measure_id": "M1",
                "attempt": 2,
                "status": "rolled_back",
                "code": {"x": 1},
                "reason": "r" * 100_000,
                "impaired": {"seconds": 10**5000},
            },
        )
    )
    attempt = world.store.history("M1")[1]
    assert (attempt.code, len(attempt.reason or ""), attempt.impaired_s) == (None, 1000, None)
