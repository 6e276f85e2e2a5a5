"""The backend's SQLite store: enrolled vehicles, every record once, last value per signal.

A service provider has no real-time query into the car: what it reads is the *last transmitted
value* of each signal. Records are kept per queue epoch (a re-flashed car starts a new one, see
docs/protocol.md). A last value moves forward in the vehicle's own order: a higher sequence number of
the same epoch, or a record of another epoch received later (a second agent on the VIN, a re-flash);
never by the signal's timestamp, which a vehicle clock that jumps would make meaningless.

The store holds only what it can read back: a record is refused (`UnstorableError`, one rejection at
ingest) when its sequence number, kind or creation time is outside what SQLite, `datetime` and the
protocol hold, or when its body does not decode again as stored. A signal moves its last value only
when it is a usable reading (`signal_problem`); others stay in the record's body and are named to the
caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2

from backend_stub.database import checkpoint, migrate, open_database, savepoint, transaction
from backend_stub.errors import UnstorableError
from tcu.uplink.envelope import MAX_KIND_CHARS, seq_ranges
from tcu.uplink.records import MAX_MILLIS, ReceivedRecord, RecordKind, from_millis, to_millis
from tcu.uplink.strict_cbor import describe
from tcu.vehicle.state import MAX_LIST_ITEM_CHARS, MAX_LIST_ITEMS

MAX_STORED_SEQ = 2**63 - 1  # SQLite's INTEGER; the protocol's own bound is lower (envelope.MAX_SEQ)
MAX_PATH_CHARS = 256  # VSS paths are well under 100 characters
_MAX_INT_VALUE = 2**64  # CBOR's own integers (major types 0 and 1); bignums are not signal values

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
    epoch       BLOB NOT NULL DEFAULT x'',
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body        BLOB NOT NULL,
    scrubbed_ms INTEGER,  -- personal values taken out of the body then (backend_stub.retention)
    PRIMARY KEY (vin, epoch, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS epochs (
    vin           TEXT NOT NULL,
    epoch         BLOB NOT NULL,
    ordinal       INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    first_seq     INTEGER NOT NULL,
    PRIMARY KEY (vin, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_values (
    vin     TEXT NOT NULL,
    path    TEXT NOT NULL,
    value   BLOB NOT NULL,
    ts_ms       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    ordinal     INTEGER NOT NULL DEFAULT 0,
    received_ms INTEGER NOT NULL DEFAULT 0,
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
    epoch: bytes = b""
    kind: str
    created: datetime
    received: datetime
    body: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Added:
    """What `add_record` did. `new` is False for a sequence number already stored (a duplicate);
    `skipped` names each signal kept in the body but not taken as a last value, with the reason."""

    new: bool
    skipped: tuple[str, ...] = ()
    new_epoch: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    received: datetime
    topic: str
    vin: str | None
    reason: str


# Stores made before queue epochs: every record moves to the legacy epoch (the empty one, ordinal 0).
_MIGRATE_TO_EPOCHS = """
ALTER TABLE records RENAME TO records_before_epochs;
CREATE TABLE records (
    vin TEXT NOT NULL, epoch BLOB NOT NULL DEFAULT x'', seq INTEGER NOT NULL, kind TEXT NOT NULL,
    created_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (vin, epoch, seq)
) WITHOUT ROWID;
INSERT INTO records SELECT vin, x'', seq, kind, created_ms, received_ms, body FROM records_before_epochs;
DROP TABLE records_before_epochs;
INSERT INTO epochs SELECT vin, x'', 0, min(received_ms), min(seq) FROM records GROUP BY vin;
ALTER TABLE last_values ADD COLUMN ordinal INTEGER NOT NULL DEFAULT 0;
ALTER TABLE last_values ADD COLUMN received_ms INTEGER NOT NULL DEFAULT 0;
"""


# Stores made before retention: no record has had its personal values taken out yet.
_MIGRATE_TO_SCRUBBING = "ALTER TABLE records ADD COLUMN scrubbed_ms INTEGER"

# rewrite(kind, body) -> the body without its personal values, or None when it holds none.
BodyRewrite = Callable[[str, dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleOrder:
    """A point in a vehicle's own order (epoch by first sight, then sequence number): what came before a
    record is the records of earlier epochs and the lower sequence numbers of its own."""

    ordinal: int
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Epoch:
    """One queue a vehicle has sent from; `ordinal` orders them by first sight (0: the legacy queue)."""

    epoch: bytes
    ordinal: int
    first_seen: datetime
    first_seq: int


class BackendStore:
    def __init__(self, path: Path) -> None:
        self._db = open_database(path, _SCHEMA)
        migrate(self._db, table="records", column="epoch", script=_MIGRATE_TO_EPOCHS)
        migrate(self._db, table="records", column="scrubbed_ms", script=_MIGRATE_TO_SCRUBBING)
        self._db.execute("CREATE INDEX IF NOT EXISTS records_by_time ON records (vin, created_ms)")
        # The retention job reads only records it has not scrubbed yet, oldest received first.
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS records_unscrubbed ON records (received_ms) WHERE scrubbed_ms IS NULL"
        )
        self._ordinals: dict[tuple[str, bytes], int] = {}  # (vin, epoch) -> ordinal, once seen

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with transaction(self._db):
                yield
        except BaseException:
            self._ordinals.clear()  # it may hold an epoch first seen in the batch that just failed
            raise

    def savepoint(self) -> AbstractContextManager[None]:
        """One message's writes inside the batch transaction, undone alone when handling it fails."""
        return savepoint(self._db, "message")

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

    def add_record(self, record: ReceivedRecord, received: datetime) -> Added:
        """Store a record once (`Added.new` is False when this epoch's sequence number is already stored).

        Raises `UnstorableError`, having written nothing, for a record it could not hold or read back.
        """
        kind, created, body = _storable(record)
        ordinal, new_epoch = self._epoch_ordinal(record, received)
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO records (vin, epoch, seq, kind, created_ms, received_ms, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.vin, record.epoch, record.seq, kind, created, to_millis(received), body),
        )
        if cursor.rowcount == 0:
            return Added(new=False)
        skipped: tuple[str, ...] = ()
        if record.kind in (RecordKind.TELEMETRY, RecordKind.EVENT):
            skipped = self._update_last_values(record, received, ordinal)
        return Added(new=True, skipped=skipped, new_epoch=new_epoch)

    def _epoch_ordinal(self, record: ReceivedRecord, received: datetime) -> tuple[int, bool]:
        """The epoch's place in this vehicle's order, registering an epoch seen for the first time."""
        known = self.epoch_ordinal(record.vin, record.epoch)
        if known is not None:
            return known, False
        if record.epoch:
            (latest,) = self._db.execute("SELECT coalesce(max(ordinal), 0) FROM epochs WHERE vin=?", (record.vin,))
            ordinal = int(latest[0]) + 1
        else:
            ordinal = 0  # the legacy queue precedes every queue with an epoch
        self._db.execute(
            "INSERT INTO epochs VALUES (?, ?, ?, ?, ?)",
            (record.vin, record.epoch, ordinal, to_millis(received), record.seq),
        )
        # Not cached yet: if this message's savepoint rolls back, the next record registers it again.
        return ordinal, True

    def epoch_ordinal(self, vin: str, epoch: bytes) -> int | None:
        """Where this queue epoch stands among the vehicle's (by first sight); None if never seen."""
        key = (vin, epoch)
        cached = self._ordinals.get(key)
        if cached is not None:
            return cached
        row = self._db.execute("SELECT ordinal FROM epochs WHERE vin=? AND epoch=?", key).fetchone()
        if row is None:
            return None
        self._ordinals[key] = int(row[0])
        return int(row[0])

    def epochs(self, vin: str) -> list[Epoch]:
        return [
            Epoch(epoch=bytes(epoch), ordinal=ordinal, first_seen=_moment(seen), first_seq=first_seq)
            for epoch, ordinal, seen, first_seq in self._db.execute(
                "SELECT epoch, ordinal, first_seen_ms, first_seq FROM epochs WHERE vin=? ORDER BY ordinal", (vin,)
            )
        ]

    def _update_last_values(self, record: ReceivedRecord, received: datetime, ordinal: int) -> tuple[str, ...]:
        signals = record.body.get("signals")
        if not isinstance(signals, dict):
            return ()
        rows, skipped = [], []
        for path, item in signals.items():
            problem = signal_problem(path, item)
            if problem is None:
                rows.append(
                    (record.vin, path, cbor2.dumps(item["v"]), item["t"], record.seq, ordinal, to_millis(received))
                )
            else:
                skipped.append(f"signal {describe(path)}: {problem}")
        # Newer in the vehicle's own order, never by the stamp `t`: a vehicle clock that jumps must
        # neither pin a value nor hide a fresher one. Across epochs the one received later wins, so a
        # second agent that once used this VIN cannot freeze the car's values.
        self._db.executemany(
            "INSERT INTO last_values VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vin, path) DO UPDATE SET "
            "value=excluded.value, ts_ms=excluded.ts_ms, seq=excluded.seq, ordinal=excluded.ordinal, "
            "received_ms=excluded.received_ms WHERE CASE WHEN excluded.ordinal = last_values.ordinal "
            "THEN excluded.seq > last_values.seq ELSE excluded.received_ms >= last_values.received_ms END",
            rows,
        )
        return tuple(skipped)

    def last_values(self, vin: str) -> list[LastValue]:
        return [
            LastValue(path=path, value=cbor2.loads(value), timestamp=_moment(ts), seq=seq)
            for path, value, ts, seq in self._db.execute(
                "SELECT path, value, ts_ms, seq FROM last_values WHERE vin=? ORDER BY path", (vin,)
            )
        ]

    def records(
        self,
        vin: str,
        *,
        since: datetime | None = None,
        kind: str | None = None,
        limit: int | None = None,
        epoch: bytes | None = None,
    ) -> list[StoredRecord]:
        """A vehicle's records in its own order: epoch by epoch (oldest first), then by sequence number."""
        query = (
            "SELECT r.vin, r.epoch, r.seq, r.kind, r.created_ms, r.received_ms, r.body FROM records r "
            "LEFT JOIN epochs e ON e.vin = r.vin AND e.epoch = r.epoch WHERE r.vin=?"
        )
        params: list[Any] = [vin]
        if since is not None:
            query += " AND r.created_ms >= ?"
            params.append(to_millis(since))
        if kind is not None:
            query += " AND r.kind = ?"
            params.append(kind)
        if epoch is not None:
            query += " AND r.epoch = ?"
            params.append(epoch)
        query += " ORDER BY e.ordinal, r.seq"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [
            StoredRecord(
                vin=v, epoch=bytes(e), seq=s, kind=k, created=_moment(c), received=_moment(r), body=cbor2.loads(b)
            )
            for v, e, s, k, c, r, b in self._db.execute(query, params)
        ]

    def current_epoch(self, vin: str) -> bytes:
        """The epoch this vehicle's queue was last seen sending from (the legacy one when none is known)."""
        row = self._db.execute("SELECT epoch FROM epochs WHERE vin=? ORDER BY ordinal DESC LIMIT 1", (vin,)).fetchone()
        return b"" if row is None else bytes(row[0])

    def seqs(self, vin: str, epoch: bytes | None = None) -> list[int]:
        """Stored sequence numbers of one epoch, by default the vehicle's current one."""
        chosen = self.current_epoch(vin) if epoch is None else epoch
        return [
            int(row[0])
            for row in self._db.execute("SELECT seq FROM records WHERE vin=? AND epoch=? ORDER BY seq", (vin, chosen))
        ]

    def gaps(self, vin: str, epoch: bytes | None = None) -> list[list[int]]:
        """Sequence ranges below the highest received that never arrived (or were dropped by policy)."""
        seqs = set(self.seqs(vin, epoch))
        if not seqs:
            return []
        return seq_ranges(set(range(1, max(seqs) + 1)) - seqs)

    # -- retention and owner change (backend_stub.retention) ---------------------------------------

    def order_of(self, vin: str, epoch: bytes, seq: int) -> VehicleOrder | None:
        ordinal = self.epoch_ordinal(vin, epoch)
        return None if ordinal is None else VehicleOrder(ordinal=ordinal, seq=seq)

    def scrub_records(
        self,
        rewrite: BodyRewrite,
        now: datetime,
        *,
        received_by: datetime | None = None,
        vin: str | None = None,
        before: VehicleOrder | None = None,
        batch: int = 500,
    ) -> int:
        """Take the personal values out of records not scrubbed yet: those received at or before
        `received_by`, and/or those of `vin` before `before` in its own order. The record itself stays
        (its sequence number still deduplicates a resend, still closes a gap) and is marked scrubbed.
        One transaction per batch, so ingest waits at most one batch. Returns the bodies changed."""
        where, params = ["r.scrubbed_ms IS NULL"], list[Any]()
        if received_by is not None:
            where.append("r.received_ms <= ?")
            params.append(to_millis(received_by))
        if vin is not None:
            where.append("r.vin = ?")
            params.append(vin)
        if before is not None:
            where.append("(e.ordinal < ? OR (e.ordinal = ? AND r.seq < ?))")
            params.extend((before.ordinal, before.ordinal, before.seq))
        query = "SELECT r.vin, r.epoch, r.seq, r.kind, r.body FROM records r "
        query += "LEFT JOIN epochs e ON e.vin = r.vin AND e.epoch = r.epoch WHERE "
        query += " AND ".join(where)  # fixed conditions; every value is a parameter
        query += " ORDER BY r.received_ms LIMIT ?"
        changed, stamp = 0, to_millis(now)
        while True:
            with self.transaction():
                rows = self._db.execute(query, (*params, batch)).fetchall()
                for row_vin, epoch, seq, kind, body in rows:
                    scrubbed = rewrite(kind, cbor2.loads(body))
                    if scrubbed is None:
                        self._db.execute(
                            "UPDATE records SET scrubbed_ms=? WHERE vin=? AND epoch=? AND seq=?",
                            (stamp, row_vin, epoch, seq),
                        )
                    else:
                        self._db.execute(
                            "UPDATE records SET scrubbed_ms=?, body=? WHERE vin=? AND epoch=? AND seq=?",
                            (stamp, cbor2.dumps(scrubbed), row_vin, epoch, seq),
                        )
                        changed += 1
            if len(rows) < batch:
                return changed

    def delete_last_values(
        self,
        personal: Callable[[str], bool],
        *,
        received_by: datetime | None = None,
        vin: str | None = None,
        before: VehicleOrder | None = None,
    ) -> int:
        """Delete the last values of personal paths received at or before `received_by`, and/or of `vin`
        before `before` in its own order. Returns how many went."""
        where, params = ["1"], list[Any]()
        if received_by is not None:
            where.append("received_ms <= ?")
            params.append(to_millis(received_by))
        if vin is not None:
            where.append("vin = ?")
            params.append(vin)
        if before is not None:
            where.append("(ordinal < ? OR (ordinal = ? AND seq < ?))")
            params.extend((before.ordinal, before.ordinal, before.seq))
        deleted = 0
        with self.transaction():
            query = "SELECT vin, path FROM last_values WHERE "
            query += " AND ".join(where)  # fixed conditions; every value is a parameter
            rows = self._db.execute(query, params).fetchall()
            for row_vin, path in rows:
                if personal(path):
                    self._db.execute("DELETE FROM last_values WHERE vin=? AND path=?", (row_vin, path))
                    deleted += 1
        return deleted

    def checkpoint(self) -> bool:
        """Empty the write-ahead log after deleting (database.checkpoint)."""
        return checkpoint(self._db)

    def scrubbed(self, vin: str) -> int:
        """How many of the vehicle's records have been through scrubbing."""
        (count,) = self._db.execute("SELECT count(*) FROM records WHERE vin=? AND scrubbed_ms IS NOT NULL", (vin,))
        return int(count[0])

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


