"""The durable store-and-forward queue: a SQLite file (WAL) in the data dir (`queue_db` owns the file).

A record is sealed and given its sequence number in the same transaction that stores it, and it is
deleted only when the backend's end-to-end acknowledgement names its sequence number; so a
`kill -9` at any instant leaves every record either not yet accepted or durably queued, never half.
The next sequence number lives in its own row, so numbers are never reused after the queue empties.
The queue's `epoch` (16 random bytes made with the database) travels in every envelope and ack: a
re-flashed car, a wiped data dir or a second agent on the same VIN starts a new epoch, so the backend
never takes its sequence number 1 for a resend of the old queue's. A queue made before epochs keeps
the empty (legacy) epoch, and its envelopes stay byte for byte what they were.

Drop policy: the queue holds at most `max_records`. Past that, the oldest *telemetry* is deleted and
its sequence numbers are remembered; one `queue_overflow` event names them (`overflow_notice`), and
at most one such notice waits in the queue at a time, so a long outage cannot fill the queue with
notices. A dropped record that may already have reached the backend (it was sent, or queued by an
earlier run) is named apart, as unconfirmed. Events and eCall records are never dropped for
telemetry; they may exceed the bound.

A full disk is the same bound, found the hard way. The write-ahead log is kept small, and a reserve
file (`disk_reserve`) holds back room. A write that finds the disk full spends the reserve on a
checkpoint and then holds the database at its size: from then on new records take the pages of the
oldest telemetry, dropped and named as above, and of acknowledged records, whose deletion needs no new
blocks. Once the disk has room again the reserve is taken back and the queue may grow. Only when no
telemetry is left to drop are records held in memory (`memory_hold`), written oldest first as soon
as they fit. A disk already full at start leaves the queue closed and records in memory, retried
every 5 s.

Drain order: priority first (eCall, events, telemetry), then oldest first within a priority.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tcu.clock import Clock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError, StorageError, StorageFullError
from tcu.uplink.disk_reserve import DiskReserve
from tcu.uplink.envelope import EPOCH_BYTES, LEGACY_EPOCH, MAX_SEQ, seq_ranges
from tcu.uplink.memory_hold import MemoryHold, Shed
from tcu.uplink.overflow_notice import MAX_NOTICE_RANGES, notice_body
from tcu.uplink.queue_db import (
    config_page_limit,
    next_seq,
    open_queue_database,
    page_count,
    read_meta,
    set_page_limit,
    write_meta,
    write_transaction,
)
from tcu.uplink.records import Priority, Record, RecordKind, to_millis

_LOGGER = logging.getLogger(__name__)

Sealer = Callable[[int, Record, bytes], bytes]  # (seq, record, epoch) -> envelope

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


class Outbox:
    """Durable queue of sealed envelopes; single writer, used from one event loop thread."""

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
    ) -> None:
        self._path = path
        self._seal = sealer
        self._clock = clock
        self._config = config
        self._max_envelope = max_envelope_bytes
        self._hold = MemoryHold(spill_limit)
        self._reserve = DiskReserve(path.with_name(path.name + ".reserve"), reserve_bytes)
        self._storage_full = False
        self._clamped = False  # held at its size because the disk is full
        self._db: sqlite3.Connection | None = None
        self._retry_at: float | None = None  # when to try opening again, or to look for room
        self._epoch = LEGACY_EPOCH
        # Which records may have reached the backend: every one an earlier run queued, and those sent since.
        self._sent_below = 1
        self._sent: set[int] = set()
        # Cheap guards for the hot path; the database stays the truth (another process may write).
        self._depth_hint = 0
        self._drops_pending = False

    @property
    def epoch(self) -> bytes:
        """This queue's identity (empty for a queue made before epochs); sequence numbers are per epoch."""
        return self._epoch

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> Outbox:
        """Open (or create) the queue; a full disk leaves it closed and records held in memory."""
        try:
            self._connect()
        except StorageFullError as exc:
            self._storage_full = True
            self._retry_at = self._clock.monotonic() + _RETRY_INTERVAL_S
            _LOGGER.error("%s; holding records in memory and trying again every %.0f s", exc, _RETRY_INTERVAL_S)
        return self

    def _connect(self) -> None:
        db, self._epoch = open_queue_database(self._path, self._config)
        self._db = db
        self._retry_at = None
        stats = self.stats()
        self._depth_hint = stats.depth
        self._sent_below = stats.next_seq
        self._drops_pending = (
            db.execute("SELECT 1 FROM dropped LIMIT 1").fetchone() is not None or read_meta(db, "shed") is not None
        )
        self._reserve.take()
        _LOGGER.info(
            "queue %s open (epoch %s): %d record(s) waiting, next sequence number %d",
            self._path,
            self._epoch.hex() or "legacy",
            stats.depth,
            stats.next_seq,
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

    def __enter__(self) -> Outbox:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the queue is not open")
        return self._db

    def _retry_due(self) -> bool:
        return self._retry_at is not None and self._clock.monotonic() >= self._retry_at

    # -- writing ---------------------------------------------------------------------------------

    def put(self, record: Record) -> None:
        self.put_many([record])

    def put_many(self, records: Sequence[Record]) -> None:
        """Seal and queue records durably, in one transaction.

        On a full disk the records are kept in memory instead (see module docs) and this returns
        normally: the producer must not stop because the disk is full. Raises `RecordTooLargeError`
        for records that can never be sent, after queueing the others.
        """
        if self._db is None:
            if self._retry_due():
                self._reopen()
        elif self._clamped and self._retry_due():
            self._unclamp_if_room()
        if self._hold and self._db is not None:
            self._flush_hold()
        refused = self._keep(records) if self._hold or self._db is None else self._store(records)
        if refused:
            raise RecordTooLargeError(
                f"refused {', '.join(refused)}: over the max payload of {self._max_envelope} bytes"
            )

    def _reopen(self) -> None:
        try:
            self._connect()
        except StorageError as exc:
            self._retry_at = self._clock.monotonic() + _RETRY_INTERVAL_S
            _LOGGER.debug("queue still closed: %s", exc)

    def _store(self, records: Sequence[Record]) -> list[str]:
        """Write, making room when the disk is full; hold in memory what still does not fit."""
        error: StorageError | None = None
        for attempt in range(2 + _EVICT_ROUNDS):
            if attempt == 1 and not self._clamped:
                self._clamp_to_disk()
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

    def _write(self, records: Sequence[Record], *, notice_of: list[int] | None = None) -> list[str]:
        """Seal, number and insert in one transaction; returns the records refused as too large.

        `notice_of`: the rowids of `dropped` that this batch (one overflow notice) names; they are
        deleted in the same transaction, and the notice's sequence number is remembered.
        """
        db = self._conn
        shed = self._hold.shed
        with write_transaction(db, f"queue {self._path}: cannot store {len(records)} record(s)"):
            first = seq = next_seq(db)
            rows, too_large = [], []
            for record in records:
                envelope = self._seal(seq, record, self._epoch)
                if len(envelope) > self._max_envelope:
                    too_large.append(f"{record.kind} record of {len(envelope)} bytes")
                    continue
                rows.append((seq, int(record.priority), record.kind.value, to_millis(record.created), envelope))
                seq += 1
            if notice_of is not None and too_large:
                raise StorageError(f"queue {self._path}: the overflow notice itself is too large to send")
            db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("UPDATE counters SET value=? WHERE name='next_seq'", (seq,))
            if shed.count:  # the memory hold's account, kept from now on by the database (or the notice)
                db.execute("UPDATE counters SET value=value+? WHERE name='dropped'", (shed.count,))
                if notice_of is None:
                    write_meta(db, "shed", Shed.from_bytes(read_meta(db, "shed")).merged(shed).to_bytes())
            if notice_of is not None:
                db.executemany("DELETE FROM dropped WHERE rowid=?", [(rowid,) for rowid in notice_of])
                write_meta(db, "shed", None)
                write_meta(db, "notice_seq", first.to_bytes(8, "big"))
            evicted = self._evict_overflow(db, len(rows))
        if shed.count:
            self._hold.take_shed()
        self._depth_hint += len(rows) - len(evicted)
        self._after_drop(evicted)
        if self._storage_full:
            _LOGGER.warning("queue %s writable again", self._path)
            self._storage_full = False
        return too_large

    def _evict_overflow(self, db: sqlite3.Connection, added: int) -> list[int]:
        if self._depth_hint + added < self._config.max_records * 0.9:
            return []  # far below the bound: no need to count
        depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        self._depth_hint = depth - added  # the caller adds `added` after the commit
        excess = depth - self._config.max_records
        if excess <= 0:
            return []
        victims = self._drop_oldest_telemetry(db, excess)
        if victims:
            _LOGGER.warning("queue full (%d records): dropped %d oldest telemetry record(s)", depth, len(victims))
        return victims

    def _drop_oldest_telemetry(self, db: sqlite3.Connection, count: int) -> list[int]:
        """Inside a transaction: delete up to `count` oldest telemetry records and remember them."""
        victims = [
            int(row[0])
            for row in db.execute(
                "SELECT seq FROM outbox WHERE priority=? ORDER BY seq LIMIT ?", (int(Priority.TELEMETRY), count)
            )
        ]
        if not victims:
            return []  # only events left: they are never dropped for telemetry
        self._delete(db, victims)
        unconfirmed = [seq for seq in victims if seq < self._sent_below or seq in self._sent]
        never_sent = sorted(set(victims).difference(unconfirmed))
        db.executemany("INSERT INTO dropped VALUES (?, ?, 0)", seq_ranges(never_sent))
        db.executemany("INSERT INTO dropped VALUES (?, ?, 1)", seq_ranges(unconfirmed))
        db.execute("UPDATE counters SET value=value+? WHERE name='dropped'", (len(victims),))
        return victims

    def _after_drop(self, victims: list[int]) -> None:
        """After the commit that dropped `victims`."""
        if victims:
            self._drops_pending = True
            self._sent.difference_update(victims)

    # -- making room on a full disk --------------------------------------------------------------

    def _checkpoint(self) -> None:
        """Move the log into the database so that its space is reused from the start."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)")
        except sqlite3.Error as exc:
            _LOGGER.debug("checkpoint failed: %s", exc)

    def _clamp_to_disk(self) -> None:
        """The disk is full: spend the reserve on a checkpoint, then keep the database at its size.

        From then on SQLite refuses to grow the file before the disk would; new records take the
        pages that dropped and acknowledged records leave, and the log has room to work in.
        """
        self._reserve.release()
        self._checkpoint()
        try:
            pages = page_count(self._conn)
            set_page_limit(self._conn, pages)
        except sqlite3.Error as exc:
            _LOGGER.warning("cannot hold the queue at its size: %s", exc)
            return
        self._clamped = True
        self._retry_at = self._clock.monotonic() + _RETRY_INTERVAL_S
        _LOGGER.warning("disk full: the queue keeps to its %d pages until space returns", pages)

    def _unclamp_if_room(self) -> None:
        """Once the disk has room for the reserve (and as much again), the queue may grow again."""
        self._retry_at = self._clock.monotonic() + _RETRY_INTERVAL_S
        if not self._reserve.take():
            return
        try:
            set_page_limit(self._conn, config_page_limit(self._conn, self._config))
        except sqlite3.Error as exc:
            _LOGGER.warning("cannot let the queue grow again: %s", exc)
            return
        self._clamped = False
        self._retry_at = None
        _LOGGER.warning("queue %s: disk space is back", self._path)

    def _evict_for_space(self, count: int) -> bool:
        db = self._conn
        try:
            with write_transaction(db, f"queue {self._path}: cannot drop telemetry to make room"):
                victims = self._drop_oldest_telemetry(db, count)
        except StorageError as exc:
            _LOGGER.warning("%s", exc)
            return False
        if victims:
            self._depth_hint -= len(victims)
            _LOGGER.warning("disk full: dropped the %d oldest telemetry record(s) to make room", len(victims))
            self._after_drop(victims)
        return bool(victims)

    # -- the memory hold -------------------------------------------------------------------------

    def _keep(self, records: Iterable[Record]) -> list[str]:
        """Hold records in memory; returns those too large ever to be sent (judged at the largest seq
        and a full-size epoch, since a queue that opens later makes one)."""
        refused, kept = [], []
        epoch = self._epoch or bytes(EPOCH_BYTES)
        for record in records:
            size = len(self._seal(MAX_SEQ, record, epoch))
            if size > self._max_envelope:
                refused.append(f"{record.kind} record of {size} bytes")
            else:
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
                refused = self._write(batch)
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
        skipped = set(skip)
        rows = self._db.execute(
            "SELECT seq, priority, envelope FROM outbox ORDER BY priority, seq LIMIT ?", (limit + len(skipped),)
        ).fetchall()
        return [QueuedEnvelope(int(s), Priority(p), bytes(e)) for s, p, e in rows if s not in skipped][:limit]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        """These records went out: if dropped before their ack, they are named unconfirmed, not lost."""
        self._sent.update(seqs)

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
        self._sent.difference_update(ordered)
        if deleted and self._clamped:
            self._unclamp_if_room()
        if self._hold:
            self._flush_hold()
        return deleted

    def _delete_acknowledged(self, seqs: list[int]) -> int:
        db = self._conn
        what = f"queue {self._path}: cannot delete acknowledged records"
        try:
            with write_transaction(db, what):
                deleted = self._delete(db, seqs)
        except StorageFullError:
            if self._clamped:
                raise
            self._clamp_to_disk()  # the reserve's space lets the log take the deletion
            with write_transaction(db, what):
                deleted = self._delete(db, seqs)
        self._depth_hint -= deleted
        return deleted

    @staticmethod
    def _delete(db: sqlite3.Connection, seqs: Iterable[int]) -> int:
        before = db.total_changes
        db.executemany("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", seq_ranges(seqs))
        return db.total_changes - before

    def stats(self) -> OutboxStats:
        if self._db is None:
            return OutboxStats(
                depth=0,
                depth_by_priority={},
                next_seq=0,
                dropped_total=self._hold.shed.count,
                spilled_in_memory=len(self._hold),
                storage_full=self._storage_full,
                epoch=self._epoch,
            )
        db = self._db
        by_priority = {
            Priority(p).name.lower(): int(n)
            for p, n in db.execute("SELECT priority, count(*) FROM outbox GROUP BY priority")
        }
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        return OutboxStats(
            depth=sum(by_priority.values()),
            depth_by_priority=by_priority,
            next_seq=int(counters["next_seq"]),
            dropped_total=int(counters["dropped"]) + self._hold.shed.count,
            spilled_in_memory=len(self._hold),
            storage_full=self._storage_full,
            epoch=self._epoch,
        )
