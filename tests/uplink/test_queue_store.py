from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from nacl.public import Box

from tcu.clock import ManualClock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError
from tcu.uplink.queue_store import QueueStore
from telematics_wire.envelope import open_record, seal_record
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN


def _record(clock: ManualClock, kind: RecordKind = RecordKind.TELEMETRY, **body: object) -> Record:
    return Record(kind=kind, created=clock.now(), body=body or {"n": 1})


@pytest.fixture
def make_store(tmp_path: Path, vehicle_box: Box, clock: ManualClock) -> Iterator[object]:
    opened: list[QueueStore] = []

    def factory(config: QueueConfig | None = None, max_envelope: int = 64 * 1024) -> QueueStore:
        store = QueueStore(
            tmp_path / "outbox.sqlite3",
            sealer=lambda seq, record, epoch: seal_record(vehicle_box, VIN, seq, record, epoch=epoch),
            clock=clock,
            config=config or QueueConfig(),
            max_envelope_bytes=max_envelope,
        ).open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _seqs(store: QueueStore, limit: int = 1000) -> list[int]:
    return [q.seq for q in store.next_batch(limit)]


def test_records_get_consecutive_sequence_numbers_sealed_inside(make_store, clock, backend_box) -> None:
    store = make_store()
    store.put_many([_record(clock, n=i) for i in range(3)])
    batch = store.next_batch(10)
    assert [q.seq for q in batch] == [1, 2, 3]
    opened = [open_record(backend_box, q.envelope, topic_vin=VIN) for q in batch]
    assert [(r.seq, r.body["n"]) for r in opened] == [(1, 0), (2, 1), (3, 2)]


def test_acknowledged_records_are_deleted_and_numbers_never_reused(make_store, clock) -> None:
    store = make_store()
    store.put_many([_record(clock) for _ in range(5)])
    assert store.acknowledge([1, 2, 3, 4, 5, 99]) == 5
    store.close()
    reopened = make_store()
    assert reopened.stats().depth == 0
    reopened.put(_record(clock))
    assert _seqs(reopened) == [6]


def test_unacknowledged_records_survive_reopen(make_store, clock) -> None:
    store = make_store()
    store.put_many([_record(clock) for _ in range(4)])
    store.acknowledge([2])
    store.close()
    assert _seqs(make_store()) == [1, 3, 4]


def test_drain_order_is_priority_then_oldest_first(make_store, clock) -> None:
    store = make_store()
    store.put(_record(clock, RecordKind.TELEMETRY))  # 1
    store.put(_record(clock, RecordKind.EVENT))  # 2
    store.put(_record(clock, RecordKind.TELEMETRY))  # 3
    store.put(_record(clock, RecordKind.ECALL))  # 4
    store.put(_record(clock, RecordKind.EVENT))  # 5
    assert _seqs(store) == [4, 2, 5, 1, 3]


def test_next_batch_skips_records_in_flight(make_store, clock) -> None:
    store = make_store()
    store.put_many([_record(clock) for _ in range(5)])
    assert [q.seq for q in store.next_batch(2, skip={1, 2, 4})] == [3, 5]
    assert store.next_batch(0) == []


def test_full_queue_drops_oldest_telemetry_and_reports_it_once(make_store, clock, backend_box) -> None:
    store = make_store(QueueConfig(max_records=4))
    store.put(_record(clock, RecordKind.EVENT))  # 1
    store.put_many([_record(clock) for _ in range(3)])  # 2, 3, 4
    store.put(_record(clock))  # 5: over the bound, drops 2
    store.put(_record(clock))  # 6: drops 3
    assert _seqs(store) == [1, 4, 5, 6]
    assert store.emit_overflow_notice()  # two drops, one notice
    batch = store.next_batch(10)
    assert [q.seq for q in batch] == [1, 7, 5, 6]  # the notice (7) pushed out 4 to stay in bounds
    notice = open_record(backend_box, batch[1].envelope, topic_vin=VIN)
    assert notice.kind is RecordKind.EVENT
    assert notice.body == {"type": "queue_overflow", "dropped": 2, "dropped_seqs": [[2, 3]]}
    assert not store.emit_overflow_notice()  # notice 7 still waits: the drop of 4 gathers for the next
    store.acknowledge(q.seq for q in store.next_batch(10))
    assert store.emit_overflow_notice()  # names 4; with room again it evicts nothing
    assert store.stats().dropped_total == 3
    (notice,) = [open_record(backend_box, q.envelope, topic_vin=VIN) for q in store.next_batch(10)]
    assert notice.body["dropped_seqs"] == [[4, 4]]
    assert not store.emit_overflow_notice()


