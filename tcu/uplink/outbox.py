"""The durable store-and-forward queue: a SQLite file (WAL) in the data dir.

A record is sealed and given its sequence number in the same transaction that stores it, and it is
deleted only when the backend's end-to-end acknowledgement names its sequence number; so a
`kill -9` at any instant leaves every record either not yet accepted or durably queued, never half.
The next sequence number lives in its own row, so numbers are never reused after the queue empties.
The queue's `epoch` (16 random bytes made with the database) travels in every envelope and ack: a
re-flashed car, a wiped data dir or a second agent on the same VIN starts a new epoch, so the backend
never takes its sequence number 1 for a resend of the old queue's. A queue made before epochs keeps
the empty (legacy) epoch, and its envelopes stay byte for byte what they were.

Drop policy: the queue holds at most `max_records`. Past that, the oldest *telemetry* is deleted and
its sequence numbers are remembered; when the link drains, one `queue_overflow` event names them all,
so the backend can tell a dropped gap from a lost one (one notice per drain, not one per drop, so a
long outage cannot fill the queue with notices). A dropped record that may already have reached the
backend (it was sent, or queued by an earlier run) is named apart, as unconfirmed. Events and eCall
records are never dropped for telemetry; they may exceed the bound.

A full disk is the same bound, found the hard way. The write-ahead log is kept small (frequent
checkpoints) so that it cannot be what fills the disk, a reserve file holds back room to delete
acknowledged records, and a write that finds the disk full first checkpoints, then drops the oldest
telemetry as above, then spends the reserve. Only when all of that fails are records held in a bounded
memory spill, written oldest first as soon as space returns; what the spill itself has to shed is
counted and named (as a count and a time span: it never had sequence numbers) in the next overflow
notice. A disk already full at start leaves the queue closed and records in memory, retried every 5 s.

Drain order: priority first (eCall, events, telemetry), then oldest first — time series arrive in
order and the backend's "last value" compares record timestamps, so a late oldest-first drain never
overwrites a fresher value.
"""

from __future__ import annotations

import errno
import logging
import secrets
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tcu.clock import Clock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError, StorageError, StorageFullError
from tcu.private_files import private_database
from tcu.uplink.disk_reserve import DiskReserve
from tcu.uplink.envelope import EPOCH_BYTES, LEGACY_EPOCH, MAX_SEQ, seq_ranges
from tcu.uplink.records import Priority, Record, RecordKind, to_millis

_LOGGER = logging.getLogger(__name__)

Sealer = Callable[[int, Record, bytes], bytes]  # (seq, record, epoch) -> envelope

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        seq        INTEGER PRIMARY KEY,
        priority   INTEGER NOT NULL,
        kind       TEXT    NOT NULL,
        created_ms INTEGER NOT NULL,
        envelope   BLOB    NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_drain ON outbox (priority, seq)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters VALUES ('next_seq', 1), ('dropped', 0)",
    "CREATE TABLE IF NOT EXISTS dropped (low INTEGER NOT NULL, high INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
)
# Checkpoint the write-ahead log every 64 pages (256 KiB) and truncate it back to 1 MiB after a
# large transaction: the log, not the queue, used to fill a small disk (2 MB of log for 4 KB of data).
_WAL_AUTOCHECKPOINT_PAGES = 64
_WAL_SIZE_LIMIT_BYTES = 1024 * 1024
_ACK_CHUNK = 128  # sequence numbers deleted per transaction: each needs room in the log
_EVICT_FOR_SPACE = 64  # telemetry records dropped at least when the disk is full
_ROOM_ATTEMPTS = 6  # a write on a full disk: as it is, clamped, then up to four rounds of dropping
_REOPEN_INTERVAL_S = 5.0
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


def _storage_error(what: str, exc: BaseException) -> StorageError:
    """Our error for a failed SQLite or file operation, telling a full disk from everything else."""
    full = (isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    )
    if full:
        return StorageFullError(f"{what}: disk or queue size limit full ({exc})")
    return StorageError(f"{what}: {exc}")


