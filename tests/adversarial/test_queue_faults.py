"""The durable queue under faults: re-flashed cars, full disks (capped and real), memory limits."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.public import Box

from hil.small_disk import SmallDiskUnavailableError, fill, small_filesystem
from tcu.clock import ManualClock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError
from tcu.uplink.queue_store import QueueStore
from telematics_wire.envelope import EPOCH_BYTES, open_record, seal_record
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN

MakeOutbox = Callable[..., QueueStore]


@pytest.fixture
def make_outbox(tmp_path: Path, vehicle_box: Box, clock: ManualClock) -> Iterator[MakeOutbox]:
    opened: list[QueueStore] = []

    def factory(path: Path | None = None, **options: Any) -> QueueStore:
        config = options.pop("config", QueueConfig())
        outbox = QueueStore(
            path or tmp_path / "outbox.sqlite3",
            sealer=lambda seq, record, epoch: seal_record(vehicle_box, VIN, seq, record, epoch=epoch),
            clock=clock,
            config=config,
            max_envelope_bytes=options.pop("max_envelope_bytes", 64 * 1024),
            **options,
        ).open()
        opened.append(outbox)
        return outbox

    yield factory
    for outbox in opened:
        outbox.close()


def _record(clock: ManualClock, kind: RecordKind = RecordKind.TELEMETRY, **body: object) -> Record:
    return Record(kind=kind, created=clock.now(), body=body or {"n": 1})


def _opened(outbox: QueueStore, backend_box: Box) -> list[Any]:
    return [open_record(backend_box, q.envelope, topic_vin=VIN) for q in outbox.next_batch(100_000)]


def _notices(records: list[Any]) -> list[dict[str, Any]]:
    return [dict(r.body) for r in records if r.body.get("type") == "queue_overflow"]


# -- epochs -------------------------------------------------------------------------------------


def test_a_new_queue_has_a_random_epoch_that_every_envelope_carries(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box, tmp_path: Path
) -> None:
    outbox = make_outbox()
    outbox.put(_record(clock))
    epoch = outbox.epoch
    assert len(epoch) == EPOCH_BYTES
    assert [r.epoch for r in _opened(outbox, backend_box)] == [epoch]
    outbox.close()
    assert make_outbox().epoch == epoch  # a restart keeps the queue and its epoch


def test_a_wiped_data_dir_starts_a_new_epoch_at_sequence_one(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box, tmp_path: Path
) -> None:
    first = make_outbox()
    first.put_many([_record(clock) for _ in range(3)])
    old_epoch = first.epoch
    first.close()
    for leftover in tmp_path.glob("outbox.sqlite3*"):
        leftover.unlink()  # a re-flashed SD card
    second = make_outbox()
    second.put(_record(clock))
    (record,) = _opened(second, backend_box)
    assert (record.seq, record.epoch != old_epoch, len(record.epoch)) == (1, True, EPOCH_BYTES)


def test_a_queue_made_before_epochs_keeps_the_legacy_epoch_and_its_records(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box, vehicle_box: Box, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        """CREATE TABLE outbox (seq INTEGER PRIMARY KEY, priority INTEGER NOT NULL, kind TEXT NOT NULL,
               created_ms INTEGER NOT NULL, envelope BLOB NOT NULL);
           CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
           INSERT INTO counters VALUES ('next_seq', 8), ('dropped', 0);
           CREATE TABLE dropped (low INTEGER NOT NULL, high INTEGER NOT NULL);
           INSERT INTO dropped VALUES (2, 3);"""
    )
    old.execute(
        "INSERT INTO outbox VALUES (7, 2, 'telemetry', 0, ?)", (seal_record(vehicle_box, VIN, 7, _record(clock)),)
    )
    old.commit()
    old.close()
    outbox = make_outbox(path)
    assert outbox.epoch == b""
    outbox.put(_record(clock))
    outbox.emit_overflow_notice()
    records = _opened(outbox, backend_box)
    assert {r.seq for r in records} == {7, 8, 9}
    assert all(r.epoch == b"" for r in records)
    assert _notices(records)[0]["dropped_seqs"] == [[2, 3]]
    assert b"epoch" not in outbox.next_batch(1)[0].envelope  # byte for byte what it was


# -- the memory spill ---------------------------------------------------------------------------


def _fill_with_events(outbox: QueueStore, clock: ManualClock, count: int = 60) -> None:
    for i in range(count):
        outbox.put(_record(clock, RecordKind.EVENT, n=i, pad="x" * 2000))


def test_a_too_large_record_while_the_disk_is_full_is_refused_at_once_and_the_rest_stored_once(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(config=QueueConfig(max_bytes=64 * 1024), max_envelope_bytes=4096)
    _fill_with_events(outbox, clock)
    assert outbox.stats().spilled_in_memory > 0
    with pytest.raises(RecordTooLargeError):
        outbox.put_many([_record(clock, RecordKind.EVENT, n=1000), _record(clock, RecordKind.EVENT, pad="y" * 9000)])
    stored = _opened(outbox, backend_box)
    outbox.acknowledge(r.seq for r in stored)
    while outbox.stats().spilled_in_memory:
        batch = _opened(outbox, backend_box)
        assert batch, "the spill must drain once acknowledged records free their space"
        stored += batch
        outbox.acknowledge(r.seq for r in batch)
    stored += _opened(outbox, backend_box)
    numbers = sorted(r.body["n"] for r in stored)
    assert numbers == [*range(60), 1000]  # each record exactly once; the too-large one never
    seqs = sorted(r.seq for r in stored)
    assert seqs == list(range(1, len(seqs) + 1))


def test_records_the_memory_spill_sheds_are_named_in_the_next_notice(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(config=QueueConfig(max_bytes=64 * 1024), spill_limit=5)
    _fill_with_events(outbox, clock)  # events only on disk: nothing there may be dropped for telemetry
    first = clock.now()
    for i in range(20):
        outbox.put(_record(clock, n=i))
        clock.advance(1)
    assert outbox.stats().dropped_total >= 15
    while not outbox.emit_overflow_notice():
        batch = _opened(outbox, backend_box)
        assert batch
        outbox.acknowledge(r.seq for r in batch)
    (notice,) = _notices(_opened(outbox, backend_box))
    assert notice["unnumbered"] >= 15
    low, high = notice["unnumbered_span_ms"]
    assert low == int(first.timestamp() * 1000)
    assert high <= int(clock.now().timestamp() * 1000)


def test_a_dropped_record_that_was_sent_is_named_unconfirmed(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(config=QueueConfig(max_records=4))
    outbox.put_many([_record(clock, n=i) for i in range(4)])
    outbox.mark_sent([1, 2])  # published; the ack may be lost in the cut
    outbox.put_many([_record(clock, n=i) for i in range(4, 7)])  # drops seqs 1, 2, 3
    assert outbox.emit_overflow_notice()
    (notice,) = _notices(_opened(outbox, backend_box))
    assert notice["unconfirmed_seqs"] == [[1, 2]]
    assert notice["dropped_seqs"] == [[3, 3]]
    assert notice["dropped"] == 3


def test_records_queued_by_an_earlier_run_count_as_possibly_sent(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(config=QueueConfig(max_records=2))
    outbox.put_many([_record(clock), _record(clock)])
    outbox.close()
    restarted = make_outbox(config=QueueConfig(max_records=2))
    restarted.put(_record(clock))
    assert restarted.emit_overflow_notice()
    (notice,) = _notices(_opened(restarted, backend_box))
    assert (notice["unconfirmed_seqs"], notice["dropped_seqs"]) == ([[1, 1]], [])


# -- a real full filesystem ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    try:
        with small_filesystem(tmp_path / "disk", 2 * 1024 * 1024) as disk:
            yield disk
    except SmallDiskUnavailableError as exc:
        pytest.skip(str(exc))


def test_a_disk_full_at_start_holds_records_until_the_queue_can_open(
    small_disk: Path, make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    fill(small_disk)
    outbox = make_outbox(small_disk / "outbox.sqlite3", reserve_bytes=0)
    outbox.put(_record(clock, RecordKind.EVENT, n=1))
    assert outbox.stats().storage_full
    assert outbox.stats().spilled_in_memory == 1
    (small_disk / "ballast.bin").unlink()
    clock.advance(5)
    outbox.put(_record(clock, RecordKind.EVENT, n=2))
    assert [r.body["n"] for r in _opened(outbox, backend_box)] == [1, 2]


def test_on_a_real_full_disk_acks_still_delete_and_delivery_resumes(
    small_disk: Path, make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(small_disk / "outbox.sqlite3")
    produced = 0

    def produce(count: int) -> None:
        nonlocal produced
        for _ in range(count):
            outbox.put(_record(clock, n=produced, pad="p" * 600))
            produced += 1

    produce(200)
    fill(small_disk)  # another process takes every free block
    produce(400)  # the queue makes room by dropping its oldest telemetry, never by failing
    delivered: dict[int, int] = {}  # record number -> seq
    notices: dict[int, dict[str, Any]] = {}  # seq -> body
    for round_ in range(80):
        if round_ < 30:
            produce(20)  # the car keeps driving while the backlog drains
        outbox.emit_overflow_notice()
        batch = _opened(outbox, backend_box)
        if not batch:
            break
        for record in batch:
            if record.body.get("type") == "queue_overflow":
                notices[record.seq] = dict(record.body)
            else:
                assert record.body["n"] not in delivered, "a record delivered twice"
                delivered[record.body["n"]] = record.seq
        assert outbox.acknowledge(r.seq for r in batch) == len(batch)  # acks delete on a full disk
    assert outbox.stats().depth == 0
    assert notices, "the disk filled: telemetry was dropped and must be named"
    wal = small_disk / "outbox.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size <= 1024 * 1024 + 64 * 1024
    named = {
        seq
        for body in notices.values()
        for key in ("dropped_seqs", "unconfirmed_seqs")
        for low, high in body.get(key, [])
        for seq in range(low, high + 1)
    }
    seen = set(delivered.values()) | set(notices) | named
    assert seen == set(range(1, max(seen) + 1)), "every sequence number delivered or named"
    unnumbered = sum(body.get("unnumbered", 0) for body in notices.values())
    assert len(delivered) + len(named) + unnumbered == produced
    assert not set(delivered.values()) & named, "a delivered record named as dropped"


def test_a_queue_held_at_its_bound_keeps_one_overflow_notice_not_one_per_drop(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(config=QueueConfig(max_records=5))
    for i in range(200):  # an outage with the broker up: the sender wakes on every snapshot
        outbox.put(_record(clock, n=i))
        outbox.emit_overflow_notice()
    queued = _opened(outbox, backend_box)
    assert len(_notices(queued)) == 1
    assert sum(1 for r in queued if r.kind is RecordKind.TELEMETRY) >= 4
    outbox.acknowledge(r.seq for r in queued)  # the link is back: the one notice is acknowledged
    assert outbox.emit_overflow_notice()
    (notice,) = _notices(_opened(outbox, backend_box))
    assert notice["dropped"] > 150  # the later drops, gathered while the first notice waited


def test_space_freed_while_the_link_is_down_lets_the_queue_grow_again_without_an_ack(
    small_disk: Path, make_outbox: MakeOutbox, clock: ManualClock
) -> None:
    outbox = make_outbox(small_disk / "outbox.sqlite3")
    for i in range(100):
        outbox.put(_record(clock, n=i, pad="p" * 600))
    fill(small_disk)
    for i in range(300):  # full: the queue keeps to its size and drops its oldest telemetry
        outbox.put(_record(clock, n=i, pad="p" * 600))
    dropped_while_full = outbox.stats().dropped_total
    assert dropped_while_full > 0
    (small_disk / "ballast.bin").unlink()  # someone frees space; no ack arrives
    clock.advance(5)
    for i in range(300):
        outbox.put(_record(clock, n=i, pad="p" * 600))
    assert outbox.stats().dropped_total == dropped_while_full, "nothing more dropped once the disk has room"


def test_the_memory_holds_account_survives_a_restart_and_reaches_a_notice(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(config=QueueConfig(max_bytes=64 * 1024), spill_limit=5)
    _fill_with_events(outbox, clock)
    for i in range(20):
        outbox.put(_record(clock, n=i))
    shed = outbox.stats().dropped_total
    assert shed >= 15
    stored = _opened(outbox, backend_box)
    outbox.acknowledge(r.seq for r in stored)  # room again: the hold drains, its account is stored
    while outbox.stats().spilled_in_memory:
        outbox.acknowledge(r.seq for r in _opened(outbox, backend_box))
    outbox.close()  # a clean stop before any notice went out
    restarted = make_outbox(config=QueueConfig(max_bytes=64 * 1024))
    assert restarted.stats().dropped_total >= shed, "the drop count never goes down"
    assert restarted.emit_overflow_notice()
    (notice,) = _notices(_opened(restarted, backend_box))
    assert notice["unnumbered"] == shed


def test_an_overflow_notice_names_at_most_2000_ranges_and_the_next_one_the_rest(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(config=QueueConfig(max_records=1))
    for i in range(4200):  # telemetry, event, ...: each dropped telemetry is a range of its own (2,100)
        outbox.put(_record(clock, RecordKind.EVENT if i % 2 else RecordKind.TELEMETRY, n=i))
    assert outbox.emit_overflow_notice()
    first = _notices(_opened(outbox, backend_box))
    assert len(first) == 1
    assert len(first[0]["dropped_seqs"]) == 2000
    outbox.acknowledge(q.seq for q in outbox.next_batch(100_000))
    assert outbox.emit_overflow_notice()
    (second,) = _notices(_opened(outbox, backend_box))
    named = {s for n in (first[0], second) for lo, hi in n["dropped_seqs"] for s in range(lo, hi + 1)}
    assert len(named) == outbox.stats().dropped_total


def test_only_one_notice_waits_even_across_a_restart(
    make_outbox: MakeOutbox, clock: ManualClock, backend_box: Box
) -> None:
    outbox = make_outbox(config=QueueConfig(max_records=3))
    for i in range(10):
        outbox.put(_record(clock, n=i))
    assert outbox.emit_overflow_notice()
    outbox.close()
    restarted = make_outbox(config=QueueConfig(max_records=3))
    for i in range(10):
        restarted.put(_record(clock, n=i))
        restarted.emit_overflow_notice()
    assert len(_notices(_opened(restarted, backend_box))) == 1
