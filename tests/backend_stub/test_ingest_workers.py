"""Several ingest workers on one database: each record stored once, last values in the vehicle's order,
and the records the backend's services book relayed to its process only once their batch committed."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.public import Box, PrivateKey

from backend_stub.config import load_backend_config
from backend_stub.errors import BackendConfigError
from backend_stub.ingest import Ingest
from backend_stub.ingest_worker import RelayingIngest
from backend_stub.store import BackendStore
from tcu.clock import ManualClock
from telematics_wire.envelope import open_ack, seal_record
from telematics_wire.records import Record, RecordKind, to_millis
from tests.conftest import VIN

RECORDS = f"vehicles/{VIN}/up/records"


@pytest.fixture
def database(tmp_path: Path, vehicle_key: PrivateKey, clock: ManualClock) -> Path:
    path = tmp_path / "backend.sqlite3"
    store = BackendStore(path)
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    store.close()
    return path


@pytest.fixture
def two_stores(database: Path) -> Iterator[tuple[BackendStore, BackendStore]]:
    """Two workers' connections to one database, as two processes have."""
    first, second = BackendStore(database), BackendStore(database)
    yield first, second
    first.close()
    second.close()


def _telemetry(clock: ManualClock, speed: float) -> Record:
    return Record(
        kind=RecordKind.TELEMETRY,
        created=clock.now(),
        body={"signals": {"Vehicle.Speed": {"v": speed, "t": to_millis(clock.now())}}},
    )


def _event(clock: ManualClock) -> Record:
    return Record(kind=RecordKind.EVENT, created=clock.now(), body={"type": "provisioning_result", "version": 1})


def _handle(ingest: Ingest, store: BackendStore, payload: bytes) -> list[tuple[str, bytes]]:
    with store.transaction():
        ingest.handle(RECORDS, payload)
    return ingest.take_acks()


def test_records_split_over_two_workers_keep_the_vehicles_order_and_are_stored_once(
    two_stores: tuple[BackendStore, BackendStore], backend_key: PrivateKey, vehicle_box: Box, clock: ManualClock
) -> None:
    first_store, second_store = two_stores
    first = Ingest(first_store, backend_key, clock, max_payload_bytes=64 * 1024)
    second = Ingest(second_store, backend_key, clock, max_payload_bytes=64 * 1024)
    newer = seal_record(vehicle_box, VIN, 3, _telemetry(clock, 80.0))
    older = seal_record(vehicle_box, VIN, 2, _telemetry(clock, 20.0))
    _handle(second, second_store, newer)  # the broker gave seq 3 to the faster worker
    clock.advance(0.5)
    _handle(first, first_store, older)  # seq 2 is committed later, by the other worker
    [resent_ack] = _handle(first, first_store, newer)  # a resend of seq 3 after a lost ack
    assert open_ack(vehicle_box, resent_ack[1], vin=VIN).seqs == {3}  # acknowledged again, by whoever got it
    assert first_store.seqs(VIN) == [2, 3]
    [value] = first_store.last_values(VIN)
    assert (value.value, value.seq) == (80.0, 3)  # the vehicle's own order, not the order of commits


def test_a_worker_relays_the_records_the_services_book_once_their_batch_committed(
    database: Path, backend_key: PrivateKey, vehicle_box: Box, clock: ManualClock
) -> None:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    store = BackendStore(database)
    ingest = RelayingIngest(store, backend_key, clock, 64 * 1024, relay=sender)
    with store.transaction():
        ingest.handle(RECORDS, seal_record(vehicle_box, VIN, 1, _telemetry(clock, 50.0)))
        ingest.handle(RECORDS, seal_record(vehicle_box, VIN, 2, _event(clock)))
        assert not receiver.poll()  # not before the commit: the batch may still roll back
    ingest.take_acks()
    relayed = receiver.recv()
    assert (relayed.seq, relayed.kind, relayed.body["type"]) == (2, RecordKind.EVENT, "provisioning_result")
    assert not receiver.poll()  # telemetry stays in the worker: no service books it
    store.close()


def test_a_batch_that_did_not_commit_relays_nothing(
    database: Path, backend_key: PrivateKey, vehicle_box: Box, clock: ManualClock
) -> None:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    store = BackendStore(database)
    ingest = RelayingIngest(store, backend_key, clock, 64 * 1024, relay=sender)

    def store_then_fail() -> None:
        with store.transaction():
            ingest.handle(RECORDS, seal_record(vehicle_box, VIN, 1, _event(clock)))
            raise RuntimeError("disk gone")  # what IngestService.store_batch answers with forget_acks

    with pytest.raises(RuntimeError):
        store_then_fail()
    ingest.forget_acks()
    with store.transaction():
        ingest.handle(RECORDS, seal_record(vehicle_box, VIN, 2, _telemetry(clock, 1.0)))
    ingest.take_acks()
    assert not receiver.poll()
    assert store.seqs(VIN) == [2]
    store.close()


def test_ingest_workers_must_be_at_least_one(tmp_path: Path) -> None:
    config = tmp_path / "backend.toml"
    config.write_text('database = "b.sqlite3"\n[keys]\nprivate_key = "k"\n[ingest]\nworkers = 0\n')
    with pytest.raises(BackendConfigError, match=r"ingest\.workers must be at least 1"):
        load_backend_config(config, env={})
