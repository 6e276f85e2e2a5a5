"""The backend's SQLite store: enrolled vehicles, every record once, last value per signal.

A service provider has no real-time query into the car: what it reads is the *last transmitted
value* of each signal. Last values move only forward in signal time, so a backlog drained after an
outage never overwrites a fresher value with an older one.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2

from backend_stub.database import open_database, transaction
from tcu.uplink.envelope import seq_ranges
from tcu.uplink.records import ReceivedRecord, RecordKind, from_millis, to_millis

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vehicles (
    vin         TEXT PRIMARY KEY,
    public_key  BLOB NOT NULL,
    enrolled_ms INTEGER NOT NULL,
    online      INTEGER,
    status_ms   INTEGER
);
CREATE TABLE IF NOT EXISTS records (
    vin         TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body        BLOB NOT NULL,
    PRIMARY KEY (vin, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_time ON records (vin, created_ms);
CREATE TABLE IF NOT EXISTS last_values (
    vin   TEXT NOT NULL,
    path  TEXT NOT NULL,
    value BLOB NOT NULL,
    ts_ms INTEGER NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (vin, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejections (
    id          INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    vin         TEXT,
    reason      TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleSummary:
    vin: str
    records: int
    last_seq: int | None
    last_received: datetime | None
    online: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LastValue:
    path: str
    value: Any
    timestamp: datetime
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRecord:
    vin: str
    seq: int
    kind: str
    created: datetime
    received: datetime
    body: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    received: datetime
    topic: str
    vin: str | None
    reason: str


class BackendStore:
    def __init__(self, path: Path) -> None:
        self._db = open_database(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db)

    # -- vehicles --------------------------------------------------------------------------------

    def enroll(self, vin: str, public_key: bytes, now: datetime) -> None:
        self._db.execute(
            "INSERT INTO vehicles (vin, public_key, enrolled_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (vin) DO UPDATE SET public_key=excluded.public_key",
            (vin, public_key, to_millis(now)),
        )

    def public_key(self, vin: str) -> bytes | None:
        row = self._db.execute("SELECT public_key FROM vehicles WHERE vin=?", (vin,)).fetchone()
        return None if row is None else bytes(row[0])

    def online(self, vin: str) -> bool | None:
        row = self._db.execute("SELECT online FROM vehicles WHERE vin=?", (vin,)).fetchone()
        return None if row is None or row[0] is None else bool(row[0])

    def last_value(self, vin: str, path: str) -> Any:
        row = self._db.execute("SELECT value FROM last_values WHERE vin=? AND path=?", (vin, path)).fetchone()
        return None if row is None else cbor2.loads(row[0])

    def set_online(self, vin: str, online: bool, at: datetime) -> None:
        self._db.execute("UPDATE vehicles SET online=?, status_ms=? WHERE vin=?", (int(online), to_millis(at), vin))

    def vehicles(self) -> list[VehicleSummary]:
        rows = self._db.execute(
            "SELECT v.vin, count(r.seq), max(r.seq), max(r.received_ms), v.online "
            "FROM vehicles v LEFT JOIN records r ON r.vin = v.vin GROUP BY v.vin ORDER BY v.vin"
        ).fetchall()
        return [
            VehicleSummary(
                vin=vin,
                records=count,
                last_seq=last_seq,
                last_received=None if received is None else from_millis(received),
                online=None if online is None else bool(online),
            )
            for vin, count, last_seq, received, online in rows
        ]

    # -- records ---------------------------------------------------------------------------------

    def add_record(self, record: ReceivedRecord, received: datetime) -> bool:
        """Store a record once; False when this sequence number is already stored (a duplicate)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.vin,
                record.seq,
                record.kind.value,
                to_millis(record.created),
                to_millis(received),
                cbor2.dumps(dict(record.body)),
            ),
        )
        if cursor.rowcount == 0:
            return False
        if record.kind in (RecordKind.TELEMETRY, RecordKind.EVENT):
            self._update_last_values(record)
        return True

    def _update_last_values(self, record: ReceivedRecord) -> None:
        signals = record.body.get("signals")
        if not isinstance(signals, dict):
            return
        rows = []
        for path, item in signals.items():
            if isinstance(path, str) and isinstance(item, dict) and isinstance(item.get("t"), int) and "v" in item:
                rows.append((record.vin, path, cbor2.dumps(item["v"]), item["t"], record.seq))
        self._db.executemany(
            "INSERT INTO last_values VALUES (?, ?, ?, ?, ?) ON CONFLICT (vin, path) DO UPDATE SET "
            "value=excluded.value, ts_ms=excluded.ts_ms, seq=excluded.seq WHERE excluded.ts_ms >= last_values.ts_ms",
            rows,
        )

    def last_values(self, vin: str) -> list[LastValue]:
        return [
            LastValue(path=path, value=cbor2.loads(value), timestamp=from_millis(ts), seq=seq)
            for path, value, ts, seq in self._db.execute(
                "SELECT path, value, ts_ms, seq FROM last_values WHERE vin=? ORDER BY path", (vin,)
            )
        ]

    def records(
        self, vin: str, *, since: datetime | None = None, kind: str | None = None, limit: int | None = None
    ) -> list[StoredRecord]:
        query = "SELECT vin, seq, kind, created_ms, received_ms, body FROM records WHERE vin=?"
        params: list[Any] = [vin]
        if since is not None:
            query += " AND created_ms >= ?"
            params.append(to_millis(since))
        if kind is not None:
            query += " AND kind = ?"
            params.append(kind)
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [
            StoredRecord(vin=v, seq=s, kind=k, created=from_millis(c), received=from_millis(r), body=cbor2.loads(b))
            for v, s, k, c, r, b in self._db.execute(query, params)
        ]

    def seqs(self, vin: str) -> list[int]:
        return [int(row[0]) for row in self._db.execute("SELECT seq FROM records WHERE vin=? ORDER BY seq", (vin,))]

    def gaps(self, vin: str) -> list[list[int]]:
        """Sequence ranges below the highest received that never arrived (or were dropped by policy)."""
        seqs = set(self.seqs(vin))
        if not seqs:
            return []
        return seq_ranges(set(range(1, max(seqs) + 1)) - seqs)

    # -- rejections ------------------------------------------------------------------------------

    def add_rejection(self, *, topic: str, vin: str | None, reason: str, received: datetime) -> None:
        self._db.execute(
            "INSERT INTO rejections (received_ms, topic, vin, reason) VALUES (?, ?, ?, ?)",
            (to_millis(received), topic, vin, reason),
        )

    def rejections(self, vin: str | None = None) -> list[Rejection]:
        query = "SELECT received_ms, topic, vin, reason FROM rejections"
        params: tuple[str, ...] = ()
        if vin is not None:
            query, params = query + " WHERE vin=?", (vin,)
        return [
            Rejection(received=from_millis(r), topic=t, vin=v, reason=reason)
            for r, t, v, reason in self._db.execute(query + " ORDER BY id", params)
        ]