def test_events_are_never_dropped_for_telemetry(make_store, clock) -> None:
    store = make_store(QueueConfig(max_records=2))
    store.put_many([_record(clock, RecordKind.EVENT) for _ in range(3)])
    store.put(_record(clock, RecordKind.ECALL))
    store.put(_record(clock))  # the new telemetry itself is the oldest telemetry: it goes
    assert store.stats().depth_by_priority == {"ecall": 1, "event": 3}


def test_full_disk_keeps_everything_and_recovers(
    make_store, clock, backend_box, caplog: pytest.LogCaptureFixture
) -> None:
    # max_bytes is enforced by SQLite itself (max_page_count): the same SQLITE_FULL a full disk gives.
    store = make_store(QueueConfig(max_bytes=64 * 1024))
    with caplog.at_level(logging.ERROR):
        for i in range(60):
            store.put(_record(clock, RecordKind.EVENT, n=i, pad="x" * 2000))
    stats = store.stats()
    assert stats.storage_full
    assert stats.spilled_in_memory > 0
    assert stats.depth + stats.spilled_in_memory == 60
    assert "disk or queue size limit full" in caplog.text
    # The backend acknowledges what it got; freed pages take the records held in memory, in order.
    delivered: list[int] = []
    while store.stats().depth:
        batch = store.next_batch(1000)
        delivered += [open_record(backend_box, q.envelope, topic_vin=VIN).body["n"] for q in batch]
        store.acknowledge(q.seq for q in batch)
    assert delivered == list(range(60))
    assert not store.stats().storage_full
    assert store.stats().spilled_in_memory == 0


def test_record_too_large_is_refused_and_the_rest_kept(make_store, clock) -> None:
    store = make_store(max_envelope=1024)
    with pytest.raises(RecordTooLargeError, match="over the max payload of 1024 bytes"):
        store.put_many([_record(clock, n=1), _record(clock, pad="y" * 5000), _record(clock, n=3)])
    assert _seqs(store) == [1, 2]


def test_record_body_round_trips_as_cbor(make_store, clock, backend_box) -> None:
    store = make_store()
    body = {"signals": {"Vehicle.Speed": {"v": 12.5, "t": 1}}, "flag": True, "blob": b"\x00\x01"}
    store.put(Record(kind=RecordKind.EVENT, created=clock.now(), body=body))
    opened = open_record(backend_box, store.next_batch(1)[0].envelope, topic_vin=VIN)
    assert cbor2.dumps(dict(opened.body)) == cbor2.dumps(body)


# The writer numbers records from the count it keeps in memory; these pin down when that count may
# move (only with a commit), and that a second connection on the same file (`tcu owner-change` beside a
# running agent) never shares a number with it.


def _opened(store: QueueStore, backend_box: Box) -> list[tuple[int, object]]:
    """(number in the queue, body's n) of every queued record, opened as the backend opens it."""
    pairs = []
    for queued in store.next_batch(1000):
        record = open_record(backend_box, queued.envelope, topic_vin=VIN)
        assert record.seq == queued.seq, "sealed with the number it is queued under"
        pairs.append((queued.seq, record.body["n"]))
    return pairs


def test_the_number_kept_in_memory_goes_on_after_a_reopen(make_store, clock) -> None:
    store = make_store()
    store.put_many([_record(clock, n=n) for n in range(3)])
    store.acknowledge([1, 2, 3])
    store.close()
    reopened = make_store()
    reopened.put(_record(clock))
    assert _seqs(reopened) == [4]
    assert reopened.stats().next_seq == 5


def test_a_failed_write_leaves_its_numbers_unused(make_store, clock, backend_box, tmp_path: Path) -> None:
    store = make_store()
    store.put_many([_record(clock, n=0), _record(clock, n=1)])
    # A row in the way of number 3 fails the next insert after the counter moved in its transaction.
    with contextlib.closing(sqlite3.connect(tmp_path / "outbox.sqlite3", isolation_level=None)) as other:
        other.execute("INSERT INTO outbox VALUES (3, 2, 'telemetry', 0, x'00')")
        store.put(_record(clock, n=2))  # held in memory: the write failed
        assert store.stats().next_seq == 3
        other.execute("DELETE FROM outbox WHERE seq=3")
    store.put(_record(clock, n=3))  # the held record goes first, under the number the failed write left unused
    assert _opened(store, backend_box) == [(1, 0), (2, 1), (3, 2), (4, 3)]


def test_records_another_connection_queued_meanwhile_are_numbered_around(make_store, clock, backend_box) -> None:
    agent, command = make_store(), make_store()  # both opened before either wrote: both count 1 next
    agent.put(_record(clock, n=0))
    command.put(_record(clock, RecordKind.EVENT, n=1))  # `tcu owner-change` beside the running agent
    agent.put(_record(clock, n=2))
    assert sorted(_opened(agent, backend_box)) == [(1, 0), (2, 1), (3, 2)]
    assert agent.stats().next_seq == command.stats().next_seq == 4
