"""Remote measures planned before an attempt (AGB 3.4 a to d) and not retried blindly after the cap.

The backend refuses a plan the terms forbid before anything is stored or sent; the vehicle applies the
very same rule on receipt; an attempt aborted at the 10-minute cap leaves the measure waiting for a
person's new plan, while technical interruptions (AGB 3.6) are retried as before.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_stub.cli import main as backend_cli
from backend_stub.errors import MeasureRefusedError
from backend_stub.measure_store import MeasureState
from hil.layout import BenchLayout
from tcu.clock import ManualClock
from telematics_wire.ecu_keys import VEHICLE_FUNCTIONS, load_key_specs
from telematics_wire.errors import RejectedMessageError
from telematics_wire.measure_order import MeasureCategory, MeasureOrder, sign_order, verify_order
from telematics_wire.measure_plan import Fault, MeasureStep
from telematics_wire.vehicle_mode import VehicleMode
from tests.backend_stub.test_measures import KEY, World
from tests.conftest import VIN

SPECS = load_key_specs()


@pytest.fixture
def world(tmp_path: Path, clock: ManualClock) -> Iterator[World]:
    world = World(tmp_path / "backend.sqlite3", clock)
    yield world
    world.store.close()


def _measure(world: World, measure_id: str = "M1") -> Any:
    measure = world.store.get(measure_id)
    assert measure is not None
    return measure


def test_an_attempt_aborted_by_the_cap_is_not_retried_blindly(world: World) -> None:
    world.send()
    assert world.tick() == [("M1", 1)]
    world.answer("M1", 1, "rolled_back", "time_cap", impaired={"services": ["6AP"], "seconds": 600.0})
    world.clock.advance(86_400)  # online, parked, a day later: every retry condition holds
    assert world.tick() == []
    measure = _measure(world)
    assert measure.state == MeasureState.NEEDS_PLAN
    assert "attempt 1 ran into the 10-minute cap (AGB 3.4 d" in measure.reason
    assert "backend-stub measure replan M1 --step" in measure.reason


def test_a_vehicle_that_finds_the_plan_too_long_asks_for_a_new_plan(world: World) -> None:
    world.send()
    world.tick()
    world.answer("M1", 1, "rejected", "over_cap")
    world.clock.advance(86_400)
    assert world.tick() == []
    assert _measure(world).state == MeasureState.NEEDS_PLAN


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("rolled_back", "coverage_lost"),
        ("rolled_back", "lock_or_unlock"),
        ("rolled_back", "ecall"),
        ("rolled_back", "vehicle_state_not_allowed"),
        ("not_started", "vehicle_state_not_allowed"),
        ("not_started", "coverage_lost"),
        ("rolled_back", "agent_restarted"),
        ("rolled_back", "storage"),
    ],
)
def test_technical_interruptions_are_still_retried(world: World, status: str, code: str) -> None:
    """AGB 3.6: coverage, vehicle state, lock/unlock, eCall — the same plan is sent again."""
    world.send()
    world.tick()
    world.answer("M1", 1, status, code)
    world.clock.advance(3600)
    assert world.tick() == [("M1", 2)]
    assert _measure(world).state == MeasureState.PENDING


def test_a_person_replans_and_the_new_plan_is_sent_as_the_next_attempt(world: World) -> None:
    world.send()
    world.tick()
    world.answer("M1", 1, "rolled_back", "time_cap")
    shorter = (
        MeasureStep(changes={"gateway.firewall_rules": "v13"}, expected_ms=240_000),
        MeasureStep(changes={"gateway.ids_signatures": "2026-01"}, expected_ms=300_000),
    )
    world.scheduler.replan("M1", steps=shorter)
    measure = _measure(world)
    assert (measure.state, measure.steps) == (MeasureState.PENDING, shorter)
    assert measure.reason.startswith("re-planned: 2 step(s), 540 s (was: attempt 1 ran into the 10-minute cap")
    assert world.tick() == [("M1", 2)]  # attempt numbers go on: the vehicle's replay check holds
    assert world.sent[-1].steps == shorter
    world.answer("M1", 2, "succeeded")
    assert _measure(world).state == MeasureState.SUCCEEDED


def test_the_same_plan_goes_again_only_by_a_persons_decision(world: World) -> None:
    world.send(max_attempts=1)
    world.tick()
    world.answer("M1", 1, "rolled_back", "time_cap")
    world.scheduler.replan("M1", steps=None, max_attempts=2)
    measure = _measure(world)
    assert (measure.state, measure.max_attempts) == (MeasureState.PENDING, 3)
    assert measure.reason.startswith("re-sent unchanged by decision")
    assert world.tick() == [("M1", 2)]


def test_a_replan_is_judged_like_a_new_measure(world: World) -> None:
    world.send()
    world.tick()
    with pytest.raises(MeasureRefusedError, match="is pending: only a measure that needs a new plan"):
        world.scheduler.replan("M1", steps=None)
    world.answer("M1", 1, "rolled_back", "time_cap")
    too_long = (
        MeasureStep(changes={"gateway.firewall_rules": "v13"}, expected_ms=600_000),
        MeasureStep(changes={"gateway.ids_signatures": "2026-01"}, expected_ms=1),
    )
    with pytest.raises(MeasureRefusedError, match=r"\(over_cap\).*600.001 s in all"):
        world.scheduler.replan("M1", steps=too_long)
    with pytest.raises(MeasureRefusedError, match="no measure M9"):
        world.scheduler.replan("M9", steps=None)
    assert _measure(world).state == MeasureState.NEEDS_PLAN
    assert world.tick() == []


def test_a_measure_waiting_for_a_plan_still_expires(world: World) -> None:
    world.send(deadline=timedelta(hours=1))
    world.tick()
    world.answer("M1", 1, "rolled_back", "time_cap")
    world.clock.advance(3600)
    world.tick()
    measure = _measure(world)
    assert measure.state == MeasureState.EXPIRED
    assert "while it needed a new plan" in measure.reason


def test_a_measure_stored_before_plans_existed_is_abandoned_with_the_reason(tmp_path: Path) -> None:
    """The old table (changes + step_s, no fault) is migrated; its measure names no fault, so it is not sent."""
    path = tmp_path / "backend.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE measures (measure_id TEXT PRIMARY KEY, vin TEXT NOT NULL, category TEXT NOT NULL,
        allowed_states TEXT NOT NULL, changes BLOB NOT NULL, impairs TEXT NOT NULL, step_s REAL NOT NULL,
        created_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
        state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL, reason TEXT,
        waiting_for TEXT);"""
    )
    db.execute(
        "INSERT INTO measures VALUES ('OLD', ?, 'fault_fix', 'parked', ?, '', 2.5, 0, 9999999999999, 10, "
        "'pending', 0, 0, NULL, NULL)",
        (VIN, cbor2.dumps({"gateway.firewall_rules": "v13"})),
    )
    db.commit()
    db.close()
    clock = ManualClock()
    world = World(path, clock)
    try:
        old = _measure(world, "OLD")
        assert old.fault is None
        assert [(s.changes, s.expected_ms) for s in old.steps] == [({"gateway.firewall_rules": "v13"}, 2500)]
        assert world.tick() == []
        old = _measure(world, "OLD")
        assert old.state == MeasureState.ABANDONED
        assert "names no fault" in old.reason
        world.send("NEW")  # the migrated table takes planned measures
        assert world.tick() == [("NEW", 1)]
    finally:
        world.store.close()


