"""The agent's durable queue, off the event loop: one writer thread owns the queue's database.

Every operation (`put`, `acknowledge`, `next_batch`, ...) runs on the writer thread (`writer_thread`)
against the store (`queue_store`, which documents the queue itself), in the order it was handed over;
the event loop only waits for the outcome. Durability is the store's: `put` returns once its records
are committed (synchronous=FULL), or held in memory when the disk is full, exactly as the store
decides; a refusal (`RecordTooLargeError`) or a failure reaches the caller who handed the records over.

Group commit: records handed over while a commit runs are committed together in the next one
transaction, so many producers share one fsync. Should that shared transaction fail, each producer's
records are committed again on their own, so one producer's bad record never fails another's.

`stats()` costs no I/O: the writer publishes the store's counts after every job, before it tells the
waiting callers, so a caller that awaited `put` sees its records counted. The same counts answer, on
the loop, the calls that would find nothing to do (`next_batch` of an empty queue, `emit_overflow_notice`
with no drops since the last notice) while the writer is idle and the counts are under a second old: the
uplink asks both on every pass, and a crossing to the writer thread and back costs more CPU than the
statement it runs. Another connection (`tcu owner-change`) writing the file is seen within that second.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from tcu.clock import Clock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError, StorageError
from tcu.uplink.queue_store import (
    CLOSED_STATS,
    DEFAULT_RESERVE_BYTES,
    OutboxStats,
    QueuedEnvelope,
    QueueStore,
    Sealer,
    StatementTrace,
)
from tcu.uplink.writer_thread import Writer, WriterThread, deliver
from telematics_wire.records import Record

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

_FRESH_S = 1.0  # counts younger than this answer a call that would find nothing, without the writer


@dataclass(frozen=True, slots=True)
class _Handover:
    """Records one producer handed over, and the future that tells it their outcome."""

    records: tuple[Record, ...]
    future: asyncio.Future[None]


class Outbox:
    """Use as `async with outbox:`; every method except `stats`, `epoch` and `mark_sent` awaits the writer."""

    def __init__(
        self,
        path: Path,
        *,
        sealer: Sealer,
        clock: Clock,
        config: QueueConfig,
        max_envelope_bytes: int,
        spill_limit: int = 10_000,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        trace: StatementTrace | None = None,
        writer: WriterThread | None = None,
    ) -> None:
        """`writer`: a thread shared with other queues (a fleet process's), started and stopped by its owner
        after every queue on it has closed; by default the queue starts a thread of its own at each opening."""
        self._store = QueueStore(
            path,
            sealer=sealer,
            clock=clock,
            config=config,
            max_envelope_bytes=max_envelope_bytes,
            spill_limit=spill_limit,
            reserve_bytes=reserve_bytes,
            trace=trace,
        )
        self._max_envelope = max_envelope_bytes
        self._name = f"outbox-writer {path.name}"
        self._shared_writer = writer
        self._writer: Writer | None = None  # one per opening: a restarted agent opens the queue again
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats = CLOSED_STATS
        self._notice_due = False  # the store's drops not yet named by a notice, published with the counts
        self._published_at = -_FRESH_S  # time.monotonic() of the last published counts
        # The last batch that came short, as (the counts its job published, its records and those it
        # skipped): until a job publishes other counts, everything queued is among them.
        self._drained: tuple[OutboxStats, frozenset[int]] | None = None
        # Handed over and not yet taken by a commit; shared with the writer thread under the lock.
        self._lock = threading.Lock()
        self._waiting: list[_Handover] = []
        self._commit_posted = False
        self._sent_marks: list[int] = []  # `mark_sent` since the writer's last job, which applies them first
        self._unsettled = 0  # jobs handed to the writer that have not yet published their counts
        self.commits = 0  # group commits run: how many producers shared each fsync shows in tests and benchmarks

    @property
    def epoch(self) -> bytes:
        """This queue's identity (empty for a queue made before epochs); sequence numbers are per epoch."""
        return self._store.epoch

    def stats(self) -> OutboxStats:
        """The counts as of the writer's last job; no I/O."""
        return self._stats

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Outbox:
        self._loop = asyncio.get_running_loop()
        if self._shared_writer is None:
            own = WriterThread(self._name)
            own.start()
            self._writer = own
        else:
            self._writer = self._shared_writer.lane(self._name)  # its stop closes the queue, not the thread
        try:
            await self._call(self._store.open)
        except BaseException:
            # The thread is not a daemon: one left running would hold the process at exit, and a
            # supervisor retrying the open would leak one per attempt.
            await self._writer.stop(lambda: None)
            self._writer = None
            raise
        self._post_commit()  # records handed over while the queue was closed
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            await self._writer.stop(lambda: self._refreshed(self._store.close))
        with self._lock:
            left = sum(len(handover.records) for handover in self._waiting)
        if left:
            _LOGGER.warning(
                "queue closed with %d record(s) handed over after it began to close: kept for its reopening", left
            )

    # -- writing ---------------------------------------------------------------------------------

    async def put(self, record: Record) -> None:
        await self.submit([record])

    async def put_many(self, records: Sequence[Record]) -> None:
        """Seal and queue records durably; returns once they are committed (see the store for a full
        disk). Raises `RecordTooLargeError` for records that can never be sent, after queueing the others."""
        await self.submit(records)

    def submit(self, records: Iterable[Record]) -> asyncio.Future[None]:
        """Hand records over without waiting: they are committed in order with the next group; the
        future tells their outcome (what `put_many` raises). For producers that cannot await."""
        handover = _Handover(tuple(records), asyncio.get_running_loop().create_future())
        with self._lock:
            self._waiting.append(handover)
        self._post_commit()
        return handover.future

    async def committed(self) -> None:
        """Returns once every record handed over before this call is committed (or refused); the
        writer keeps order, so one job behind them is enough."""
        await self._call(lambda: None)

    def _post_commit(self) -> None:
        """Have the writer commit what waits, unless a commit for it is posted already. While the queue is
        closed (not yet open, or restarting) records wait here, as the store would hold them in memory."""
        writer = self._writer
        with self._lock:
            if self._commit_posted or not self._waiting or writer is None or not writer.running:
                return
            self._commit_posted = True
            self._unsettled += 1
        try:
            writer.post(self._commit_waiting)
        except StorageError:  # closing meanwhile: they wait for the reopening
            with self._lock:
                self._commit_posted = False
                self._unsettled -= 1

    def _commit_waiting(self) -> None:
        """On the writer thread: commit everything handed over so far, as one group."""
        with self._lock:
            group, self._waiting = self._waiting, []
            self._commit_posted = False
        self._apply_sent_marks()
        outcomes = self._commit(group)
        self._publish_stats()
        with self._lock:
            self._unsettled -= 1  # before the producers hear of it: what they do next may ask the counts
        assert self._loop is not None  # set before the writer started
        deliver(self._loop, lambda: _settle_all(group, outcomes))

    def _commit(self, group: list[_Handover]) -> list[BaseException | None]:
        records = [record for handover in group for record in handover.records]
        try:
            reasons = self._store.store(records)
        except Exception as exc:
            if len(group) == 1:
                return [exc]
            _LOGGER.debug("group commit of %d producers failed (%s); committing each alone", len(group), exc)
            return [self._commit_alone(handover) for handover in group]
        self.commits += 1
        outcomes: list[BaseException | None] = []
        start = 0
        for handover in group:
            end = start + len(handover.records)
            outcomes.append(self._refusal(reasons[start:end]))
            start = end
        return outcomes

    def _commit_alone(self, handover: _Handover) -> BaseException | None:
        try:
            reasons = self._store.store(handover.records)
        except Exception as exc:
            return exc
        self.commits += 1
        return self._refusal(reasons)

    def _refusal(self, reasons: Sequence[str | None]) -> RecordTooLargeError | None:
        refused = [reason for reason in reasons if reason is not None]
        if not refused:
            return None
        return RecordTooLargeError(f"refused {', '.join(refused)}: over the max payload of {self._max_envelope} bytes")

    # -- draining and overflow notices -----------------------------------------------------------

    async def next_batch(self, limit: int, *, skip: Iterable[int] = ()) -> list[QueuedEnvelope]:
        """The next envelopes to send in drain order, leaving out `skip` (already in flight)."""
        skipped = frozenset(skip)  # taken here: the caller's set changes while the writer reads
        if self._settled() and (limit <= 0 or self._stats.depth == 0 or self._all_in(skipped)):
            return []
        batch, published = await self._job(lambda: self._store.next_batch(limit, skip=skipped))
        self._drained = (published, skipped.union(queued.seq for queued in batch)) if len(batch) < limit else None
        return batch

    def _all_in(self, skipped: frozenset[int]) -> bool:
        """Everything queued is in flight: the last batch came short, it and what it skipped are skipped
        now, and no job has published other counts since (a commit, an ack, a notice)."""
        drained = self._drained
        return drained is not None and drained[0] is self._stats and drained[1] <= skipped

    def mark_sent(self, seqs: Iterable[int]) -> None:
        """These records went out (see the store); nobody waits. Not a job of its own, which would wake
        the writer for every batch sent: the writer's next job applies them first, so they stay in order
        with everything else (a drop after them names them unconfirmed)."""
        if not self._running_writer().running:
            raise StorageError(f"{self._name} is not running: the queue is not open")
        with self._lock:
            self._sent_marks.extend(seqs)

    def _apply_sent_marks(self) -> None:
        with self._lock:
            marks, self._sent_marks = self._sent_marks, []
        if marks:
            self._store.mark_sent(marks)

    async def acknowledge(self, seqs: Iterable[int]) -> int:
        """Forget records the backend has stored; how many were still queued."""
        acknowledged = tuple(seqs)
        return await self._call(lambda: self._store.acknowledge(acknowledged))

    async def emit_overflow_notice(self) -> bool:
        """Queue one `queue_overflow` event naming the records dropped since the last one (see the store)."""
        if not self._notice_due and self._settled():
            return False
        return await self._call(self._store.emit_overflow_notice)

    def _settled(self) -> bool:
        """The published counts are the store's now: every job handed to the writer has published its own,
        nothing waits to be committed, and they are fresh enough for another connection's writes to count.
        (A closed queue is not settled: the call goes on to the writer, which refuses it.)"""
        writer = self._writer
        return (
            writer is not None
            and writer.running
            and not self._unsettled
            and not self._waiting
            and time.monotonic() - self._published_at < _FRESH_S
        )

    async def _call(self, job: Callable[[], T]) -> T:
        result, _ = await self._job(job)
        return result

    def _job(self, job: Callable[[], T]) -> asyncio.Future[tuple[T, OutboxStats]]:
        """Run `job` on the writer: its result, and the counts published right after it."""
        writer = self._running_writer()
        with self._lock:
            self._unsettled += 1
        try:
            return writer.call(lambda: self._settling(job))
        except BaseException:
            with self._lock:
                self._unsettled -= 1
            raise

    def _settling(self, job: Callable[[], T]) -> tuple[T, OutboxStats]:
        try:
            return self._refreshed(job), self._stats
        finally:
            with self._lock:
                self._unsettled -= 1  # before the caller hears of it: what it does next may ask the counts

    def _running_writer(self) -> Writer:
        if self._writer is None:
            raise StorageError("the queue is not open")
        return self._writer

    def _refreshed(self, job: Callable[[], T]) -> T:
        """On the writer thread: run `job`, then publish the counts, whatever the job's outcome."""
        self._apply_sent_marks()
        try:
            return job()
        finally:
            self._publish_stats()

    def _publish_stats(self) -> None:
        try:
            self._stats = self._store.stats()
        except sqlite3.Error as exc:  # the counts stay as they were; the next job tries again
            _LOGGER.warning("queue counts not refreshed: %s", exc)
            self._published_at = -_FRESH_S  # nor do they answer anything on the loop until then
            return
        self._notice_due = self._store.notice_due
        self._published_at = time.monotonic()


def _settle_all(group: list[_Handover], outcomes: list[BaseException | None]) -> None:
    for handover, outcome in zip(group, outcomes, strict=True):
        if handover.future.done():  # the producer was cancelled: its records were committed all the same
            continue
        if outcome is None:
            handover.future.set_result(None)
        else:
            handover.future.set_exception(outcome)
