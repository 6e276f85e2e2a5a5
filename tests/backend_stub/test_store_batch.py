"""`add_records`, the record store's batch insert (one statement on PostgreSQL): each record stored as
`add_record` would store it one by one, all or none. Run on SQLite and on PostgreSQL (`open_store`)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest

from backend_stub.errors import UnstorableError
from backend_stub.store import Added, BackendStore
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis
from tests.backend_stub.conftest import OpenStore
from tests.conftest import OTHER_VIN, VIN

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
SPEED = "Vehicle.Speed"


def _record(
    seq: int, speed: object, *, vin: str = VIN, epoch: bytes = b"q1", kind: RecordKind = RecordKind.TELEMETRY
) -> ReceivedRecord:
    body = {"signals": {SPEED: {"v": speed, "t": to_millis(NOW)}}}
    return ReceivedRecord(vin=vin, seq=seq, kind=kind, epoch=epoch, created=NOW, body=body)


def _enrolled(open_store: OpenStore) -> BackendStore:
    store = open_store()
    for vin in (VIN, OTHER_VIN):
        store.enroll(vin, b"k" * 32, NOW)
    return store


def _state(store: BackendStore) -> tuple[object, ...]:
    return tuple(
        (store.seqs(vin, epoch), store.last_values(vin), [(e.epoch, e.ordinal) for e in store.epochs(vin)])
        for vin in (VIN, OTHER_VIN)
        for epoch in (b"q1", b"q2")
    )


def test_a_batch_is_stored_as_its_records_one_by_one(open_store: OpenStore) -> None:
    earlier = [_record(1, 10.0), _record(1, 50.0, vin=OTHER_VIN)]
    # Out of key order on purpose; a duplicate of a stored record, one repeated inside the batch, a new
    # epoch, an event, a signal that is no reading, and a vehicle's older record after its newer one.
    batch = [
        _record(3, 30.0),
        _record(1, 11.0),
        _record(2, 51.0, vin=OTHER_VIN),
        _record(2, 20.0),
        _record(2, 21.0),
        _record(1, 70.0, epoch=b"q2", vin=OTHER_VIN),
        _record(4, 40.0, kind=RecordKind.EVENT),
        _record(5, {"not": "a reading"}),
    ]
    with contextlib.closing(_enrolled(open_store)) as one_by_one:
        with one_by_one.transaction():
            for record in earlier:
                one_by_one.add_record(record, NOW)
        with one_by_one.transaction():
            expected = [one_by_one.add_record(record, NOW) for record in batch]
        expected_state = _state(one_by_one)
        for table in ("records", "last_values", "epochs"):  # the same database again, for the batch
            one_by_one._db.execute(f"DELETE FROM {table}")

    with contextlib.closing(open_store()) as batched:
        with batched.transaction():
            assert batched.add_records(earlier, NOW) == [Added(new=True, new_epoch=True)] * 2
        with batched.transaction():
            added = batched.add_records(batch, NOW)
        assert added == expected
        assert _state(batched) == expected_state

    assert [a.new for a in added] == [True, False, True, True, False, True, True, True]
    assert added[5].new_epoch  # what the comparison covers is really there
    assert added[7].skipped


def test_a_batch_holding_an_unstorable_record_stores_none_of_it(open_store: OpenStore) -> None:
    with contextlib.closing(_enrolled(open_store)) as store:
        with store.transaction():
            store.add_record(_record(1, 10.0), NOW)
            with pytest.raises(UnstorableError):
                store.add_records([_record(2, 20.0, epoch=b"q2"), _record(0, 30.0)], NOW)  # seq 0: never stored
            store.add_record(_record(3, 40.0, epoch=b"q2"), NOW)
        assert store.seqs(VIN, b"q1") == [1]
        assert store.seqs(VIN, b"q2") == [3]
        assert store.last_value(VIN, SPEED) == 40.0
        assert store.epochs(VIN)[-1].first_seq == 3  # q2 registered by record 3, not by the refused batch


def test_an_empty_batch_stores_nothing(open_store: OpenStore) -> None:
    with contextlib.closing(_enrolled(open_store)) as store, store.transaction():
        assert store.add_records([], NOW) == []