def signal_problem(path: object, item: object) -> str | None:
    """Why this `signals` entry cannot be a last value, or None when it can (docs/protocol.md)."""
    if not isinstance(path, str) or not 1 <= len(path) <= MAX_PATH_CHARS:
        return f"path is not text of 1..{MAX_PATH_CHARS} characters"
    if not isinstance(item, dict) or "v" not in item:
        return 'not a map with a value "v"'
    stamp = item.get("t")
    if type(stamp) is not int or not 0 <= stamp <= MAX_MILLIS:
        return f'time "t" is {describe(stamp)}, not milliseconds since 1970 up to year 9999'
    value = item["v"]
    if type(value) is list:
        return _list_problem(value)
    if type(value) not in (bool, int, float, str):
        return f"value is {describe(value)}, not bool, int, float or text, nor an array of text"
    if type(value) is int and not -_MAX_INT_VALUE <= value < _MAX_INT_VALUE:
        return f"value is {describe(value)}, beyond a CBOR integer"
    return None


def _list_problem(value: list[Any]) -> str | None:
    """An array value is a VSS string[] (stored DTC codes): at most a few short strings."""
    if len(value) > MAX_LIST_ITEMS:
        return f"value is an array of {len(value)} items, more than {MAX_LIST_ITEMS}"
    for index, element in enumerate(value):
        if type(element) is not str:
            return f"value is an array whose item {index} is {describe(element)}, not text"
        if not 1 <= len(element) <= MAX_LIST_ITEM_CHARS:
            chars = f"1..{MAX_LIST_ITEM_CHARS} characters"
            return f"value is an array whose item {index} is {describe(element)}, not {chars}"
    return None


def _storable(record: ReceivedRecord) -> tuple[str, int, bytes]:
    """(kind as sent, creation ms, encoded body) of a record the store can hold and read back."""
    if type(record.seq) is not int or not 1 <= record.seq <= MAX_STORED_SEQ:
        raise UnstorableError(f"sequence number {describe(record.seq)} outside 1..{MAX_STORED_SEQ}")
    kind = record.kind_name or record.kind.value
    if not 1 <= len(kind) <= MAX_KIND_CHARS:
        raise UnstorableError(f"record kind {describe(kind)} is not 1..{MAX_KIND_CHARS} characters")
    created = to_millis(record.created)
    if not 0 <= created <= MAX_MILLIS:
        raise UnstorableError(f"creation time {created} ms is outside 1970..9999")
    try:
        body = cbor2.dumps(dict(record.body))
        cbor2.loads(body)
    except (cbor2.CBOREncodeError, cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise UnstorableError(f"record body does not encode and decode again ({type(exc).__name__})") from exc
    return kind, created, body


def _moment(millis: int) -> datetime:
    # Rows written before the store checked times may hold any integer: reading never fails on them.
    return from_millis(min(max(millis, 0), MAX_MILLIS))
