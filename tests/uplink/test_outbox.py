from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from nacl.public import Box

from tcu.clock import ManualClock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError
from tcu.uplink.envelope import open_record, seal_record
from tcu.uplink.outbox import Outbox
from tcu.uplink.records import Record, RecordKind
from tests.conftest import VIN


def _record(clock: ManualClock, kind: RecordKind = RecordKind.TELEMETRY, **body: object) -> Record:
    return Record(kind=kind, created=clock.now(), body=body or {"n": 1})


@pytest.fixture
def make_outbox(tmp_path: Path, vehicle_box: Box, clock: ManualClock) -> Iterator[object]:
    opened: list[Outbox] = []

    def factory(config: QueueConfig | None = None, max_envelope: int = 64 * 1024) -> Outbox:
        outbox = Outbox(
            tmp_path / "outbox.sqlite3",
            sealer=lambda seq, record, epoch: seal_record(vehicle_box, VIN, seq, record, epoch=epoch),
            clock=clock,
            config=config or QueueConfig(),
            max_envelope_bytes=max_envelope,
        ).open()
        opened.append(outbox)
        return outbox

    yield factory
    for outbox in opened:
        outbox.close()


def _seqs(outbox: Outbox, limit: int = 1000) -> list[int]:
    return [q.seq for q in outbox.next_batch(limit)]


def test_records_get_consecutive_sequence_numbers_sealed_inside(make_outbox, clock, backend_box) -> None:
    outbox = make_outbox()
    outbox.put_many([_record(clock, n=i) for i in range(3)])
    batch = outbox.next_batch(10)
    assert [q.seq for q in batch] == [1, 2, 3]
    opened = [open_record(backend_box, q.envelope, topic_vin=VIN) for q in batch]
    assert [(r.seq, r.body["n"]) for r in opened] == [(1, 0), (2, 1), (3, 2)]


def test_acknowledged_records_are_deleted_and_numbers_never_reused(make_outbox, clock) -> None:
    outbox = make_outbox()
    outbox.put_many([_record(clock) for _ in range(5)])
    assert outbox.acknowledge([1, 2, 3, 4, 5, 99]) == 5
    outbox.close()
    reopened = make_outbox()
    assert reopened.stats().depth == 0
    reopened.put(_record(clock))
    assert _seqs(reopened) == [6]


def test_unacknowledged_records_survive_reopen(make_outbox, clock) -> None:
    outbox = make_outbox()
    outbox.put_many([_record(clock) for _ in range(4)])
    outbox.acknowledge([2])
    outbox.close()
    assert _seqs(make_outbox()) == [1, 3, 4]


def test_drain_order_is_priority_then_oldest_first(make_outbox, clock) -> None:
    outbox = make_outbox()
    outbox.put(_record(clock, RecordKind.TELEMETRY))  # 1
    outbox.put(_record(clock, RecordKind.EVENT))  # 2
    outbox.put(_record(clock, RecordKind.TELEMETRY))  # 3
    outbox.put(_record(clock, RecordKind.ECALL))  # 4
    outbox.put(_record(clock, RecordKind.EVENT))  # 5
    assert _seqs(outbox) == [4, 2, 5, 1, 3]


def test_next_batch_skips_records_in_flight(make_outbox, clock) -> None:
    outbox = make_outbox()
    outbox.put_many([_record(clock) for _ in range(5)])
    assert [q.seq for q in outbox.next_batch(2, skip={1, 2, 4})] == [3, 5]
    assert outbox.next_batch(0) == []


