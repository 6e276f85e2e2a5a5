"""The durable store-and-forward queue: a SQLite file (WAL) in the data dir (`queue_db` owns the file).

Synchronous and single-threaded: the agent reaches it only through `outbox.Outbox`, whose writer
thread owns it, so no disk I/O runs on the event loop.

A record is sealed and given its sequence number in the same transaction that stores it, and it is
deleted only when the backend's end-to-end acknowledgement names its sequence number; so a
`kill -9` at any instant leaves every record either not yet accepted or durably queued, never half.
The next sequence number lives in its own row, so numbers are never reused after the queue empties.
The queue's `epoch` (16 random bytes made with the database) travels in every envelope and ack: a
re-flashed car, a wiped data dir or a second agent on the same VIN starts a new epoch, so the backend
never takes its sequence number 1 for a resend of the old queue's. A queue made before epochs keeps
the empty (legacy) epoch, and its envelopes stay byte for byte what they were.

Drop policy (`overflow_policy`): the queue holds at most `max_records`. Past that, the oldest
*telemetry* is deleted and its sequence numbers are remembered; one `queue_overflow` event names them
(`overflow_notice`), and at most one such notice waits in the queue at a time, so a long outage cannot
fill the queue with notices. Events and eCall records are never dropped for telemetry; they may exceed
the bound.

A full disk is the same bound, found the hard way. The write-ahead log is kept small, and a reserve
file (`disk_reserve`) holds back room. A write that finds the disk full spends the reserve on a
checkpoint and then holds the database at its size (`disk_clamp`): from then on new records take the
pages of the oldest telemetry, dropped and named as above, and of acknowledged records, whose deletion
needs no new blocks. Only when no telemetry is left to drop are records held in memory
(`memory_hold`), written oldest first as soon as they fit. A disk already full at start leaves the
queue closed and records in memory, retried every 5 s.

Drain order: priority first (eCall, events, telemetry), then oldest first within a priority.

The counts `stats` reports are kept in memory as records come and go, so reading them costs no scan;
they are counted again whenever another connection (the `tcu owner-change` command) wrote the file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tcu.clock import Clock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError, StorageError, StorageFullError
from tcu.uplink.disk_clamp import DiskClamp
from tcu.uplink.memory_hold import MemoryHold, Shed
from tcu.uplink.overflow_notice import MAX_NOTICE_RANGES, notice_body
from tcu.uplink.overflow_policy import SentLedger, delete_records, drop_oldest_telemetry, evict_overflow
from tcu.uplink.queue_db import advance_next_seq, open_queue_database, read_meta, write_meta, write_transaction
from telematics_wire.envelope import EPOCH_BYTES, LEGACY_EPOCH, MAX_SEQ
from telematics_wire.records import Priority, Record, RecordKind, to_millis

_LOGGER = logging.getLogger(__name__)

Sealer = Callable[[int, Record, bytes], bytes]  # (seq, record, epoch) -> envelope
StatementTrace = Callable[[str], None]  # sees each SQL statement as SQLite runs it, on the writer's thread
_Row = tuple[int, int, str, int, bytes]  # an outbox row: seq, priority, kind, created_ms, envelope
_PRIORITIES = {int(priority): priority for priority in Priority}  # a lookup, not an enum call per row

_ACK_CHUNK = 128  # sequence numbers deleted per transaction: each needs room in the log
_EVICT_FOR_SPACE = 64  # telemetry records dropped at least per round when the disk is full
_EVICT_ROUNDS = 4  # rounds of dropping per write before records are held in memory
_RETRY_INTERVAL_S = 5.0  # a closed queue is opened again, a clamped one looks for room, this often
DEFAULT_RESERVE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class QueuedEnvelope:
    seq: int
    priority: Priority
    envelope: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStats:
    depth: int
    depth_by_priority: dict[str, int]
    next_seq: int
    dropped_total: int
    spilled_in_memory: int
    storage_full: bool
    epoch: bytes = LEGACY_EPOCH


CLOSED_STATS = OutboxStats(
    depth=0, depth_by_priority={}, next_seq=0, dropped_total=0, spilled_in_memory=0, storage_full=False
)


class QueueStore:
    """Durable queue of sealed envelopes; single writer, used from one thread."""

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
    ) -> None:
        self._path = path
        self._seal = sealer
        self._clock = clock
        self._config = config
        self._max_envelope = max_envelope_bytes
        self._trace = trace
        self._hold = MemoryHold(spill_limit)
        self._clamp = DiskClamp(path, reserve_bytes=reserve_bytes, clock=clock, retry_s=_RETRY_INTERVAL_S)
        self._storage_full = False
        self._db: sqlite3.Connection | None = None
        self._reopen_at: float | None = None  # when to try opening a queue the full disk kept closed
        self._epoch = LEGACY_EPOCH
        self._sent = SentLedger()
        self._drops_pending = False
        # The database stays the truth; these follow every commit of ours and are recounted after another's.
        self._depth: Counter[int] = Counter()
        self._next_seq = 0
        self._dropped = 0
        self._data_version = 0

    @property
    def epoch(self) -> bytes:
        """This queue's identity (empty for a queue made before epochs); sequence numbers are per epoch."""
        return self._epoch

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> QueueStore:
        """Open (or create) the queue; a full disk leaves it closed and records held in memory."""
        try:
            self._connect()
        except StorageFullError as exc:
            self._storage_full = True
            self._reopen_at = self._clock.monotonic() + _RETRY_INTERVAL_S
            _LOGGER.error("%s; holding records in memory and trying again every %.0f s", exc, _RETRY_INTERVAL_S)
        return self

    def _connect(self) -> None:
        db, self._epoch = open_queue_database(self._path, self._config)
        db.set_trace_callback(self._trace)
        self._db = db
        self._reopen_at = None
        self._count(db)
        self._sent.reset(self._next_seq)
        self._drops_pending = (
            db.execute("SELECT 1 FROM dropped LIMIT 1").fetchone() is not None or read_meta(db, "shed") is not None
        )
        self._clamp.take_reserve()
        _LOGGER.info(
            "queue %s open (epoch %s): %d record(s) waiting, next sequence number %d",
            self._path,
            self._epoch.hex() or "legacy",
            self._depth.total(),
            self._next_seq,
        )

    def close(self) -> None:
        if self._db is not None:
            self._flush_hold(until_empty=True)
            if self._hold:
                _LOGGER.error(
                    "closing the queue with %d record(s) held only in memory (disk full and no telemetry left "
                    "to drop for them): they are lost",
                    len(self._hold),
                )
            self._db.close()
            self._db = None
        elif self._hold:
            _LOGGER.error("closing with %d record(s) held only in memory: the queue never opened", len(self._hold))

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the queue is not open")
        return self._db

    # -- writing ---------------------------------------------------------------------------------

    def put(self, record: Record) -> None:
        self.put_many([record])

    def put_many(self, records: Sequence[Record]) -> None:
        """Seal and queue records durably, in one transaction.

        On a full disk the records are kept in memory instead (see module docs) and this returns
        normally: the producer must not stop because the disk is full. Raises `RecordTooLargeError`
        for records that can never be sent, after queueing the others.
        """
        refused = [reason for reason in self.store(records) if reason is not None]
        if refused:
            raise RecordTooLargeError(
                f"refused {', '.join(refused)}: over the max payload of {self._max_envelope} bytes"
            )

    def store(self, records: Sequence[Record]) -> list[str | None]:
        """`put_many` without the exception: for each record, None when queued, else why it was refused."""
        if self._db is None:
            if self._reopen_at is not None and self._clock.monotonic() >= self._reopen_at:
                self._reopen()
        elif self._clamp.due():
            self._clamp.unclamp_if_room(self._db, self._config)
        if self._hold and self._db is not None:
            self._flush_hold()
        if self._hold or self._db is None:
            return self._keep(records)
        return self._store(records)

    def _reopen(self) -> None:
        try:
            self._connect()
        except StorageError as exc:
            self._reopen_at = self._clock.monotonic() + _RETRY_INTERVAL_S
            _LOGGER.debug("queue still closed: %s", exc)

    def _store(self, records: Sequence[Record]) -> list[str | None]:
        """Write, making room when the disk is full; hold in memory what still does not fit."""
        error: StorageError | None = None
        for attempt in range(2 + _EVICT_ROUNDS):
            if attempt == 1 and not self._clamp.clamped:
                self._clamp.clamp(self._conn)
            elif attempt >= 1 and not self._evict_for_space(max(len(records), _EVICT_FOR_SPACE)):
                break
            try:
                return self._write(records)
            except StorageFullError as exc:
                error = exc
            except StorageError as exc:
                error = exc
                break
        if not self._storage_full:
            _LOGGER.error("%s; keeping new records in memory until space returns", error)
        self._storage_full = True
        return self._keep(records)

    def _write(self, records: Sequence[Record], *, notice_of: list[int] | None = None) -> list[str | None]:
        """Seal, number and insert in one transaction; for each record, None or why it is too large.

        `notice_of`: the rowids of `dropped` that this batch (one overflow notice) names; they are
        deleted in the same transaction, and the notice's sequence number is remembered.
        """
        db = self._conn
        shed = self._hold.shed
        # Sealed before the transaction (the write lock is held only for the writing) and numbered from
        # the count kept in memory: no statement reads the counter back.
        first = self._next_seq
        rows, refused, added = self._sealed_rows(records, first)
        if notice_of is not None and any(refused):
            raise StorageError(f"queue {self._path}: the overflow notice itself is too large to send")
        with write_transaction(db, f"queue {self._path}: cannot store {len(records)} record(s)"):
            if not advance_next_seq(db, first, first + len(rows)):
                # Another connection (`tcu owner-change`) queued records since we counted: ours go after
                # theirs, numbered and sealed again under the write lock this transaction now holds.
                self._count(db)
                first = self._next_seq
                rows, refused, added = self._sealed_rows(records, first)
                if not advance_next_seq(db, first, first + len(rows)):
                    raise StorageError(f"queue {self._path}: the sequence counter moved under the write lock")
            db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?)", rows)
            if shed.count:  # the memory hold's account, kept from now on by the database (or the notice)
                db.execute("UPDATE counters SET value=value+? WHERE name='dropped'", (shed.count,))
                if notice_of is None:
                    write_meta(db, "shed", Shed.from_bytes(read_meta(db, "shed")).merged(shed).to_bytes())
            if notice_of is not None:
                db.executemany("DELETE FROM dropped WHERE rowid=?", [(rowid,) for rowid in notice_of])
                write_meta(db, "shed", None)
                write_meta(db, "notice_seq", first.to_bytes(8, "big"))
            evicted = evict_overflow(db, self._config, self._depth.total() + len(rows), self._sent)
        if shed.count:
            self._hold.take_shed()
            self._dropped += shed.count
        self._depth.update(added)
        self._next_seq = first + len(rows)  # only once committed: a failed write leaves its numbers unused
        self._after_drop(evicted)
        if self._storage_full:
            _LOGGER.warning("queue %s writable again", self._path)
            self._storage_full = False
        return refused

    def _sealed_rows(self, records: Sequence[Record], first: int) -> tuple[list[_Row], list[str | None], Counter[int]]:
        """The rows to insert, numbered from `first`; for each record None or why it is too large; the
        rows counted by priority."""
        seal, epoch, limit = self._seal, self._epoch, self._max_envelope
        rows: list[_Row] = []
        refused: list[str | None] = []
        added: Counter[int] = Counter()
        seq = first
        for record in records:
            envelope = seal(seq, record, epoch)
            if len(envelope) > limit:
                refused.append(f"{record.kind} record of {len(envelope)} bytes")
                continue
            refused.append(None)
            priority = int(record.priority)
            rows.append((seq, priority, record.kind.value, to_millis(record.created), envelope))
            added[priority] += 1
            seq += 1
        return rows, refused, added

    def _after_drop(self, victims: list[int]) -> None:
        """After the commit that dropped `victims` (all telemetry)."""
        if victims:
            self._drops_pending = True
            self._sent.forget(victims)
            self._depth[int(Priority.TELEMETRY)] -= len(victims)
            self._dropped += len(victims)

    def _evict_for_space(self, count: int) -> bool:
        db = self._conn
        try:
            with write_transaction(db, f"queue {self._path}: cannot drop telemetry to make room"):
                victims = drop_oldest_telemetry(db, count, self._sent)
        except StorageError as exc:
            _LOGGER.warning("%s", exc)
            return False
        if victims:
            _LOGGER.warning("disk full: dropped the %d oldest telemetry record(s) to make room", len(victims))
            self._after_drop(victims)
        return bool(victims)

    # -- the memory hold -------------------------------------------------------------------------

    def _keep(self, records: Iterable[Record]) -> list[str | None]:
        """Hold records in memory; for each, None or why it is too large ever to be sent (judged at the
        largest seq and a full-size epoch, since a queue that opens later makes one)."""
        refused: list[str | None] = []
        kept = []
        epoch = self._epoch or bytes(EPOCH_BYTES)
        for record in records:
            size = len(self._seal(MAX_SEQ, record, epoch))
            if size > self._max_envelope:
                refused.append(f"{record.kind} record of {size} bytes")
            else:
                refused.append(None)
                kept.append(record)
        self._hold.add(kept)
        if self._hold.shed.count:
            self._drops_pending = True
        return refused

    def _flush_hold(self, *, until_empty: bool = False) -> None:
        """Write held records oldest first, as many as fit: in chunks, then one by one near full,
        dropping telemetry on disk for them once per call (every round when closing)."""
        written, chunk, rounds = 0, 256, 0
        while self._hold:
            batch = self._hold.oldest(chunk)
            try:
                refused = [reason for reason in self._write(batch) if reason is not None]
            except StorageFullError:
                if chunk > 1:
                    chunk = 1
                    continue
                rounds += 1
                if (rounds > 1 and not until_empty) or not self._evict_for_space(_EVICT_FOR_SPACE):
                    break
                continue
            except StorageError:
                break
            if refused:  # `_keep` judged them at the largest size: this is a bug, never silence
                _LOGGER.error("records held in memory were refused when written: %s", ", ".join(refused))
            self._hold.forget_oldest(len(batch))
            written += len(batch)
        if written:
            _LOGGER.info("wrote %d record(s) held in memory to the queue; %d still held", written, len(self._hold))

    # -- overflow notices ------------------------------------------------------------------------

    def emit_overflow_notice(self) -> bool:
        """Queue one `queue_overflow` event naming the records dropped since the last one.

        At most one notice waits in the queue at a time: while it does, further drops gather for the
        next one. A queue held at its bound by an outage would otherwise add a notice (which is never
        dropped) for every snapshot it drops.
        """
        db = self._db
        if not self._drops_pending or db is None or self._hold or self._notice_waiting(db):
            return False
        rows = db.execute(
            "SELECT rowid, low, high, unconfirmed FROM dropped ORDER BY low LIMIT ?", (MAX_NOTICE_RANGES,)
        ).fetchall()
        shed = Shed.from_bytes(read_meta(db, "shed")).merged(self._hold.shed)
        if not rows and not shed.count:
            self._drops_pending = False
            return False
        ranges = [(int(low), int(high), bool(maybe)) for _, low, high, maybe in rows]
        notice = Record(kind=RecordKind.EVENT, created=self._clock.now(), body=notice_body(ranges, shed))
        self._drops_pending = False  # the notice may drop again, which sets it anew
        try:
            self._write([notice], notice_of=[int(row[0]) for row in rows])
        except StorageError as exc:
            self._drops_pending = True
            _LOGGER.warning("overflow notice postponed: %s", exc)
            return False
        if len(rows) == MAX_NOTICE_RANGES:
            self._drops_pending = True  # more ranges than one notice names: the next notice goes on
        return True

    @property
    def notice_due(self) -> bool:
        """False when `emit_overflow_notice` would certainly find nothing to name."""
        return self._drops_pending

    def _notice_waiting(self, db: sqlite3.Connection) -> bool:
        stored = read_meta(db, "notice_seq")
        if stored is None:
            return False
        return db.execute("SELECT 1 FROM outbox WHERE seq=?", (int.from_bytes(stored, "big"),)).fetchone() is not None

    # -- draining --------------------------------------------------------------------------------

    def next_batch(self, limit: int, *, skip: Iterable[int] = ()) -> list[QueuedEnvelope]:
        """The next envelopes to send in drain order, leaving out `skip` (already in flight)."""
        if limit <= 0 or self._db is None:
            return []
        skipped = list(skip)
        if skipped:  # left out by SQLite: the envelopes of a whole in-flight window are never read to be dropped
            rows = self._db.execute(
                "SELECT seq, priority, envelope FROM outbox WHERE seq NOT IN (SELECT value FROM json_each(?))"
                " ORDER BY priority, seq LIMIT ?",
                (json.dumps(skipped), limit),
            )
        else:
            rows = self._db.execute(
                "SELECT seq, priority, envelope FROM outbox ORDER BY priority, seq LIMIT ?", (limit,)
            )
        return [QueuedEnvelope(seq, _PRIORITIES[priority], envelope) for seq, priority, envelope in rows]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        """These records went out: if dropped before their ack, they are named unconfirmed, not lost."""
        self._sent.add(seqs)

    def acknowledge(self, seqs: Iterable[int]) -> int:
        """Forget records the backend has stored; returns how many were still queued.

        Deletes in small transactions so each fits the log: acknowledged records can always be deleted,
        and their space is what lets new records in.
        """
        if self._db is None:
            return 0
        ordered = sorted(set(seqs))
        deleted = 0
        for start in range(0, len(ordered), _ACK_CHUNK):
            deleted += self._delete_acknowledged(ordered[start : start + _ACK_CHUNK])
        self._sent.forget(ordered)
        if deleted and self._clamp.clamped:
            self._clamp.unclamp_if_room(self._db, self._config)
        if self._hold:
            self._flush_hold()
        return deleted

    def _delete_acknowledged(self, seqs: list[int]) -> int:
        db = self._conn
        what = f"queue {self._path}: cannot delete acknowledged records"
        try:
            with write_transaction(db, what):
                deleted = delete_records(db, seqs)
        except StorageFullError:
            if self._clamp.clamped:
                raise
            self._clamp.clamp(db)  # the reserve's space lets the log take the deletion
            with write_transaction(db, what):
                deleted = delete_records(db, seqs)
        self._depth.subtract(deleted)
        return deleted.total()

    # -- counts ----------------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Cheap: from the counts kept in memory, recounted only if another connection wrote the file."""
        db = self._db
        if db is None:
            return OutboxStats(
                depth=0,
                depth_by_priority={},
                next_seq=0,
                dropped_total=self._hold.shed.count,
                spilled_in_memory=len(self._hold),
                storage_full=self._storage_full,
                epoch=self._epoch,
            )
        if _data_version(db) != self._data_version:
            self._count(db)
        by_priority = {Priority(p).name.lower(): n for p, n in sorted(self._depth.items()) if n > 0}
        return OutboxStats(
            depth=sum(by_priority.values()),
            depth_by_priority=by_priority,
            next_seq=self._next_seq,
            dropped_total=self._dropped + self._hold.shed.count,
            spilled_in_memory=len(self._hold),
            storage_full=self._storage_full,
            epoch=self._epoch,
        )

    def _count(self, db: sqlite3.Connection) -> None:
        self._data_version = _data_version(db)
        self._depth = Counter(
            {int(p): int(n) for p, n in db.execute("SELECT priority, count(*) FROM outbox GROUP BY priority")}
        )
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        self._next_seq = int(counters["next_seq"])
        self._dropped = int(counters["dropped"])


def _data_version(db: sqlite3.Connection) -> int:
    """Changes when another connection commits to the file (never for this connection's own commits)."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])
