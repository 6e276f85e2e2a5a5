from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import cbor2
import pytest
from nacl.public import Box, PrivateKey

from backend_stub.ingest import Ingest
from backend_stub.store import BackendStore
from tcu.clock import ManualClock
from telematics_wire.envelope import open_ack, seal_record
from telematics_wire.records import Record, RecordKind, to_millis
from tests.backend_stub.conftest import OpenStore
from tests.conftest import OTHER_VIN, VIN

RECORDS = f"vehicles/{VIN}/up/records"


@pytest.fixture
def store(open_store: OpenStore, vehicle_key: PrivateKey, clock: ManualClock) -> Iterator[BackendStore]:
    store = open_store()  # SQLite and PostgreSQL (tests/backend_stub/conftest.py)
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    yield store
    store.close()


@pytest.fixture
def ingest(store: BackendStore, backend_key: PrivateKey, clock: ManualClock) -> Ingest:
    return Ingest(store, backend_key, clock, max_payload_bytes=64 * 1024)


def _telemetry(clock: ManualClock, speed: float, at_offset_s: float = 0) -> Record:
    at = clock.now() + timedelta(seconds=at_offset_s)
    return Record(
        kind=RecordKind.TELEMETRY, created=at, body={"signals": {"Vehicle.Speed": {"v": speed, "t": to_millis(at)}}}
    )


def _handle(ingest: Ingest, store: BackendStore, topic: str, payload: bytes) -> None:
    with store.transaction():
        ingest.handle(topic, payload)


def test_record_is_stored_once_and_acknowledged(ingest, store, vehicle_box, clock) -> None:
    payload = seal_record(vehicle_box, VIN, 1, _telemetry(clock, 42.0))
    _handle(ingest, store, RECORDS, payload)
    [(topic, ack)] = ingest.take_acks()
    assert topic == f"vehicles/{VIN}/down/ack"
    assert open_ack(vehicle_box, ack, vin=VIN).seqs == {1}
    assert store.seqs(VIN) == [1]
    assert [(v.path, v.value) for v in store.last_values(VIN)] == [("Vehicle.Speed", 42.0)]


def test_replayed_sequence_number_is_stored_once_and_acknowledged_again(ingest, store, vehicle_box, clock) -> None:
    payload = seal_record(vehicle_box, VIN, 5, _telemetry(clock, 10.0))
    resent = seal_record(vehicle_box, VIN, 5, _telemetry(clock, 99.0))  # same seq, other content
    _handle(ingest, store, RECORDS, payload)
    ingest.take_acks()
    _handle(ingest, store, RECORDS, payload)
    _handle(ingest, store, RECORDS, resent)
    [(_, ack)] = ingest.take_acks()
    assert open_ack(vehicle_box, ack, vin=VIN).seqs == {5}
    assert store.seqs(VIN) == [5]
    assert store.records(VIN)[0].body["signals"]["Vehicle.Speed"]["v"] == 10.0
    assert (ingest.stats.stored, ingest.stats.duplicates) == (1, 2)


def test_last_value_moves_only_forward_in_signal_time(ingest, store, vehicle_box, clock) -> None:
    _handle(ingest, store, RECORDS, seal_record(vehicle_box, VIN, 2, _telemetry(clock, 80.0, at_offset_s=60)))
    _handle(ingest, store, RECORDS, seal_record(vehicle_box, VIN, 1, _telemetry(clock, 20.0)))  # late backlog
    [value] = store.last_values(VIN)
    assert (value.value, value.seq) == (80.0, 2)


