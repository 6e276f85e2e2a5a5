"""The queue's writer thread: disk work off the event loop, group commit, outcomes to the right producer.

A slow disk is simulated by holding SQLite's COMMIT on the writer thread (a statement trace that waits
on a threading.Event); each test asserts what the event loop did meanwhile, never wall-clock time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nacl.public import Box

from hil.small_disk import SmallDiskUnavailableError, fill, small_filesystem
from tcu.clock import ManualClock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError, StorageError, StorageFullError
from tcu.uplink.outbox import Outbox
from telematics_wire.envelope import open_record
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN

_WAIT_S = 10.0  # a bound on waiting for the writer thread, never a measure


class SlowCommits:
    """A statement trace that holds each COMMIT on the writer thread while `hold` is set."""

    def __init__(self) -> None:
        self.commits = 0
        self.holding = threading.Event()  # a COMMIT is being held
        self._release = threading.Event()
        self._hold = False

    def hold(self) -> None:
        self._release.clear()
        self._hold = True

    def release(self) -> None:
        self._hold = False
        self._release.set()

    def __call__(self, statement: str) -> None:
        if statement != "COMMIT":
            return
        self.commits += 1
        if self._hold:
            self.holding.set()
            self._release.wait(_WAIT_S)
            self.holding.clear()

    async def until_holding(self) -> None:
        """Wait (off the loop) until the writer sits in a held COMMIT."""
        assert await asyncio.to_thread(self.holding.wait, _WAIT_S), "the writer never reached a COMMIT"


def _record(clock: ManualClock, kind: RecordKind = RecordKind.TELEMETRY, **body: object) -> Record:
    return Record(kind=kind, created=clock.now(), body=body or {"n": 1})


MakeOutbox = Callable[..., Outbox]


@pytest.fixture
async def slow() -> SlowCommits:
    return SlowCommits()


@pytest.fixture
async def outbox(
    tmp_path: Path, clock: ManualClock, slow: SlowCommits, sealer: Callable[[int, Record, bytes], bytes]
) -> AsyncIterator[Outbox]:
    queue = Outbox(
        tmp_path / "outbox.sqlite3",
        sealer=sealer,
        clock=clock,
        config=QueueConfig(),
        max_envelope_bytes=2048,
        trace=slow,
    )
    async with queue:
        yield queue
    slow.release()


def _bodies(backend_box: Box, queued: list) -> list[dict[str, object]]:  # type: ignore[type-arg]
    return [dict(open_record(backend_box, q.envelope, topic_vin=VIN).body) for q in queued]


async def test_the_event_loop_keeps_running_while_a_commit_waits_on_the_disk(
    outbox: Outbox, slow: SlowCommits, clock: ManualClock
) -> None:
    slow.hold()
    put = asyncio.create_task(outbox.put(_record(clock)))
    await slow.until_holding()
    ticks = 0
    for _ in range(50):  # other work on the loop goes on while the fsync is stuck
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 50
    assert not put.done(), "a put returns only once its record is committed"
    assert outbox.stats().depth == 0
    slow.release()
    await asyncio.wait_for(put, _WAIT_S)
    assert outbox.stats().depth == 1, "counted as soon as the put returns"


async def test_puts_arriving_during_a_commit_share_the_next_one_in_order(
    outbox: Outbox, slow: SlowCommits, clock: ManualClock, backend_box: Box
) -> None:
    slow.hold()
    first = asyncio.create_task(outbox.put(_record(clock, n=0)))
    await slow.until_holding()
    commits_before = slow.commits
    producers = [asyncio.create_task(outbox.put(_record(clock, n=i))) for i in range(1, 101)]
    await asyncio.sleep(0)
    assert not any(producer.done() for producer in producers)
    slow.release()
    await asyncio.wait_for(asyncio.gather(first, *producers), _WAIT_S)
    assert slow.commits - commits_before == 1, "a hundred producers, one more fsync"
    assert outbox.commits == 2, "the held put's group, then everyone else's"
    queued = await outbox.next_batch(1000)
    assert [q.seq for q in queued] == list(range(1, 102))
    assert [body["n"] for body in _bodies(backend_box, queued)] == list(range(101)), "seq order is hand-over order"


async def test_in_a_group_each_producer_gets_its_own_outcome(
    outbox: Outbox, slow: SlowCommits, clock: ManualClock, backend_box: Box
) -> None:
    slow.hold()
    first = asyncio.create_task(outbox.put(_record(clock, n=0)))
    await slow.until_holding()
    good = asyncio.create_task(outbox.put_many([_record(clock, n=1), _record(clock, n=2)]))
    too_large = asyncio.create_task(outbox.put_many([_record(clock, n=3), _record(clock, pad="x" * 4000)]))
    broken = asyncio.create_task(outbox.put(_record(clock, unsealable=True)))
    last = asyncio.create_task(outbox.put(_record(clock, n=4)))
    slow.release()
    done = await asyncio.wait_for(asyncio.gather(first, good, too_large, broken, last, return_exceptions=True), _WAIT_S)
    assert done[0] is None
    assert done[1] is None
    assert done[4] is None
    assert isinstance(done[2], RecordTooLargeError), "the big record is refused to its producer"
    assert isinstance(done[3], ValueError), "a producer's own failure is its own"
    queued = await outbox.next_batch(1000)
    assert [body["n"] for body in _bodies(backend_box, queued)] == [0, 1, 2, 3, 4], "nothing of the others lost"


async def test_a_failure_on_the_writer_reaches_its_caller_and_the_writer_goes_on(
    outbox: Outbox, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await outbox.put_many([_record(clock, n=i) for i in range(3)])

    def disk_full(seqs: object) -> int:
        raise StorageFullError("queue: cannot delete acknowledged records: disk or queue size limit full")

    monkeypatch.setattr(outbox._store, "acknowledge", disk_full)  # a disk that fails on cue
    with pytest.raises(StorageFullError, match="disk or queue size limit full"):
        await outbox.acknowledge([1])
    monkeypatch.undo()
    assert [q.seq for q in await outbox.next_batch(10)] == [1, 2, 3], "nothing queued was lost"
    assert await outbox.acknowledge([1]) == 1


async def test_records_handed_over_without_waiting_keep_their_order(outbox: Outbox, clock: ManualClock) -> None:
    futures = [outbox.submit([_record(clock, n=i)]) for i in range(20)]
    await outbox.committed()
    assert all(future.done() and future.exception() is None for future in futures)
    assert outbox.stats().next_seq == 21


async def test_records_handed_over_before_the_queue_opens_are_written_when_it_does(
    tmp_path: Path, clock: ManualClock, sealer: Callable[[int, Record, bytes], bytes]
) -> None:
    queue = Outbox(
        tmp_path / "outbox.sqlite3", sealer=sealer, clock=clock, config=QueueConfig(), max_envelope_bytes=2048
    )
    early = queue.submit([_record(clock, RecordKind.EVENT)])
    async with queue:
        await asyncio.wait_for(early, _WAIT_S)
        assert queue.stats().depth == 1
    assert queue.stats().next_seq == 0, "a closed queue reports nothing"
    with pytest.raises(StorageError, match="not open"):
        await queue.next_batch(1)


async def test_closing_commits_everything_handed_over_first(tmp_path: Path, clock: ManualClock, sealer) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "outbox.sqlite3"
    queue = Outbox(path, sealer=sealer, clock=clock, config=QueueConfig(), max_envelope_bytes=2048)
    async with queue:
        for i in range(50):
            queue.submit([_record(clock, n=i)])
    reopened = Outbox(path, sealer=sealer, clock=clock, config=QueueConfig(), max_envelope_bytes=2048)
    async with reopened:
        assert reopened.stats().depth == 50


async def test_on_a_full_disk_producers_are_not_stopped_and_nothing_queued_is_lost(
    tmp_path: Path, clock: ManualClock, sealer: Callable[[int, Record, bytes], bytes], backend_box: Box
) -> None:
    try:
        with small_filesystem(tmp_path / "disk", 2 * 1024 * 1024) as disk:
            queue = Outbox(
                disk / "outbox.sqlite3",
                sealer=sealer,
                clock=clock,
                config=QueueConfig(),
                max_envelope_bytes=2048,
                reserve_bytes=0,
            )
            async with queue:
                await queue.put_many([_record(clock, RecordKind.EVENT, n=i) for i in range(5)])
                fill(disk)
                puts = [queue.put(_record(clock, RecordKind.EVENT, n=i, pad="e" * 1500)) for i in range(5, 400)]
                await asyncio.wait_for(asyncio.gather(*puts), _WAIT_S * 3)  # none raises: held in memory
                stats = queue.stats()
                assert stats.storage_full
                assert stats.spilled_in_memory > 0
                queued = await queue.next_batch(10_000)
                assert [body["n"] for body in _bodies(backend_box, queued)][:5] == [0, 1, 2, 3, 4]
                (disk / "ballast.bin").unlink()
                clock.advance(5)
                await queue.acknowledge(q.seq for q in queued)  # room again: the hold is written, oldest first
                await queue.put(_record(clock, RecordKind.EVENT, n=400))
                assert queue.stats().spilled_in_memory == 0
                rest = [body["n"] for body in _bodies(backend_box, await queue.next_batch(10_000))]
                assert rest == sorted(rest)
                assert rest[-1] == 400
                assert len(queued) - 5 + len(rest) == 396, "every event reached the disk"
    except SmallDiskUnavailableError as exc:
        pytest.skip(str(exc))


async def test_a_queue_that_cannot_open_leaves_no_writer_thread_behind(
    tmp_path: Path, clock: ManualClock, sealer
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    before = {thread.name for thread in threading.enumerate()}
    for _attempt in range(3):  # a supervisor retrying the open
        with pytest.raises(StorageError):
            async with Outbox(path, sealer=sealer, clock=clock, config=QueueConfig(), max_envelope_bytes=2048):
                pass
    assert {thread.name for thread in threading.enumerate()} - before == set()


# Calls that would find nothing to do are answered on the loop from the counts the writer published.


async def test_a_record_handed_over_is_in_the_next_batch_at_once(outbox: Outbox, clock: ManualClock) -> None:
    assert await outbox.next_batch(10) == []  # empty, and answered from the counts
    outbox.submit([_record(clock)])  # not awaited: still waiting for the writer when the batch is asked
    assert [queued.seq for queued in await outbox.next_batch(10)] == [1]


async def test_a_batch_that_came_short_answers_until_the_queue_changes(outbox: Outbox, clock: ManualClock) -> None:
    await outbox.put(_record(clock))
    assert [queued.seq for queued in await outbox.next_batch(10)] == [1]  # short: everything queued
    assert await outbox.next_batch(10, skip={1}) == []  # all in flight, answered from the counts
    await outbox.put(_record(clock))
    assert [queued.seq for queued in await outbox.next_batch(10, skip={1})] == [2], "a commit changes the answer"
    assert [queued.seq for queued in await outbox.next_batch(10)] == [1, 2], "a resend is not skipped"


async def test_drops_are_named_by_the_next_notice_and_sent_ones_unconfirmed(
    tmp_path: Path, clock: ManualClock, sealer: Callable[[int, Record, bytes], bytes], backend_box: Box
) -> None:
    bound = QueueConfig(max_records=3)
    queue = Outbox(tmp_path / "outbox.sqlite3", sealer=sealer, clock=clock, config=bound, max_envelope_bytes=2048)
    async with queue:
        assert not await queue.emit_overflow_notice()  # nothing dropped: answered from the counts
        await queue.put(_record(clock))
        queue.mark_sent([1])  # no job of its own: the next one applies it before it drops anything
        for _ in range(3):
            await queue.put(_record(clock))  # the fourth record drops seq 1: the bound is 3
        assert await queue.emit_overflow_notice()
        assert not await queue.emit_overflow_notice(), "one notice waits at a time"
        opened = [open_record(backend_box, queued.envelope, topic_vin=VIN) for queued in await queue.next_batch(10)]
    [notice] = [record.body for record in opened if record.kind is RecordKind.EVENT]
    assert notice["unconfirmed_seqs"] == [[1, 1]]
