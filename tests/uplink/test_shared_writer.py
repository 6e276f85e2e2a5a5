"""Several queues on one writer thread (a fleet process's): each keeps its records and their order, closes
on its own without ending the thread, and fails on its own; the thread's owner ends it after them all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nacl.public import Box

from tcu.clock import ManualClock
from tcu.config import QueueConfig
from tcu.errors import StorageError, StorageFullError
from tcu.uplink.outbox import Outbox
from tcu.uplink.writer_thread import WriterThread
from telematics_wire.envelope import open_record
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN

Sealer = Callable[[int, Record, bytes], bytes]


def _record(clock: ManualClock, **body: object) -> Record:
    return Record(kind=RecordKind.TELEMETRY, created=clock.now(), body=body)


@pytest.fixture
async def writer() -> AsyncIterator[WriterThread]:
    shared = WriterThread("shared-writer")
    shared.start()
    yield shared
    await shared.stop(lambda: None)


def _outbox(path: Path, sealer: Sealer, clock: ManualClock, writer: WriterThread | None) -> Outbox:
    return Outbox(path, sealer=sealer, clock=clock, config=QueueConfig(), max_envelope_bytes=2048, writer=writer)


async def _numbers(outbox: Outbox, backend_box: Box) -> list[object]:
    queued = await outbox.next_batch(1000)
    return [open_record(backend_box, q.envelope, topic_vin=VIN).body["n"] for q in queued]


def _own_writer_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("outbox-writer")]


async def test_two_queues_on_one_writer_keep_each_their_records_in_order(
    tmp_path: Path, clock: ManualClock, sealer: Sealer, writer: WriterThread, backend_box: Box
) -> None:
    first, second = (_outbox(tmp_path / name, sealer, clock, writer) for name in ("a.sqlite3", "b.sqlite3"))
    async with first, second:
        assert _own_writer_threads() == [], "neither queue started a thread of its own"
        handed = []
        for number in range(100):  # interleaved on the one thread
            handed.append(first.submit([_record(clock, n=number)]))
            handed.append(second.submit([_record(clock, n=1000 + number)]))
        await asyncio.gather(*handed)
        assert await _numbers(first, backend_box) == list(range(100))
        assert await _numbers(second, backend_box) == list(range(1000, 1100))
        assert first.stats().depth == second.stats().depth == 100


async def test_closing_one_queue_leaves_the_other_and_the_thread_running(
    tmp_path: Path, clock: ManualClock, sealer: Sealer, writer: WriterThread, backend_box: Box
) -> None:
    first = _outbox(tmp_path / "a.sqlite3", sealer, clock, writer)
    second = _outbox(tmp_path / "b.sqlite3", sealer, clock, writer)
    async with second:
        async with first:
            for number in range(20):
                first.submit([_record(clock, n=number)])  # not awaited: the close commits them first
        assert writer.running
        with pytest.raises(StorageError, match="not running"):
            await first.next_batch(1)
        await second.put(_record(clock, n=7))
        assert await _numbers(second, backend_box) == [7]
        async with first:  # an agent's restart opens its queue again on the same thread
            assert await _numbers(first, backend_box) == list(range(20))


async def test_the_owner_ends_the_thread_after_the_queues_closed_and_nothing_is_lost(
    tmp_path: Path, clock: ManualClock, sealer: Sealer, backend_box: Box
) -> None:
    shared = WriterThread("shared-writer")
    shared.start()
    paths = [tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"]
    queues = [_outbox(path, sealer, clock, shared) for path in paths]
    for queue in queues:
        async with queue:
            await queue.put(_record(clock, n=1))
    assert shared.running
    await shared.stop(lambda: None)
    assert not shared.running
    assert "shared-writer" not in [thread.name for thread in threading.enumerate()]
    for path in paths:  # closed properly: each opens again on a writer of its own
        async with _outbox(path, sealer, clock, None) as reopened:
            assert await _numbers(reopened, backend_box) == [1]


async def test_a_failing_job_of_one_queue_leaves_the_other_queue_alone(
    tmp_path: Path,
    clock: ManualClock,
    sealer: Sealer,
    writer: WriterThread,
    backend_box: Box,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = (_outbox(tmp_path / name, sealer, clock, writer) for name in ("a.sqlite3", "b.sqlite3"))
    async with first, second:
        await first.put(_record(clock, n=0))
        await second.put(_record(clock, n=0))

        def disk_full(seqs: object) -> int:
            raise StorageFullError("queue: cannot delete acknowledged records: disk or queue size limit full")

        monkeypatch.setattr(first._store, "acknowledge", disk_full)
        failing = [first.acknowledge([1]), first.put(_record(clock, unsealable=True))]
        working = [second.put(_record(clock, n=1)), second.acknowledge([1])]
        outcomes = await asyncio.gather(*failing, *working, return_exceptions=True)
        assert isinstance(outcomes[0], StorageFullError)
        assert isinstance(outcomes[1], ValueError)
        assert outcomes[2:] == [None, 1], "the other queue's jobs ran as if alone"
        assert await _numbers(second, backend_box) == [1]
        monkeypatch.undo()
        assert await first.acknowledge([1]) == 1, "the failing queue goes on too"