# One rule, two places: whatever the backend decides at `send`, the vehicle decides the same on receipt.
_KEYS = sorted(SPECS)
_SERVICES = sorted({s.owner for s in SPECS.values() if s.owner} | {"warp"})
plans = st.fixed_dictionaries(
    {
        "service": st.sampled_from(_SERVICES),
        "steps": st.lists(
            st.tuples(
                st.lists(st.sampled_from(_KEYS), min_size=1, max_size=3, unique=True),
                st.sampled_from([0, 1, 299_999, 300_000, 300_001, 599_999, 600_000]) | st.integers(0, 600_000),
            ),
            min_size=1,
            max_size=4,
        ),
        "impairs": st.lists(st.sampled_from(["6AP", "6AM", *sorted(VEHICLE_FUNCTIONS)]), max_size=2),
        "wrong_type": st.booleans(),
    }
)


def _plan_steps(raw: list[tuple[list[str], int]], wrong_type: bool) -> tuple[MeasureStep, ...]:
    seen: set[str] = set()
    steps = []
    for keys, ms in raw:
        fresh = [k for k in keys if k not in seen]
        seen.update(fresh)
        if fresh:
            changes = {k: (1.5 if wrong_type else SPECS[k].default) for k in fresh}
            steps.append(MeasureStep(changes=changes, expected_ms=ms))
    return tuple(steps)


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = World(tmp_path_factory.mktemp("plans") / "backend.sqlite3", ManualClock())
    yield world
    world.store.close()