@pytest.mark.parametrize(
    ("topic", "payload_kind", "reason"),
    [
        (RECORDS, "forged", f"VIN {VIN} failed authentication"),
        (RECORDS, "garbage", "malformed CBOR"),
        (RECORDS, "oversize", "oversize envelope"),
        (f"vehicles/{OTHER_VIN}/up/records", "valid", f"vehicle {OTHER_VIN} is not enrolled"),
        ("vehicles/x/down/ack", "valid", "not a vehicle uplink topic"),
        (f"vehicles/{VIN}/up/telepathy", "valid", "unknown uplink kind 'telepathy'"),
        (f"vehicles/{VIN}/up/status", "garbage", "malformed CBOR in status"),
        (f"vehicles/{VIN}/up/status", "list", "malformed status"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason_and_nothing_else_changes(
    ingest, store, vehicle_box, backend_key, clock, topic: str, payload_kind: str, reason: str
) -> None:
    _handle(ingest, store, RECORDS, seal_record(vehicle_box, VIN, 1, _telemetry(clock, 1.0)))
    ingest.take_acks()
    payload = {
        "forged": seal_record(Box(PrivateKey.generate(), backend_key.public_key), VIN, 2, _telemetry(clock, 666.0)),
        "garbage": b"\xff\xfe not cbor",
        "oversize": b"\x00" * (64 * 1024 + 1),
        "valid": seal_record(vehicle_box, VIN, 3, _telemetry(clock, 3.0)),
        "list": cbor2.dumps([1]),
    }[payload_kind]
    _handle(ingest, store, topic, payload)
    [rejection] = store.rejections()
    assert reason in rejection.reason
    assert rejection.topic == topic
    assert ingest.take_acks() == []
    assert store.seqs(VIN) == [1]
    assert store.last_values(VIN)[0].value == 1.0


def test_record_from_another_vehicle_on_this_vehicles_topic(ingest, store, backend_key, clock) -> None:
    other = PrivateKey.generate()
    store.enroll(OTHER_VIN, bytes(other.public_key), clock.now())
    payload = seal_record(Box(other, backend_key.public_key), OTHER_VIN, 1, _telemetry(clock, 5.0))
    _handle(ingest, store, RECORDS, payload)
    [rejection] = store.rejections(VIN)
    assert f"names VIN {OTHER_VIN} but arrived on the topic of VIN {VIN}" in rejection.reason
    assert store.seqs(VIN) == store.seqs(OTHER_VIN) == []


def test_status_marks_the_vehicle_online_and_offline(ingest, store, clock) -> None:
    topic = f"vehicles/{VIN}/up/status"
    _handle(ingest, store, topic, cbor2.dumps({"online": True, "ts": 1}))
    assert store.vehicles()[0].online is True
    _handle(ingest, store, topic, cbor2.dumps({"online": False, "ts": 2}))
    assert store.vehicles()[0].online is False
    _handle(ingest, store, topic, b"")  # retained message cleared: not an error
    assert store.rejections() == []


def test_gaps_show_sequence_numbers_never_received(ingest, store, vehicle_box, clock) -> None:
    for seq in (1, 2, 5, 7):
        _handle(ingest, store, RECORDS, seal_record(vehicle_box, VIN, seq, _telemetry(clock, float(seq))))
    assert store.gaps(VIN) == [[3, 4], [6, 6]]


def test_a_vehicle_re_enrolled_with_a_new_key_is_accepted_at_once(ingest, store, backend_key, clock) -> None:
    """Re-enrolment happens in another process (the CLI); the running ingest must not keep the old key."""
    old, new = PrivateKey.generate(), PrivateKey.generate()
    store.enroll(VIN, bytes(old.public_key), clock.now())
    _handle(ingest, store, RECORDS, seal_record(Box(old, backend_key.public_key), VIN, 1, _telemetry(clock, 1.0)))
    store.enroll(VIN, bytes(new.public_key), clock.now())
    _handle(ingest, store, RECORDS, seal_record(Box(new, backend_key.public_key), VIN, 2, _telemetry(clock, 2.0)))
    _handle(ingest, store, RECORDS, seal_record(Box(old, backend_key.public_key), VIN, 3, _telemetry(clock, 3.0)))
    assert store.seqs(VIN) == [1, 2]
    [rejection] = store.rejections(VIN)
    assert "failed authentication" in rejection.reason
