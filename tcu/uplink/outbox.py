"""The durable store-and-forward queue: a SQLite file (WAL) in the data dir.

A record is sealed and given its sequence number in the same transaction that stores it, and it is
deleted only when the backend's end-to-end acknowledgement names its sequence number; so a
`kill -9` at any instant leaves every record either not yet accepted or durably queued, never half.
The next sequence number lives in its own row, so numbers are never reused after the queue empties.

Drop policy: the queue holds at most `max_records`. Past that, the oldest *telemetry* is deleted and
its sequence numbers are remembered; when the link drains, one `queue_overflow` event names them all,
so the backend can tell a dropped gap from a lost one (one notice per drain, not one per drop, so a
long outage cannot fill the queue with notices). Events and eCall records are never dropped for
telemetry; they may exceed the bound.

When the disk (or `max_bytes`) is full, SQLite refuses the write: the agent keeps every record it
already queued, holds new ones in a bounded memory spill, logs why, and writes the spill as soon as
space returns (acknowledged records free pages).

Drain order: priority first (eCall, events, telemetry), then oldest first — time series arrive in
order and the backend's "last value" compares record timestamps, so a late oldest-first drain never
overwrites a fresher value.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tcu.clock import Clock
from tcu.config import QueueConfig
from tcu.errors import RecordTooLargeError, StorageError
from tcu.uplink.envelope import seq_ranges
from tcu.uplink.records import Priority, Record, RecordKind, to_millis

_LOGGER = logging.getLogger(__name__)

Sealer = Callable[[int, Record], bytes]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY,
    priority   INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    envelope   BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_drain ON outbox (priority, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('next_seq', 1), ('dropped', 0);
CREATE TABLE IF NOT EXISTS dropped (low INTEGER NOT NULL, high INTEGER NOT NULL);
"""


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


