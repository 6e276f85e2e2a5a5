"""Queue epochs: a re-flashed car (or a second agent on one VIN) loses nothing at the backend."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import cbor2
import pytest
from nacl.public import Box, PrivateKey

from backend_stub.ingest import Ingest
from backend_stub.provisioning_history import CapabilityReport, ResultStatus, VehicleResult
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.query_cli import query_store
from backend_stub.store import BackendStore
from tcu.clock import ManualClock
from telematics_wire.envelope import open_ack, seal_record
from telematics_wire.records import Record, RecordKind, to_millis
from tests.conftest import VIN

OLD = bytes(range(16))
NEW = bytes(range(100, 116))


@pytest.fixture
def store(tmp_path: Path) -> BackendStore:
    backend_store = BackendStore(tmp_path / "backend.sqlite3")
    yield backend_store
    backend_store.close()


@pytest.fixture
def ingest(store: BackendStore, backend_key: PrivateKey, vehicle_key: PrivateKey, clock: ManualClock) -> Ingest:
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    return Ingest(store, backend_key, clock, 64 * 1024)


def _speed(clock: ManualClock, value: float, *, stamp_offset_s: float = 0) -> Record:
    stamp = to_millis(clock.now() + timedelta(seconds=stamp_offset_s))
    return Record(
        kind=RecordKind.TELEMETRY, created=clock.now(), body={"signals": {"Vehicle.Speed": {"v": value, "t": stamp}}}
    )


def _deliver(ingest: Ingest, store: BackendStore, payloads: list[bytes]) -> list[bytes]:
    with store.transaction():
        for payload in payloads:
            ingest.handle(f"vehicles/{VIN}/up/records", payload)
    return [ack for _, ack in ingest.take_acks()]


def test_a_reflashed_car_starting_again_at_seq_one_is_stored_not_taken_for_resends(
    ingest: Ingest, store: BackendStore, vehicle_box: Box, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, seq, _speed(clock, seq), epoch=OLD) for seq in (1, 2, 3)])
    with caplog.at_level(logging.WARNING):
        acks = _deliver(
            ingest, store, [seal_record(vehicle_box, VIN, seq, _speed(clock, 100 + seq), epoch=NEW) for seq in (1, 2)]
        )
    assert ingest.stats.stored == 5
    assert ingest.stats.duplicates == 0
    assert [(e.epoch, e.ordinal, e.first_seq) for e in store.epochs(VIN)] == [(OLD, 1, 1), (NEW, 2, 1)]
    assert "new queue epoch" in caplog.text
    assert store.seqs(VIN) == [1, 2]  # the current epoch
    assert store.seqs(VIN, OLD) == [1, 2, 3]
    (ack,) = acks
    opened = open_ack(vehicle_box, ack, vin=VIN)
    assert (opened.epoch, opened.seqs) == (NEW, frozenset({1, 2}))
    assert store.last_value(VIN, "Vehicle.Speed") == 102


def test_a_replay_of_the_old_queue_is_acknowledged_in_its_own_epoch_and_not_stored_again(
    ingest: Ingest, store: BackendStore, vehicle_box: Box, clock: ManualClock
) -> None:
    old = seal_record(vehicle_box, VIN, 2, _speed(clock, 2), epoch=OLD)
    _deliver(ingest, store, [old, seal_record(vehicle_box, VIN, 1, _speed(clock, 7), epoch=NEW)])
    (ack,) = _deliver(ingest, store, [old])
    opened = open_ack(vehicle_box, ack, vin=VIN)
    assert (opened.epoch, opened.seqs, ingest.stats.duplicates) == (OLD, frozenset({2}), 1)
    assert store.last_value(VIN, "Vehicle.Speed") == 7  # the older epoch's value does not come back


def test_last_values_follow_the_vehicles_order_not_its_clock(
    ingest: Ingest, store: BackendStore, vehicle_box: Box, clock: ManualClock
) -> None:
    # The car's clock jumps two days ahead, then is corrected: the later record must still win.
    ahead = seal_record(vehicle_box, VIN, 1, _speed(clock, 50, stamp_offset_s=48 * 3600), epoch=OLD)
    _deliver(ingest, store, [ahead])
    assert store.last_value(VIN, "Vehicle.Speed") == 50  # a clock ahead is no reason to refuse the reading
    corrected = seal_record(vehicle_box, VIN, 2, _speed(clock, 30), epoch=OLD)
    _deliver(ingest, store, [ahead, corrected])
    assert store.last_value(VIN, "Vehicle.Speed") == 30
    # A backlog drained late (lower seq, same epoch) never overwrites a fresher value.
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, 3, _speed(clock, 31), epoch=OLD)])
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, 2, _speed(clock, 99), epoch=OLD)])
    assert store.last_value(VIN, "Vehicle.Speed") == 31


def test_a_store_from_before_epochs_migrates_into_the_legacy_epoch(
    tmp_path: Path, vehicle_key: PrivateKey, backend_key: PrivateKey, vehicle_box: Box, clock: ManualClock
) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            """CREATE TABLE vehicles (vin TEXT PRIMARY KEY, public_key BLOB NOT NULL, enrolled_ms INTEGER NOT NULL,
                   online INTEGER, status_ms INTEGER);
               CREATE TABLE records (vin TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
                   created_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, body BLOB NOT NULL,
                   PRIMARY KEY (vin, seq)) WITHOUT ROWID;
               CREATE INDEX records_by_time ON records (vin, created_ms);
               CREATE TABLE last_values (vin TEXT NOT NULL, path TEXT NOT NULL, value BLOB NOT NULL,
                   ts_ms INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (vin, path)) WITHOUT ROWID;"""
        )
        db.execute("INSERT INTO vehicles VALUES (?, ?, 0, NULL, NULL)", (VIN, bytes(vehicle_key.public_key)))
        db.executemany(
            "INSERT INTO records VALUES (?, ?, 'telemetry', 0, 0, ?)",
            [(VIN, seq, cbor2.dumps({"n": seq})) for seq in (1, 2)],
        )
        db.execute("INSERT INTO last_values VALUES (?, 'Vehicle.Speed', ?, 0, 2)", (VIN, cbor2.dumps(12.0)))
    store = BackendStore(path)
    try:
        assert store.seqs(VIN) == [1, 2]
        assert [(e.epoch, e.ordinal) for e in store.epochs(VIN)] == [(b"", 0)]
        ingest = Ingest(store, backend_key, clock, 64 * 1024)
        _deliver(ingest, store, [seal_record(vehicle_box, VIN, 2, _speed(clock, 5))])  # a legacy resend
        assert (ingest.stats.duplicates, store.last_value(VIN, "Vehicle.Speed")) == (1, 12.0)
        _deliver(ingest, store, [seal_record(vehicle_box, VIN, 1, _speed(clock, 6), epoch=NEW)])
        assert store.last_value(VIN, "Vehicle.Speed") == 6  # any epoch outranks the legacy queue
    finally:
        store.close()


def test_the_cli_lists_a_vehicles_epochs(
    ingest: Ingest, store: BackendStore, vehicle_box: Box, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, 1, _speed(clock, 1), epoch=OLD)])
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, seq, _speed(clock, 2), epoch=NEW) for seq in (1, 2)])
    query_store(argparse.Namespace(command="epochs", vin=VIN, json=True), store)
    rows = json.loads(capsys.readouterr().out)
    assert [(row["epoch"], row["ordinal"], row["records"]) for row in rows] == [(OLD.hex(), 1, 1), (NEW.hex(), 2, 2)]


def _result(epoch: bytes, seq: int, clock: ManualClock) -> VehicleResult:
    return VehicleResult(
        vin=VIN,
        epoch=epoch,
        seq=seq,
        created=clock.now(),
        received=clock.now(),
        version=None,
        status=ResultStatus.APPLIED,
    )


def test_provisioning_results_of_a_reflashed_car_are_booked_under_their_own_epoch(
    tmp_path: Path, clock: ManualClock
) -> None:
    store = ProvisioningStore(tmp_path / "backend.sqlite3")
    try:
        assert store.record_result(_result(OLD, 3, clock)) is not None
        assert store.record_result(_result(NEW, 3, clock)) is not None  # same seq, new queue: a new event
        assert store.record_result(_result(NEW, 3, clock)) is None  # a resend of it is not
        report = {"type": "capabilities"}
        later = clock.now() + timedelta(seconds=5)
        old = CapabilityReport(vin=VIN, ordinal=1, seq=50, created=clock.now(), received=clock.now(), report=report)
        new = CapabilityReport(vin=VIN, ordinal=2, seq=1, created=later, received=later, report=report)
        assert store.set_capabilities(old)
        assert store.set_capabilities(new)  # the re-flashed car's first report is its newest
        assert not store.set_capabilities(old)
        stored = store.capabilities(VIN)
        assert stored is not None
        assert (stored.ordinal, stored.seq) == (2, 1)
    finally:
        store.close()


def test_a_provisioning_store_from_before_epochs_migrates(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "backend.sqlite3"
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            """CREATE TABLE provisioning_results (vin TEXT NOT NULL, seq INTEGER NOT NULL, created_ms INTEGER NOT NULL,
                   received_ms INTEGER NOT NULL, version INTEGER, status TEXT NOT NULL, code TEXT, reason TEXT,
                   attributed INTEGER, PRIMARY KEY (vin, seq)) WITHOUT ROWID;
               CREATE TABLE capability_reports (vin TEXT PRIMARY KEY, seq INTEGER NOT NULL,
                   created_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, report BLOB NOT NULL);"""
        )
        db.execute("INSERT INTO provisioning_results VALUES (?, 3, 0, 0, NULL, 'applied', NULL, NULL, NULL)", (VIN,))
        db.execute("INSERT INTO capability_reports VALUES (?, 9, 0, 0, ?)", (VIN, cbor2.dumps({"n": 1})))
    store = ProvisioningStore(path)
    try:
        assert [(r.epoch, r.seq) for r in store.results(VIN)] == [(b"", 3)]
        assert store.record_result(_result(b"", 3, clock)) is None  # the legacy resend stays a resend
        stored = store.capabilities(VIN)
        assert stored is not None
        assert (stored.ordinal, stored.seq) == (0, 9)
    finally:
        store.close()


def test_a_second_agent_that_once_used_the_vin_cannot_freeze_the_cars_last_values(
    ingest: Ingest, store: BackendStore, vehicle_box: Box, clock: ManualClock
) -> None:
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, 50, _speed(clock, 50), epoch=OLD)])
    clock.advance(1)
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, 1, _speed(clock, 1), epoch=NEW)])  # a bench agent
    clock.advance(1)
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, 51, _speed(clock, 51), epoch=OLD)])  # the car again
    assert store.last_value(VIN, "Vehicle.Speed") == 51


def test_an_epoch_first_seen_in_a_batch_that_failed_is_registered_again(
    ingest: Ingest, store: BackendStore, vehicle_box: Box, clock: ManualClock
) -> None:
    def failed_batch() -> None:
        with store.transaction():  # the batch COMMIT fails, e.g. a full disk
            for seq in (1, 2):
                payload = seal_record(vehicle_box, VIN, seq, _speed(clock, seq), epoch=NEW)
                ingest.handle(f"vehicles/{VIN}/up/records", payload)
            raise RuntimeError("commit failed")

    with pytest.raises(RuntimeError):
        failed_batch()
    ingest.forget_acks()
    _deliver(ingest, store, [seal_record(vehicle_box, VIN, seq, _speed(clock, seq), epoch=NEW) for seq in (1, 2)])
    assert [e.epoch for e in store.epochs(VIN)] == [NEW]
    assert store.seqs(VIN) == [1, 2]
