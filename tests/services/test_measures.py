"""Remote measures on the vehicle: preconditions, the plan rule on receipt, the 10-minute cap, every
interruption, exact rollback."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Self

import pytest
from nacl.signing import SigningKey

from tcu.clock import ManualClock
from tcu.services.ecu_config import EcuConfiguration
from tcu.services.measure_attempt import Interruption, MeasureAttempt
from tcu.services.measure_journal import InProgress, MeasureJournal
from tcu.services.measures import SCHEDULING_TOLERANCE_REAL_S, MeasureEngine
from tcu.services.personal import DriverProfile, PersonalData, PersonalStore
from tcu.vehicle.state import Signal, VehicleState
from telematics_wire.ecu_keys import KeyClass, KeySpec, load_key_specs
from telematics_wire.measure_order import MeasureCategory, MeasureOrder, sign_order
from telematics_wire.measure_plan import Fault, MeasureStep, one_step_per_change
from telematics_wire.records import Record, to_millis
from telematics_wire.vehicle_mode import VehicleMode
from tests.conftest import OTHER_VIN, VIN
from tests.settle import settle

KEY = SigningKey(bytes(range(32)))
CHANGES = {"navigation.traffic_feed": "rtti-v3", "navigation.poi_database": "2026-Q1"}
FAULT = Fault(ref="TICKET-4711 no traffic information", service="navigation")


# What a test does at a step of the fake time (Bench.sleep); a coroutine is awaited (a write to the disk).
StepHook = Callable[[int], Awaitable[None] | None]


class Bench:
    """Construct, then `await bench.start()` (it writes the car's starting state)."""

    def __init__(self, tmp_path: Path, clock: ManualClock) -> None:
        self.clock = clock
        self.state = VehicleState()
        self.set_signal("Vehicle.Mode", "parked")
        self.set_signal("Vehicle.Body.CentralLock.State", "UNLOCKED")
        self.set_signal("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked", True)
        self.ecu = EcuConfiguration(tmp_path / "ecu.cbor", load_key_specs())
        self.personal = PersonalStore(tmp_path / "personal.cbor")
        self.journal_path = tmp_path / "measures.cbor"
        self.reports: list[Record] = []
        self.coverage = True
        self.ecall = False
        self.on_step: StepHook = lambda _n: None
        self.steps = 0

    async def start(self) -> Self:
        await self.personal.save(PersonalData(profiles=(DriverProfile(name="Anna", seat_position=4),)))
        await self.ecu.set("personal.seat_memory", 4)
        self.engine = await self.new_engine()
        return self

    async def new_engine(self, sleep: Callable[[float], Awaitable[None]] | None = None) -> MeasureEngine:
        """The engine of a (re)booted agent: recovery has run."""
        engine = MeasureEngine(
            vin=VIN,
            verify_key=KEY.verify_key,
            ecu=self.ecu,
            journal=MeasureJournal(self.journal_path),
            state=self.state,
            clock=self.clock,
            report=self.reports.append,
            coverage=lambda: self.coverage,
            ecall_active=lambda: self.ecall,
            sleep=sleep or self.sleep,
        )
        await engine.recover()
        return engine

    async def sleep(self, seconds: float) -> None:
        """Fake time: the clock jumps, then the test's hook for this step runs."""
        self.clock.advance(seconds)
        self.steps += 1
        disturbance = self.on_step(self.steps)
        if inspect.isawaitable(disturbance):
            await disturbance
        await asyncio.sleep(0)

    def set_signal(self, path: str, value: object) -> None:
        self.state.update(Signal(path=path, value=value, timestamp=self.clock.now(), source="test"))  # type: ignore[arg-type]

    def order(
        self,
        *,
        attempt: int = 1,
        step_s: float = 1.0,
        changes: dict[str, object] | None = None,
        steps: tuple[MeasureStep, ...] | None = None,
        fault: Fault = FAULT,
        impairs: tuple[str, ...] = ("6AP",),
        states: frozenset[VehicleMode] = frozenset({VehicleMode.PARKED}),
        vin: str = VIN,
        key: SigningKey = KEY,
        deadline: timedelta = timedelta(days=7),
    ) -> bytes:
        return sign_order(
            MeasureOrder(
                vin=vin,
                measure_id="M-42",
                attempt=attempt,
                category=MeasureCategory.FAULT_FIX,
                fault=fault,
                allowed_states=states,
                steps=steps or one_step_per_change(changes or CHANGES, expected_ms=round(step_s * 1000)),  # type: ignore[arg-type]
                impairs=impairs,
                issued=self.clock.now(),
                deadline=self.clock.now() + deadline,
            ),
            key,
        )  # type: ignore[arg-type]

    async def run(self, message: bytes) -> dict[str, object]:
        await self.engine.receive(message)
        task = asyncio.create_task(self.engine.run())
        try:
            await settle(lambda: bool(self.reports) and self.engine.idle)
        finally:
            task.cancel()
        return self.reports[-1].body  # type: ignore[return-value]


@pytest.fixture
async def bench(tmp_path: Path, clock: ManualClock) -> Bench:
    return await Bench(tmp_path, clock).start()


async def test_a_measure_applies_its_changes_and_touches_nothing_personal(bench: Bench) -> None:
    personal_before = bench.personal.snapshot()
    result = await bench.run(bench.order(step_s=30))
    assert result["status"] == "succeeded"
    assert result["impaired"] == {"services": ["6AP"], "seconds": 60.0}
    values = bench.ecu.values
    assert {k: values[k] for k in CHANGES} == CHANGES
    assert values["personal.seat_memory"] == 4
    assert bench.personal.snapshot() == personal_before
    # Idempotent by measure id: a re-sent order changes nothing and says so.
    assert (await bench.run(bench.order(attempt=2)))["status"] == "already_applied"


@pytest.mark.parametrize(
    ("elapsed_s", "over"), [(599.999, False), (600.0, False), (600.001, True), (600.0004, False), (600.0006, True)]
)
@pytest.mark.parametrize("started", [0.0, 12_345.678])
def test_the_cap_forbids_more_than_ten_minutes(started: float, elapsed_s: float, over: bool) -> None:
    """AGB 3.4 d: "mehr als 10 Minuten" — 10:00 sharp is within the cap; measured in whole milliseconds."""
    attempt = MeasureAttempt(order=None, started=started)  # type: ignore[arg-type]
    assert attempt.over_cap(started + elapsed_s) is over


@pytest.mark.parametrize(
    ("overrun_s", "status"),
    [(0.099, "succeeded"), (0.1, "succeeded"), (0.101, "rolled_back")],
    ids=["599.999 s", "600 s", "600.001 s"],
)
async def test_an_attempt_ending_at_ten_minutes_sharp_is_within_the_cap(
    bench: Bench, overrun_s: float, status: str
) -> None:
    """Declared 300 s + 299.9 s; the second step overruns by 99, 100 or 101 ms (a slow ECU: more than
    the scheduling tolerance, so its real end counts), so the last change lands at 599.999 s, 600 s or
    600.001 s after the start."""
    config_before = bench.ecu.snapshot()
    bench.on_step = lambda n: bench.clock.advance(overrun_s) if n == 2 else None
    steps = (
        MeasureStep(changes={"navigation.traffic_feed": "rtti-v3"}, expected_ms=300_000),
        MeasureStep(changes={"navigation.poi_database": "2026-Q1"}, expected_ms=299_900),
    )
    result = await bench.run(bench.order(steps=steps))
    assert result["status"] == status
    assert result["impaired"] == {"services": ["6AP"], "seconds": round(599.9 + overrun_s, 3)}
    if status == "rolled_back":
        assert result["code"] == Interruption.TIME_CAP.value
        assert bench.ecu.snapshot() == config_before
    else:
        assert bench.ecu.values["navigation.poi_database"] == "2026-Q1"


async def test_a_step_that_cannot_end_within_the_cap_is_not_started(bench: Bench) -> None:
    """The first step overran by 51 ms, more than the scheduling tolerance: the second (300 s) would end
    at 600.051 s, so it never starts and the services are not impaired for its 300 s in vain."""
    bench.on_step = lambda n: bench.clock.advance(SCHEDULING_TOLERANCE_REAL_S + 0.001) if n == 1 else None
    steps = (
        MeasureStep(changes={"navigation.traffic_feed": "rtti-v3"}, expected_ms=300_000),
        MeasureStep(changes={"navigation.poi_database": "2026-Q1"}, expected_ms=300_000),
    )
    result = await bench.run(bench.order(steps=steps))
    assert (result["status"], result["code"]) == ("rolled_back", "time_cap")
    assert bench.steps == 1
    assert result["impaired"] == {"services": ["6AP"], "seconds": 300.051}


TEN_MINUTES = (
    MeasureStep(changes={"navigation.traffic_feed": "rtti-v3"}, expected_ms=300_000),
    MeasureStep(changes={"navigation.poi_database": "2026-Q1"}, expected_ms=300_000),
)


@pytest.mark.parametrize("late_s", [0.001, 0.004, SCHEDULING_TOLERANCE_REAL_S])
async def test_a_plan_of_exactly_ten_minutes_succeeds_on_a_loop_that_wakes_late(bench: Bench, late_s: float) -> None:
    """Every step's end is noticed a little late (the loop's scheduling, up to the tolerance): the steps
    still end on their schedule, so a plan of exactly 10:00 succeeds, impairing for exactly 600.000 s."""
    asked: list[float] = []

    async def late(seconds: float) -> None:
        asked.append(seconds)
        await bench.sleep(seconds + late_s)

    bench.engine = await bench.new_engine(sleep=late)
    started = bench.clock.now()
    result = await bench.run(bench.order(steps=TEN_MINUTES))
    assert result["status"] == "succeeded"
    assert result["impaired"] == {"services": ["6AP"], "seconds": 600.0}
    assert (result["started"], result["ended"]) == (to_millis(started), to_millis(started) + 600_000)
    # The second step was due 600 s after the start, not 300 s after the first was noticed ended.
    assert asked == [300.0, pytest.approx(300.0 - late_s)]
    assert {k: bench.ecu.values[k] for k in CHANGES} == CHANGES


async def test_a_last_step_overrunning_by_more_than_the_tolerance_is_aborted_at_the_cap(bench: Bench) -> None:
    """A plan of exactly 10:00 whose second step really runs 51 ms longer (a slow ECU, not a late loop)
    ends at 600.051 s: past the cap, rolled back."""
    config_before = bench.ecu.snapshot()
    bench.on_step = lambda n: bench.clock.advance(SCHEDULING_TOLERANCE_REAL_S + 0.001) if n == 2 else None
    result = await bench.run(bench.order(steps=TEN_MINUTES))
    assert (result["status"], result["code"]) == ("rolled_back", "time_cap")
    assert result["impaired"] == {"services": ["6AP"], "seconds": 600.051}
    assert bench.ecu.snapshot() == config_before


async def test_a_step_after_an_overrun_still_gets_its_declared_time(bench: Bench) -> None:
    """An ECU overrun (5 s) moves the schedule on: the next step is not cut short to catch up, its work
    takes its declared 100 s, and the services were impaired for 305 s."""
    asked: list[float] = []

    async def recorded(seconds: float) -> None:
        asked.append(seconds)
        await bench.sleep(seconds)

    bench.engine = await bench.new_engine(sleep=recorded)
    bench.on_step = lambda n: bench.clock.advance(5.0) if n == 1 else None
    result = await bench.run(bench.order(changes={**CHANGES, "navigation.map_region": "EU-2027"}, step_s=100))
    assert (result["status"], result["impaired"]) == ("succeeded", {"services": ["6AP"], "seconds": 305.0})
    assert asked == [100.0, pytest.approx(100.0), pytest.approx(100.0)]


@pytest.mark.parametrize("seed", range(5))
async def test_lateness_does_not_accumulate_across_64_steps(bench: Bench, tmp_path: Path, seed: int) -> None:
    """64 steps of 9.375 s (exactly 10:00), each noticed up to the tolerance late: 64 times that would be
    up to 3.2 s past the cap if each step were timed from the last one's noticed end."""
    rng = random.Random(seed)
    lateness = [rng.uniform(0.0, SCHEDULING_TOLERANCE_REAL_S) for _ in range(64)]
    lateness[0] = SCHEDULING_TOLERANCE_REAL_S  # at least one step at the very edge
    bench.on_step = lambda n: bench.clock.advance(lateness[n - 1])
    start = bench.clock.monotonic()
    # A plan changes each key once: an ECU with 64 navigation keys, one per step.
    keys = [f"navigation.tile_{i}" for i in range(64)]
    specs = {**load_key_specs(), **{key: KeySpec("v1", KeyClass.SERVICE, "navigation") for key in keys}}
    bench.ecu = EcuConfiguration(tmp_path / "ecu64.cbor", specs)
    bench.engine = await bench.new_engine()
    steps = tuple(MeasureStep(changes={key: "v2"}, expected_ms=9_375) for key in keys)
    result = await bench.run(bench.order(steps=steps))
    assert (result["status"], result["impaired"]) == ("succeeded", {"services": ["6AP"], "seconds": 600.0})
    assert bench.steps == 64
    assert all(bench.ecu.values[key] == "v2" for key in keys)
    # The loop's clock: the last step due at 600 s, noticed its own lateness after it, no more.
    assert bench.clock.monotonic() - start == pytest.approx(600.0 + lateness[-1])


@pytest.mark.parametrize(("second_ms", "answer"), [(300_000, "succeeded"), (300_001, "rejected")])
async def test_the_vehicle_judges_the_declared_duration_on_receipt(bench: Bench, second_ms: int, answer: str) -> None:
    """Defence in depth: a plan of 600.001 s is refused before anything runs, 600 s is accepted."""
    config_before = bench.ecu.snapshot()
    steps = (
        MeasureStep(changes={"navigation.traffic_feed": "rtti-v3"}, expected_ms=300_000),
        MeasureStep(changes={"navigation.poi_database": "2026-Q1"}, expected_ms=second_ms),
    )
    result = await bench.run(bench.order(steps=steps))
    assert result["status"] == answer
    if answer == "rejected":
        assert result["code"] == "over_cap"
        assert "600.001 s in all, more than the 600 s" in str(result["reason"])
        assert bench.ecu.snapshot() == config_before
        assert bench.steps == 0


def _lock(bench: Bench) -> None:
    bench.set_signal("Vehicle.Body.CentralLock.State", "LOCKED")


def _unlock_door(bench: Bench) -> None:
    bench.set_signal("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked", False)


def _drive(bench: Bench) -> None:
    bench.set_signal("Vehicle.Mode", "driving")


def _tunnel(bench: Bench) -> None:
    bench.coverage = False


def _crash(bench: Bench) -> None:
    bench.engine.interrupt(Interruption.ECALL)


async def _write_a_personal_key(bench: Bench) -> None:
    # A measure that somehow wrote a key outside its plan (the plan rule refuses personal keys on
    # receipt): not a success, and the rollback puts the ECU value back.
    await bench.ecu.set("personal.seat_memory", 0)


@pytest.mark.parametrize(
    ("disturb", "code"),
    [
        (_lock, "lock_or_unlock"),
        (_unlock_door, "lock_or_unlock"),
        (_drive, "vehicle_state_not_allowed"),
        (_tunnel, "coverage_lost"),
        (_crash, "ecall"),
        (_write_a_personal_key, "verification_failed"),
    ],
)
async def test_every_interruption_rolls_back_exactly(
    bench: Bench, disturb: Callable[[Bench], Awaitable[None] | None], code: str
) -> None:
    config_before, personal_before = bench.ecu.snapshot(), bench.personal.snapshot()
    bench.on_step = lambda n: disturb(bench) if n == 2 else None  # after the first change was applied
    result = await bench.run(bench.order(changes={**CHANGES, "navigation.map_region": "EU-2027"}))
    assert (result["status"], result["code"]) == ("rolled_back", code)
    assert isinstance(result["reason"], str)
    assert result["reason"]
    assert bench.ecu.snapshot() == config_before
    assert bench.personal.snapshot() == personal_before  # byte for byte
    assert (bench.journal_path.parent / "ecu.cbor").read_bytes() == config_before
    # The backend retries with the next attempt once the cause is gone.
    bench.coverage, bench.on_step = True, lambda _n: None
    bench.set_signal("Vehicle.Mode", "parked")
    assert (await bench.run(bench.order(attempt=2)))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("setup", "code", "reason"),
    [
        (
            lambda b: b.set_signal("Vehicle.Mode", "driving"),
            "vehicle_state_not_allowed",
            "the vehicle is driving; this measure runs only when parked",
        ),
        (lambda b: setattr(b, "ecall", True), "ecall", "an eCall is in progress"),
        (lambda b: setattr(b, "coverage", False), "coverage_lost", "no adequate cellular coverage"),
    ],
)
async def test_preconditions_keep_an_attempt_from_starting(bench: Bench, setup, code: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    config_before = bench.ecu.snapshot()
    setup(bench)
    result = await bench.run(bench.order())
    assert (result["status"], result["code"], result["reason"]) == ("not_started", code, reason)
    assert bench.ecu.snapshot() == config_before


async def test_lock_state_repeated_unchanged_is_no_interruption(bench: Bench) -> None:
    """Body ECUs send their state cyclically: the same value again is not a lock or an unlock."""
    bench.set_signal("Vehicle.Body.CentralLock.State", "LOCKED")
    bench.set_signal("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked", True)

    def repeat(_n: int) -> None:
        bench.set_signal("Vehicle.Body.CentralLock.State", "LOCKED")
        bench.set_signal("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked", True)

    bench.on_step = repeat
    assert (await bench.run(bench.order()))["status"] == "succeeded"


async def test_measure_allowed_while_living_or_driving_runs_then(bench: Bench) -> None:
    bench.set_signal("Vehicle.Mode", "driving")
    order = bench.order(states=frozenset({VehicleMode.LIVING, VehicleMode.DRIVING}))
    assert (await bench.run(order))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"key": SigningKey.generate()}, "bad_signature"),
        ({"vin": OTHER_VIN}, "other_vehicle"),
        ({"deadline": timedelta(seconds=-1)}, "expired"),
        ({"changes": {"brakes.abs_calibration": "B1"}}, "vehicle_function"),
        ({"changes": {"ecall.enabled": False}}, "vehicle_function"),
        ({"changes": {"powertrain.idle_stop_enabled": False}}, "vehicle_function"),
        ({"impairs": ("6AP", "lights")}, "vehicle_function"),
        ({"fault": Fault(ref="T-1", service="brakes"), "changes": {"navigation.map_region": "EU"}}, "vehicle_function"),
        ({"changes": {"personal.seat_memory": 0}}, "personal_data"),
        ({"changes": {"telematics.apn": "internet.fixed"}}, "outside_fault"),
        ({"fault": Fault(ref="T-1", service="teleportation")}, "unknown_service"),
        ({"changes": {"flux.capacitor": 1}}, "unknown_key"),
        ({"changes": {"navigation.traffic_feed_enabled": 1}}, "bad_value"),
    ],
)
async def test_bad_orders_are_refused_with_the_reason(bench: Bench, kwargs: dict[str, object], code: str) -> None:
    config_before = bench.ecu.snapshot()
    await bench.engine.receive(bench.order(**kwargs))  # type: ignore[arg-type]
    assert (bench.reports[-1].body["status"], bench.reports[-1].body["code"]) == ("rejected", code)
    assert bench.ecu.snapshot() == config_before


async def test_replayed_attempt_is_refused(bench: Bench) -> None:
    bench.coverage = False
    await bench.run(bench.order(attempt=3))  # not started: no coverage
    await bench.engine.receive(bench.order(attempt=3))
    await bench.engine.receive(bench.order(attempt=2))
    assert [r.body["code"] for r in bench.reports[-2:]] == ["replayed", "replayed"]


async def test_an_attempt_the_agent_died_in_is_rolled_back_at_boot(bench: Bench) -> None:
    config_before, personal_before = bench.ecu.snapshot(), bench.personal.snapshot()
    # What the disk holds after a kill in the middle of an attempt:
    await MeasureJournal(bench.journal_path).begin(InProgress(measure_id="M-42", attempt=1, config=config_before))
    await bench.ecu.set("gateway.firewall_rules", "half-written")
    await bench.new_engine()
    assert bench.ecu.snapshot() == config_before
    assert bench.personal.snapshot() == personal_before  # untouched (tests/services/test_measure_personal.py)
    assert (bench.reports[-1].body["status"], bench.reports[-1].body["code"]) == ("rolled_back", "agent_restarted")
    journal = MeasureJournal(bench.journal_path)
    journal.load()
    assert journal.in_progress is None