def _is_full(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


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
    ) -> None:
        self._path = path
        self._seal = sealer
        self._clock = clock
        self._config = config
        self._max_envelope = max_envelope_bytes
        self._spill: deque[Record] = deque()
        self._spill_limit = spill_limit
        self._storage_full = False
        self._db: sqlite3.Connection | None = None
        # Cheap guards for the hot path; the database stays the truth (another process may write).
        self._depth_hint = 0
        self._drops_pending = False

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> Outbox:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._config.synchronous.upper()}")
            page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            db.execute(f"PRAGMA max_page_count={max(self._config.max_bytes // page_size, 16)}")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the queue database {self._path}: {exc}") from exc
        self._db = db
        stats = self.stats()
        self._depth_hint = stats.depth
        self._drops_pending = db.execute("SELECT 1 FROM dropped LIMIT 1").fetchone() is not None
        _LOGGER.info(
            "queue %s open: %d record(s) waiting, next sequence number %d",
            self._path,
            stats.depth,
            stats.next_seq,
        )
        return self

    def close(self) -> None:
        if self._db is not None:
            if self._spill:
                _LOGGER.error("closing the queue with %d record(s) still only in memory", len(self._spill))
            self._db.close()
            self._db = None

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
        normally: the producer must not stop because the disk is full.
        """
        if self._spill:
            self._flush_spill()
        if self._spill:
            self._spill_records(records)
            return
        try:
            self._write(records)
        except StorageError as exc:
            if not self._storage_full:
                _LOGGER.error("%s; keeping new records in memory until space returns", exc)
            self._storage_full = True
            self._spill_records(records)

    def _write(self, records: Sequence[Record], *, clear_dropped: bool = False) -> None:
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            next_seq = int(db.execute("SELECT value FROM counters WHERE name='next_seq'").fetchone()[0])
            rows, too_large = [], []
            for record in records:
                envelope = self._seal(next_seq, record)
                if len(envelope) > self._max_envelope:
                    too_large.append(f"{record.kind} record of {len(envelope)} bytes")
                    continue
                rows.append((next_seq, int(record.priority), record.kind.value, to_millis(record.created), envelope))
                next_seq += 1
            db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("UPDATE counters SET value=? WHERE name='next_seq'", (next_seq,))
            if clear_dropped:
                db.execute("DELETE FROM dropped")  # the notice and the clearing commit together
            self._evict_overflow(db, len(rows))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            reason = "disk or queue size limit full" if _is_full(exc) else "database error"
            raise StorageError(f"queue {self._path}: cannot store {len(records)} record(s): {reason} ({exc})") from exc
        if self._storage_full:
            _LOGGER.warning("queue %s writable again", self._path)
            self._storage_full = False
        if too_large:
            # The rest of the batch is stored; only these can never be sent.
            raise RecordTooLargeError(
                f"refused {', '.join(too_large)}: over the max payload of {self._max_envelope} bytes"
            )

    def _evict_overflow(self, db: sqlite3.Connection, added: int) -> None:
        self._depth_hint += added
        if self._depth_hint < self._config.max_records * 0.9:
            return  # far below the bound: no need to count
        depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        self._depth_hint = depth
        excess = depth - self._config.max_records
        if excess <= 0:
            return
        victims = [
            int(row[0])
            for row in db.execute(
                "SELECT seq FROM outbox WHERE priority=? ORDER BY seq LIMIT ?", (int(Priority.TELEMETRY), excess)
            )
        ]
        if not victims:
            return  # only events left: they are never dropped for telemetry
        self._depth_hint -= self._delete(db, victims)
        db.executemany("INSERT INTO dropped VALUES (?, ?)", seq_ranges(victims))
        self._drops_pending = True
        db.execute("UPDATE counters SET value=value+? WHERE name='dropped'", (len(victims),))
        _LOGGER.warning("queue full (%d records): dropped %d oldest telemetry record(s)", depth, len(victims))

    def emit_overflow_notice(self) -> bool:
        """Queue one `queue_overflow` event naming every telemetry record dropped since the last one."""
        if not self._drops_pending:
            return False
        db = self._conn
        ranges = db.execute("SELECT low, high FROM dropped ORDER BY low").fetchall()
        if not ranges:
            self._drops_pending = False
            return False
        seqs = [seq for low, high in ranges for seq in range(int(low), int(high) + 1)]
        notice = Record(
            kind=RecordKind.EVENT,
            created=self._clock.now(),
            body={"type": "queue_overflow", "dropped": len(seqs), "dropped_seqs": seq_ranges(seqs)},
        )
        try:
            self._drops_pending = False
            self._write([notice], clear_dropped=True)  # may drop again, setting the flag anew
        except StorageError as exc:
            self._drops_pending = True
            _LOGGER.warning("overflow notice postponed: %s", exc)
            return False
        return True

    def _spill_records(self, records: Iterable[Record]) -> None:
        self._spill.extend(records)
        while len(self._spill) > self._spill_limit:
            # Memory is finite too: shed the oldest telemetry first, as on disk.
            for index, held in enumerate(self._spill):
                if held.kind is RecordKind.TELEMETRY:
                    del self._spill[index]
                    break
            else:
                break

    def _flush_spill(self) -> None:
        """Write held records oldest first, as many as fit: in chunks, then one by one near full."""
        written, chunk = 0, 256
        while self._spill:
            batch = [self._spill[i] for i in range(min(chunk, len(self._spill)))]
            try:
                self._write(batch)
            except StorageError:
                if chunk == 1:
                    break
                chunk = 1
                continue
            for _ in batch:
                self._spill.popleft()
            written += len(batch)
        if written:
            _LOGGER.info("wrote %d record(s) held in memory to the queue; %d still held", written, len(self._spill))

    # -- draining --------------------------------------------------------------------------------

    def next_batch(self, limit: int, *, skip: Iterable[int] = ()) -> list[QueuedEnvelope]:
        """The next envelopes to send in drain order, leaving out `skip` (already in flight)."""
        if limit <= 0:
            return []
        skipped = set(skip)
        rows = self._conn.execute(
            "SELECT seq, priority, envelope FROM outbox ORDER BY priority, seq LIMIT ?", (limit + len(skipped),)
        ).fetchall()
        return [QueuedEnvelope(int(s), Priority(p), bytes(e)) for s, p, e in rows if s not in skipped][:limit]

    def acknowledge(self, seqs: Iterable[int]) -> int:
        """Forget records the backend has stored; returns how many were still queued."""
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            deleted = self._delete(db, seqs)
            db.execute("COMMIT")
            self._depth_hint -= deleted
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StorageError(f"queue {self._path}: cannot delete acknowledged records: {exc}") from exc
        if self._spill:
            self._flush_spill()
        return deleted

    @staticmethod
    def _delete(db: sqlite3.Connection, seqs: Iterable[int]) -> int:
        before = db.total_changes
        db.executemany("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", seq_ranges(seqs))
        return db.total_changes - before

    def stats(self) -> OutboxStats:
        db = self._conn
        by_priority = {
            Priority(p).name.lower(): int(n)
            for p, n in db.execute("SELECT priority, count(*) FROM outbox GROUP BY priority")
        }
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        return OutboxStats(
            depth=sum(by_priority.values()),
            depth_by_priority=by_priority,
            next_seq=int(counters["next_seq"]),
            dropped_total=int(counters["dropped"]),
            spilled_in_memory=len(self._spill),
            storage_full=self._storage_full,
        )