@settings(deadline=None, max_examples=300)
@given(plan=plans)
def test_the_backend_and_the_vehicle_judge_every_plan_alike(planner: World, plan: dict[str, Any]) -> None:
    clock = planner.clock
    fault = Fault(ref="T-1", service=plan["service"])
    steps = _plan_steps(plan["steps"], plan["wrong_type"])
    impairs = tuple(plan["impairs"])
    measure_id = f"M{len(planner.store.all())}"
    try:
        planner.send(measure_id, fault=fault, steps=steps, impairs=impairs)
        backend = None
    except MeasureRefusedError as exc:
        backend = str(exc)
    order = MeasureOrder(
        vin=VIN,
        measure_id=measure_id,
        attempt=1,
        category=MeasureCategory.FAULT_FIX,
        fault=fault,
        allowed_states=frozenset({VehicleMode.PARKED}),
        steps=steps,
        impairs=impairs,
        issued=clock.now(),
        deadline=clock.now() + timedelta(days=1),
    )
    try:
        verify_order(sign_order(order, KEY), KEY.verify_key, vin=VIN, now=clock.now(), specs=SPECS)
        vehicle = None
    except RejectedMessageError as exc:
        vehicle = exc.code, str(exc)
    if vehicle is None:
        assert backend is None
    else:
        assert backend is not None
        assert f"({vehicle[0]}): {vehicle[1]}" in backend


def test_the_command_line_plans_with_steps_and_refuses_with_the_reason(tmp_path: Path, capsys: Any) -> None:
    layout = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1")
    layout.create_backend()
    config = ["--config", str(layout.backend_config), "--json"]
    common = ["measure", "send", VIN, "--state", "parked", "--fault-ref", "TICKET-9", "--fault-service", "navigation"]
    too_long = ["--step", "300", "navigation.map_region=EU-2027", "--step", "300.001", "navigation.traffic_feed=v3"]
    assert backend_cli([*common, "--id", "M1", *too_long, *config]) == 2
    assert "600.001 s in all, more than the 600 s" in capsys.readouterr().err
    ten_minutes = ["--step", "300", "navigation.map_region=EU-2027", "--step", "300.000", "navigation.traffic_feed=v3"]
    assert backend_cli([*common, "--id", "M2", *ten_minutes, *config]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["id"], row["state"], row["steps"], row["planned"]) == ("M2", "pending", 2, "600 s")
    assert backend_cli([*common, "--id", "M3", "--step", "0.0001", "navigation.map_region=X", *config]) == 2
    assert "at most 3 decimals" in capsys.readouterr().err
    assert backend_cli(["measure", "replan", "M2", "--same-plan", *config]) == 2
    assert "is pending: only a measure that needs a new plan is re-planned" in capsys.readouterr().err
