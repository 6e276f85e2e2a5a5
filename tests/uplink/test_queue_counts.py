"""What the queue keeps in memory instead of reading it back: the next sequence number, and the counts
that answer, on the event loop, the calls that would find nothing to do.

The writer numbers records from its own count, so these pin down when that count may move (only with a
commit) and that a second connection on the same file (`tcu owner-change` beside a running agent)
still never shares a number with it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from nacl.public import Box

from tcu.clock import ManualClock
from tcu.config import QueueConfig
from tcu.uplink.outbox import Outbox
from tcu.uplink.queue_store import QueueStore
from telematics_wire.envelope import open_record, seal_record
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN

MakeStore = Callable[[], QueueStore]


def _record(clock: ManualClock, n: int, kind: RecordKind = RecordKind.TELEMETRY) -> Record:
    return Record(kind=kind, created=clock.now(), body={"n": n})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite3"


@pytest.fixture
def make_store(path: Path, vehicle_box: Box, clock: ManualClock) -> Iterator[MakeStore]:
    opened: list[QueueStore] = []

    def factory() -> QueueStore:
        store = QueueStore(
            path,
            sealer=lambda seq, record, epoch: seal_record(vehicle_box, VIN, seq, record, epoch=epoch),
            clock=clock,
            config=QueueConfig(),
            max_envelope_bytes=64 * 1024,
        ).open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _opened(store: QueueStore, backend_box: Box) -> list[tuple[int, object]]:
    """(sequence number in the queue, body's n) of every queued record, opened as the backend opens it."""
    pairs = []
    for queued in store.next_batch(1000):
        record = open_record(backend_box, queued.envelope, topic_vin=VIN)
        assert record.seq == queued.seq, "sealed with the number it is queued under"
        pairs.append((queued.seq, record.body["n"]))
    return pairs


def test_the_number_kept_in_memory_goes_on_after_a_reopen(make_store: MakeStore, clock: ManualClock) -> None:
    store = make_store()
    store.put_many([_record(clock, n) for n in range(3)])
    store.acknowledge([1, 2, 3])
    store.close()
    reopened = make_store()
    reopened.put(_record(clock, 3))
    assert [queued.seq for queued in reopened.next_batch(10)] == [4]
    assert reopened.stats().next_seq == 5


def test_a_failed_write_leaves_its_numbers_unused(
    make_store: MakeStore, path: Path, clock: ManualClock, backend_box: Box
) -> None:
    store = make_store()
    store.put_many([_record(clock, 0), _record(clock, 1)])
    # A row in the way of number 3 makes the next insert fail after the counter was moved in its transaction.
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("INSERT INTO outbox VALUES (3, 2, 'telemetry', 0, x'00')")
        store.put(_record(clock, 2))  # kept in memory: the write failed
        assert store.stats().next_seq == 3
        other.execute("DELETE FROM outbox WHERE seq=3")
    store.put(_record(clock, 3))  # the held record goes first, under the number the failed write did not use
    assert _opened(store, backend_box) == [(1, 0), (2, 1), (3, 2), (4, 3)]


def test_records_another_connection_queued_meanwhile_are_numbered_around(
    make_store: MakeStore, clock: ManualClock, backend_box: Box
) -> None:
    agent, command = make_store(), make_store()  # both opened before either wrote: both count 1 next
    agent.put(_record(clock, 0))
    command.put(_record(clock, 1, RecordKind.EVENT))  # `tcu owner-change` beside the running agent
    agent.put(_record(clock, 2))
    assert sorted(_opened(agent, backend_box)) == [(1, 0), (2, 1), (3, 2)]
    assert agent.stats().next_seq == command.stats().next_seq == 4


@pytest.fixture
async def outbox(path: Path, vehicle_box: Box, clock: ManualClock) -> AsyncIterator[Outbox]:
    queue = Outbox(
        path,
        sealer=lambda seq, record, epoch: seal_record(vehicle_box, VIN, seq, record, epoch=epoch),
        clock=clock,
        config=QueueConfig(max_records=3),
        max_envelope_bytes=64 * 1024,
    )
    async with queue:
        yield queue


async def test_a_record_handed_over_is_in_the_next_batch_at_once(outbox: Outbox, clock: ManualClock) -> None:
    assert await outbox.next_batch(10) == []  # empty, and answered from the counts
    outbox.submit([_record(clock, 0)])  # not awaited: still waiting for the writer when the batch is asked
    assert [queued.seq for queued in await outbox.next_batch(10)] == [1]


async def test_a_drop_is_named_by_the_next_notice_call(outbox: Outbox, clock: ManualClock) -> None:
    assert not await outbox.emit_overflow_notice()  # nothing dropped: answered from the counts
    for n in range(4):
        await outbox.put(_record(clock, n))  # the fourth drops the oldest: the bound is 3
    assert await outbox.emit_overflow_notice()
    assert not await outbox.emit_overflow_notice(), "one notice waits at a time"


async def test_a_batch_that_came_short_answers_until_the_queue_changes(outbox: Outbox, clock: ManualClock) -> None:
    await outbox.put(_record(clock, 0))
    assert [queued.seq for queued in await outbox.next_batch(10)] == [1]  # short: everything queued
    assert await outbox.next_batch(10, skip={1}) == []  # all in flight, answered from the counts
    await outbox.put(_record(clock, 1))
    assert [queued.seq for queued in await outbox.next_batch(10, skip={1})] == [2], "a commit changes the answer"
    assert [queued.seq for queued in await outbox.next_batch(10)] == [1, 2], "a resend is not skipped"


async def test_records_marked_sent_are_named_unconfirmed_when_dropped(
    outbox: Outbox, clock: ManualClock, backend_box: Box
) -> None:
    await outbox.put(_record(clock, 0))
    outbox.mark_sent([1])  # no job of its own: the next one applies it before it drops anything
    for n in range(1, 4):
        await outbox.put(_record(clock, n))  # the fourth record drops seq 1: the bound is 3
    assert await outbox.emit_overflow_notice()
    opened = [open_record(backend_box, queued.envelope, topic_vin=VIN) for queued in await outbox.next_batch(10)]
    [notice] = [record.body for record in opened if record.kind is RecordKind.EVENT]
    assert notice["unconfirmed_seqs"] == [[1, 1]]