def test_full_queue_drops_oldest_telemetry_and_reports_it_once(make_outbox, clock, backend_box) -> None:
    outbox = make_outbox(QueueConfig(max_records=4))
    outbox.put(_record(clock, RecordKind.EVENT))  # 1
    outbox.put_many([_record(clock) for _ in range(3)])  # 2, 3, 4
    outbox.put(_record(clock))  # 5: over the bound, drops 2
    outbox.put(_record(clock))  # 6: drops 3
    assert _seqs(outbox) == [1, 4, 5, 6]
    assert outbox.emit_overflow_notice()  # two drops, one notice
    batch = outbox.next_batch(10)
    assert [q.seq for q in batch] == [1, 7, 5, 6]  # the notice (7) pushed out 4 to stay in bounds
    notice = open_record(backend_box, batch[1].envelope, topic_vin=VIN)
    assert notice.kind is RecordKind.EVENT
    assert notice.body == {"type": "queue_overflow", "dropped": 2, "dropped_seqs": [[2, 3]]}
    assert not outbox.emit_overflow_notice()  # notice 7 still waits: the drop of 4 gathers for the next
    outbox.acknowledge(q.seq for q in outbox.next_batch(10))
    assert outbox.emit_overflow_notice()  # names 4; with room again it evicts nothing
    assert outbox.stats().dropped_total == 3
    (notice,) = [open_record(backend_box, q.envelope, topic_vin=VIN) for q in outbox.next_batch(10)]
    assert notice.body["dropped_seqs"] == [[4, 4]]
    assert not outbox.emit_overflow_notice()


def test_events_are_never_dropped_for_telemetry(make_outbox, clock) -> None:
    outbox = make_outbox(QueueConfig(max_records=2))
    outbox.put_many([_record(clock, RecordKind.EVENT) for _ in range(3)])
    outbox.put(_record(clock, RecordKind.ECALL))
    outbox.put(_record(clock))  # the new telemetry itself is the oldest telemetry: it goes
    assert outbox.stats().depth_by_priority == {"ecall": 1, "event": 3}


def test_full_disk_keeps_everything_and_recovers(
    make_outbox, clock, backend_box, caplog: pytest.LogCaptureFixture
) -> None:
    # max_bytes is enforced by SQLite itself (max_page_count): the same SQLITE_FULL a full disk gives.
    outbox = make_outbox(QueueConfig(max_bytes=64 * 1024))
    with caplog.at_level(logging.ERROR):
        for i in range(60):
            outbox.put(_record(clock, RecordKind.EVENT, n=i, pad="x" * 2000))
    stats = outbox.stats()
    assert stats.storage_full
    assert stats.spilled_in_memory > 0
    assert stats.depth + stats.spilled_in_memory == 60
    assert "disk or queue size limit full" in caplog.text
    # The backend acknowledges what it got; freed pages take the records held in memory, in order.
    delivered: list[int] = []
    while outbox.stats().depth:
        batch = outbox.next_batch(1000)
        delivered += [open_record(backend_box, q.envelope, topic_vin=VIN).body["n"] for q in batch]
        outbox.acknowledge(q.seq for q in batch)
    assert delivered == list(range(60))
    assert not outbox.stats().storage_full
    assert outbox.stats().spilled_in_memory == 0


def test_record_too_large_is_refused_and_the_rest_kept(make_outbox, clock) -> None:
    outbox = make_outbox(max_envelope=1024)
    with pytest.raises(RecordTooLargeError, match="over the max payload of 1024 bytes"):
        outbox.put_many([_record(clock, n=1), _record(clock, pad="y" * 5000), _record(clock, n=3)])
    assert _seqs(outbox) == [1, 2]


def test_record_body_round_trips_as_cbor(make_outbox, clock, backend_box) -> None:
    outbox = make_outbox()
    body = {"signals": {"Vehicle.Speed": {"v": 12.5, "t": 1}}, "flag": True, "blob": b"\x00\x01"}
    outbox.put(Record(kind=RecordKind.EVENT, created=clock.now(), body=body))
    opened = open_record(backend_box, outbox.next_batch(1)[0].envelope, topic_vin=VIN)
    assert cbor2.dumps(dict(opened.body)) == cbor2.dumps(body)
