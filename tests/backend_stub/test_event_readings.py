"""A vehicle event's readings become last values in the vehicle's order; a hostile event body is stored
and named, never a crash nor a last value (backend_stub.event_readings through BackendStore)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend_stub.event_readings import event_signals
from backend_stub.store import BackendStore
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis
from tests.conftest import VIN

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
DOOR = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BackendStore]:
    opened = BackendStore(tmp_path / "backend.sqlite3")
    opened.enroll(VIN, b"k" * 32, NOW)
    yield opened
    opened.close()


def _add(store: BackendStore, seq: int, body: dict[str, Any], kind: RecordKind = RecordKind.EVENT) -> tuple[str, ...]:
    record = ReceivedRecord(vin=VIN, seq=seq, kind=kind, epoch=b"q", created=NOW, body=body)
    with store.transaction():
        added = store.add_record(record, NOW)
    assert added.new
    return added.skipped


def test_a_door_event_transmits_its_signal_at_its_changed_at() -> None:
    assert event_signals({"type": "door", "path": DOOR, "value": True, "changed_at": 5}) == {DOOR: {"v": True, "t": 5}}


def test_events_and_snapshots_take_turns_in_the_vehicles_order(store: BackendStore) -> None:
    stamp = to_millis(NOW)
    _add(store, 1, {"signals": {DOOR: {"v": False, "t": stamp}}}, RecordKind.TELEMETRY)
    _add(store, 2, {"type": "door", "path": DOOR, "value": True, "previous": False, "changed_at": stamp + 10})
    assert store.last_value(VIN, DOOR) is True
    _add(store, 3, {"signals": {DOOR: {"v": False, "t": stamp + 20}}}, RecordKind.TELEMETRY)
    assert store.last_value(VIN, DOOR) is False
    parked = {"Vehicle.CurrentLocation.Latitude": {"v": 48.1, "t": stamp + 30}}
    _add(store, 4, {"type": "parked_position", "trigger": "parked", "position": parked})
    due = {"Vehicle.Service.DistanceToService": {"v": -3, "t": stamp + 40}}
    _add(store, 5, {"type": "service_call", "item": "oil", "due": [], "readings": due})
    _add(store, 6, {"type": "lock", "path": "Vehicle.Body.CentralLock.State", "value": "LOCKED", "changed_at": stamp})
    assert store.last_value(VIN, "Vehicle.CurrentLocation.Latitude") == 48.1
    assert store.last_value(VIN, "Vehicle.Service.DistanceToService") == -3
    assert store.last_value(VIN, "Vehicle.Body.CentralLock.State") == "LOCKED"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "door", "path": DOOR, "value": {"deep": [[[]]]}, "changed_at": 1},
        {"type": "door", "path": DOOR, "value": 2**70, "changed_at": 1},
        {"type": "door", "path": DOOR, "value": True},  # no changed_at
        {"type": "door", "path": DOOR, "value": True, "changed_at": 2**64},  # past year 9999
        {"type": "lock", "path": "x" * 10_000, "value": "LOCKED", "changed_at": 1},
        {"type": "parked_position", "position": [1, 2]},
        {"type": "service_call", "readings": {"p": "not a reading"}},
    ],
    ids=["nested value", "bignum", "no time", "far future", "huge path", "position list", "bad readings"],
)
def test_a_hostile_event_is_stored_and_named_but_moves_no_value(store: BackendStore, body: dict[str, Any]) -> None:
    skipped = _add(store, 1, body)
    assert store.last_values(VIN) == []
    assert len(store.records(VIN)) == 1
    assert all(len(reason) < 500 for reason in skipped)


@pytest.mark.parametrize(
    "body",
    [{"type": 7, "path": DOOR}, {"type": "door", "path": 7}, {"type": "capabilities_changed"}, {}],
)
def test_a_body_without_readings_carries_none(body: dict[str, Any]) -> None:
    assert event_signals(body) is None