@dataclass(slots=True)
class _Shed:
    """Records the memory spill had to shed: never numbered, so named by count and time span."""

    count: int = 0
    first_ms: int = 0
    last_ms: int = 0

    def add(self, record: Record) -> None:
        created = to_millis(record.created)
        self.first_ms = created if self.count == 0 else min(self.first_ms, created)
        self.last_ms = max(self.last_ms, created)
        self.count += 1


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
        self._spill: deque[Record] = deque()
        self._spill_limit = spill_limit
        self._shed = _Shed()
        self._reserve = DiskReserve(path.with_name(path.name + ".reserve"), reserve_bytes)
        self._storage_full = False
        self._clamped = False  # held at its size because the disk is full
        self._db: sqlite3.Connection | None = None
        self._reopen_at: float | None = None
        self._epoch = LEGACY_EPOCH
        # Which records may have reached the backend: every one an earlier run queued, and those sent since.
        self._sent_below = 1
        self._sent: set[int] = set()
        # Cheap guards for the hot path; the database stays the truth (another process may write).
        self._depth_hint = 0
        self._drops_pending = False
        self._notice_seq: int | None = None  # the overflow notice still queued, if any

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
            self._reopen_at = self._clock.monotonic() + _REOPEN_INTERVAL_S
            _LOGGER.error("%s; holding records in memory and trying again every %.0f s", exc, _REOPEN_INTERVAL_S)
        return self

    def _connect(self) -> None:
        try:
            private_database(self._path)  # 0600 (its -wal and -shm too), a new data directory 0700
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise _storage_error(f"cannot open the queue database {self._path}", exc) from exc
        try:
            self._epoch = self._prepare(db)
        except sqlite3.Error as exc:
            db.close()
            raise _storage_error(f"cannot open the queue database {self._path}", exc) from exc
        self._db = db
        self._reopen_at = None
        stats = self.stats()
        self._depth_hint = stats.depth
        self._sent_below = stats.next_seq
        self._drops_pending = db.execute("SELECT 1 FROM dropped LIMIT 1").fetchone() is not None
        self._reserve.take()
        _LOGGER.info(
            "queue %s open (epoch %s): %d record(s) waiting, next sequence number %d",
            self._path,
            self._epoch.hex() or "legacy",
            stats.depth,
            stats.next_seq,
        )

    def _prepare(self, db: sqlite3.Connection) -> bytes:
        """Settings, schema and migrations; returns the queue's epoch, made here for a new queue."""
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._config.synchronous.upper()}")
        db.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_BYTES}")
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        db.execute(f"PRAGMA max_page_count={max(self._config.max_bytes // page_size, 16)}")
        db.execute("BEGIN IMMEDIATE")
        existed = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='counters'").fetchone()
        for statement in _SCHEMA:
            db.execute(statement)
        if "unconfirmed" not in {row[1] for row in db.execute("PRAGMA table_info(dropped)")}:
            db.execute("ALTER TABLE dropped ADD COLUMN unconfirmed INTEGER NOT NULL DEFAULT 0")
        row = db.execute("SELECT value FROM meta WHERE name='epoch'").fetchone()
        if row is None:
            epoch = LEGACY_EPOCH if existed else secrets.token_bytes(EPOCH_BYTES)
            db.execute("INSERT INTO meta VALUES ('epoch', ?)", (epoch,))
        else:
            epoch = bytes(row[0])
        db.execute("COMMIT")
        return epoch

    def _reopen_if_due(self) -> None:
        if self._reopen_at is None or self._clock.monotonic() < self._reopen_at:
            return
        try:
            self._connect()
        except StorageError as exc:
            self._reopen_at = self._clock.monotonic() + _REOPEN_INTERVAL_S
            _LOGGER.debug("queue still closed: %s", exc)

    def close(self) -> None:
        if self._db is not None:
            if self._spill:
                self._flush_spill()
            if self._spill:
                _LOGGER.error(
                    "closing the queue with %d record(s) held only in memory (disk full, nothing left to drop "
                    "for them): they are lost",
                    len(self._spill),
                )
            self._db.close()
            self._db = None
        elif self._spill:
            _LOGGER.error("closing with %d record(s) held only in memory: the queue never opened", len(self._spill))

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
            self._reopen_if_due()
        if self._spill and self._db is not None:
            self._flush_spill()
        refused = self._hold(records) if self._spill or self._db is None else self._store(records)
        if refused:
            raise RecordTooLargeError(
                f"refused {', '.join(refused)}: over the max payload of {self._max_envelope} bytes"
            )

    def _store(self, records: Sequence[Record]) -> list[str]:
        """Write, making room when the disk is full; hold in memory what still does not fit."""
        error: StorageError | None = None
        for attempt in range(_ROOM_ATTEMPTS):
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
        return self._hold(records)

    def _write(self, records: Sequence[Record], *, clear_dropped: bool = False) -> list[str]:
        """Seal, number and insert in one transaction; returns the records refused as too large."""
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            next_seq = int(db.execute("SELECT value FROM counters WHERE name='next_seq'").fetchone()[0])
            rows, too_large = [], []
            for record in records:
                envelope = self._seal(next_seq, record, self._epoch)
                if len(envelope) > self._max_envelope:
                    too_large.append(f"{record.kind} record of {len(envelope)} bytes")
                    continue
                rows.append((next_seq, int(record.priority), record.kind.value, to_millis(record.created), envelope))
                next_seq += 1
            db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("UPDATE counters SET value=? WHERE name='next_seq'", (next_seq,))
            if clear_dropped:
                db.execute("DELETE FROM dropped")  # the notice and the clearing commit together
            evicted = self._evict_overflow(db, len(rows))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise _storage_error(f"queue {self._path}: cannot store {len(records)} record(s)", exc) from exc
        self._after_drop(evicted)
        if self._storage_full:
            _LOGGER.warning("queue %s writable again", self._path)
            self._storage_full = False
        return too_large

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                _LOGGER.exception("rollback failed; SQLite rolls back on the next statement")

    def _evict_overflow(self, db: sqlite3.Connection, added: int) -> list[int]:
        self._depth_hint += added
        if self._depth_hint < self._config.max_records * 0.9:
            return []  # far below the bound: no need to count
        depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        self._depth_hint = depth
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
        self._depth_hint -= self._delete(db, victims)
        unconfirmed = [seq for seq in victims if seq < self._sent_below or seq in self._sent]
        never_sent = sorted(set(victims).difference(unconfirmed))
        db.executemany("INSERT INTO dropped VALUES (?, ?, 0)", seq_ranges(never_sent))
        db.executemany("INSERT INTO dropped VALUES (?, ?, 1)", seq_ranges(unconfirmed))
        db.execute("UPDATE counters SET value=value+? WHERE name='dropped'", (len(victims),))
        return victims

    def _after_drop(self, victims: list[int]) -> None:
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

        From then on SQLite refuses to grow the file before the disk would, new records take the
        pages dropped and acknowledged records leave, and the log has room to work in.
        """
        self._reserve.release()
        self._checkpoint()
        try:
            pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
            self._conn.execute(f"PRAGMA max_page_count={pages}")
        except sqlite3.Error as exc:
            _LOGGER.warning("cannot hold the queue at its size: %s", exc)
            return
        self._clamped = True
        _LOGGER.warning("disk full: the queue keeps to its %d pages until space returns", pages)

    def _unclamp_if_room(self) -> None:
        if not self._clamped or not self._reserve.take():
            return
        page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        self._conn.execute(f"PRAGMA max_page_count={max(self._config.max_bytes // page_size, 16)}")
        self._clamped = False
        _LOGGER.warning("queue %s: disk space is back", self._path)

    def _evict_for_space(self, count: int) -> bool:
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            victims = self._drop_oldest_telemetry(db, count)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            _LOGGER.warning("cannot drop telemetry to make room: %s", exc)
            return False
        if victims:
            _LOGGER.warning("disk full: dropped the %d oldest telemetry record(s) to make room", len(victims))
            self._after_drop(victims)
        return bool(victims)

    # -- the memory spill ------------------------------------------------------------------------

    def _hold(self, records: Iterable[Record]) -> list[str]:
        """Keep records in memory; returns those too large ever to be sent (judged at the largest seq)."""
        refused = []
        for record in records:
            size = len(self._seal(MAX_SEQ, record, self._epoch))
            if size > self._max_envelope:
                refused.append(f"{record.kind} record of {size} bytes")
            else:
                self._spill.append(record)
        while len(self._spill) > self._spill_limit:
            # Memory is finite too: shed the oldest telemetry first, as on disk, and count it.
            for index, held in enumerate(self._spill):
                if held.kind is RecordKind.TELEMETRY:
                    del self._spill[index]
                    self._shed.add(held)
                    self._drops_pending = True
                    break
            else:
                break
        return refused

    def _flush_spill(self) -> None:
        """Write held records oldest first, as many as fit: in chunks, then one by one near full."""
        written, chunk, room_made = 0, 256, False
        while self._spill:
            batch = [self._spill[i] for i in range(min(chunk, len(self._spill)))]
            try:
                self._write(batch)
            except StorageFullError:
                if chunk > 1:
                    chunk = 1
                    continue
                if room_made or not self._evict_for_space(_EVICT_FOR_SPACE):
                    break
                room_made = True
                continue
            except StorageError:
                break
            for _ in batch:
                self._spill.popleft()
            written += len(batch)
        if written:
            _LOGGER.info("wrote %d record(s) held in memory to the queue; %d still held", written, len(self._spill))

    # -- overflow notices ------------------------------------------------------------------------

    def emit_overflow_notice(self) -> bool:
        """Queue one `queue_overflow` event naming every record dropped since the last one.

        At most one notice waits in the queue at a time: while it does, further drops gather in the
        `dropped` table for the next one. A queue held at its bound by an outage would otherwise add a
        notice (which is never dropped) for every snapshot it drops.
        """
        if not self._drops_pending or self._db is None or self._spill or self._notice_waiting(self._db):
            return False
        ranges = self._db.execute("SELECT low, high, unconfirmed FROM dropped ORDER BY low").fetchall()
        if not ranges and not self._shed.count:
            self._drops_pending = False
            return False
        never_sent = [seq for low, high, maybe in ranges if not maybe for seq in range(int(low), int(high) + 1)]
        unconfirmed = [seq for low, high, maybe in ranges if maybe for seq in range(int(low), int(high) + 1)]
        body: dict[str, Any] = {
            "type": "queue_overflow",
            "dropped": len(never_sent) + len(unconfirmed) + self._shed.count,
            "dropped_seqs": seq_ranges(never_sent),
        }
        if unconfirmed:
            body["unconfirmed_seqs"] = seq_ranges(unconfirmed)
        shed = self._shed
        if shed.count:
            body["unnumbered"] = shed.count
            body["unnumbered_span_ms"] = [shed.first_ms, shed.last_ms]
        notice = Record(kind=RecordKind.EVENT, created=self._clock.now(), body=body)
        notice_seq = int(self._db.execute("SELECT value FROM counters WHERE name='next_seq'").fetchone()[0])
        try:
            self._drops_pending = False
            self._shed = _Shed()
            self._write([notice], clear_dropped=True)  # may drop again, setting the flag anew
        except StorageError as exc:
            self._drops_pending = True
            self._shed = shed
            _LOGGER.warning("overflow notice postponed: %s", exc)
            return False
        self._notice_seq = notice_seq
        return True

    def _notice_waiting(self, db: sqlite3.Connection) -> bool:
        if self._notice_seq is None:
            return False
        if db.execute("SELECT 1 FROM outbox WHERE seq=?", (self._notice_seq,)).fetchone() is not None:
            return True
        self._notice_seq = None  # acknowledged: the next notice may go
        return False

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

        Deletes in small transactions so each fits the log, spending the reserve when the disk is full:
        acknowledged records can always be deleted, and their space is what lets new records in.
        """
        if self._db is None:
            return 0
        ordered = sorted(set(seqs))
        deleted = 0
        for start in range(0, len(ordered), _ACK_CHUNK):
            deleted += self._delete_acknowledged(ordered[start : start + _ACK_CHUNK])
        self._sent.difference_update(ordered)
        if deleted:
            self._unclamp_if_room()
        if self._spill:
            self._flush_spill()
        return deleted

    def _delete_acknowledged(self, seqs: list[int]) -> int:
        db = self._conn
        for attempt in range(2):
            try:
                db.execute("BEGIN IMMEDIATE")
                deleted = self._delete(db, seqs)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(db)
                error = _storage_error(f"queue {self._path}: cannot delete acknowledged records", exc)
                if attempt == 0 and isinstance(error, StorageFullError):
                    self._clamp_to_disk()
                    continue
                raise error from exc
            self._depth_hint -= deleted
            return deleted
        raise AssertionError("unreachable")

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
                dropped_total=0,
                spilled_in_memory=len(self._spill),
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
            dropped_total=int(counters["dropped"]) + self._shed.count,
            spilled_in_memory=len(self._spill),
            storage_full=self._storage_full,
            epoch=self._epoch,
        )
