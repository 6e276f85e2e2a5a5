"""The backend's SQLite store: enrolled vehicles, every record once, last value per signal.

A service provider has no real-time query into the car: what it reads is the *last transmitted
value* of each signal. Records are kept per queue epoch (a re-flashed car starts a new one, see
docs/protocol.md). A last value moves forward in the vehicle's own order: a higher sequence number of
the same epoch, or a record of another epoch received later (a second agent on the VIN, a re-flash);
never by the signal's timestamp, which a vehicle clock that jumps would make meaningless.

The store holds only what it can read back (`backend_stub.storable`: a record outside it is refused with
`UnstorableError`); a signal moves its last value only when it is a usable reading (`signal_problem`),
others stay in the record's body and are named to the caller. Its tables: `backend_stub.store_schema`.
Inside a transaction the last values are held and written at its commit, once per signal and run of a
vehicle's records (`backend_stub.held_last_values`: the same end as one by one, cheaper).

`BackendStore` is the SQLite store; `backend_stub.store_postgres.PostgresStore` runs the same queries on
PostgreSQL, for ingest workers on several hosts (`backend_stub.store_location` picks one from the config).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2

from backend_stub.database import checkpoint, savepoint, transaction
from backend_stub.errors import DatabaseError
from backend_stub.event_readings import record_signals
from backend_stub.held_last_values import HeldRecord, folded_rows
from backend_stub.storable import (
    MAX_PATH_CHARS,
    MAX_STORED_SEQ,
    signal_problem,
    storable,
    stored_moment,
    usable_signals,
)
from backend_stub.store_retention import BodyRewrite, StoreRetention, VehicleOrder
from backend_stub.store_schema import open_store
from backend_stub.store_sql import SqlConnection
from telematics_wire.envelope import seq_ranges
from telematics_wire.records import ReceivedRecord, RecordKind, from_millis, to_millis

__all__ = [  # signal_problem, the limits, BodyRewrite and VehicleOrder live elsewhere; importable from here as before
    "MAX_PATH_CHARS",
    "MAX_STORED_SEQ",
    "Added",
    "BackendStore",
    "BodyRewrite",
    "Epoch",
    "LastValue",
    "Rejection",
    "StoredRecord",
    "VehicleOrder",
    "VehicleSummary",
    "signal_problem",
]


# Newer in the vehicle's own order, never by the stamp `t`: a vehicle clock that jumps must neither pin
# a value nor hide a fresher one. Across epochs the one received later wins, so a second agent that once
# used this VIN cannot freeze the car's values. (An INSERT into last_values ends with it.)
LAST_VALUE_RULE = (
    "ON CONFLICT (vin, path) DO UPDATE SET "
    "value=excluded.value, ts_ms=excluded.ts_ms, seq=excluded.seq, ordinal=excluded.ordinal, "
    "received_ms=excluded.received_ms WHERE CASE WHEN excluded.ordinal = last_values.ordinal "
    "THEN excluded.seq > last_values.seq ELSE excluded.received_ms >= last_values.received_ms END"
)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Epoch:
    """One queue a vehicle has sent from; `ordinal` orders them by first sight (0: the legacy queue)."""

    epoch: bytes
    ordinal: int
    first_seen: datetime
    first_seq: int


class BackendStore(StoreRetention):
    _holding = False  # inside `transaction`: last values held, written folded at its commit (PostgresStore: never)

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self._file = open_store(path)
        if read_only:  # a reader beside the running backend (`BackendStub.reader`): a write is an error
            self._file.execute("PRAGMA query_only=ON")
        self._db: SqlConnection = self._file  # what the queries run on (PostgresStore: its own)
        self._ordinals: dict[tuple[str, bytes], int] = {}  # (vin, epoch) -> ordinal, once seen
        self._held: list[HeldRecord] = []  # this transaction's readings (backend_stub.held_last_values)
        self._written = 0  # how many of `_held` are written already (a read needed them)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with transaction(self._file):
                # A batch's last values are written once per signal and run of a vehicle's records, at
                # the commit, not per record: 100 records of one car move each signal once.
                self._holding = True
                try:
                    yield
                    self._write_held()
                finally:
                    self._holding = False
                    self._held.clear()
                    self._written = 0
        except BaseException:
            self._ordinals.clear()  # it may hold an epoch first seen in the batch that just failed
            raise

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """One message's writes inside the batch transaction, undone alone when handling it fails."""
        held, written = len(self._held), self._written
        try:
            with savepoint(self._file, "message"):
                yield
        except BaseException:
            del self._held[held:]
            self._written = min(self._written, written)  # written inside it: undone with it, due again
            raise

    def checkpoint(self) -> bool:
        """Empty the write-ahead log after deleting (database.checkpoint)."""
        return checkpoint(self._file)

    def claim_services(self) -> None:
        """Called by the backend that runs the services (provisioning, measures, accounts, billing) on
        this store, before it starts them. A SQLite file is one host's: nothing to claim. PostgreSQL
        (`PostgresStore`) refuses a second backend, whose services would keep their own SQLite file."""

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
        self._write_held()  # the transaction's own reads see its last values, as SQLite's connection would
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
        kind, created, body = storable(record)
        ordinal, new_epoch = self._epoch_ordinal(record, received)
        cursor = self._db.execute(
            "INSERT INTO records (vin, epoch, seq, kind, created_ms, received_ms, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (record.vin, record.epoch, record.seq, kind, created, to_millis(received), body),
        )
        if cursor.rowcount == 0:
            return Added(new=False)
        skipped: tuple[str, ...] = ()
        if record.kind in (RecordKind.TELEMETRY, RecordKind.EVENT):
            skipped = self._update_last_values(record, received, ordinal)
        return Added(new=True, skipped=skipped, new_epoch=new_epoch)

    def add_records(self, records: Sequence[ReceivedRecord], received: datetime) -> list[Added]:
        """`add_record` of each, in order, all or none: raises `UnstorableError`, having written nothing,
        when one cannot be held. PostgreSQL (`PostgresStore`) stores them in one statement."""
        try:
            with self.savepoint():
                return [self.add_record(record, received) for record in records]
        except BaseException:
            self._ordinals.clear()  # it may hold an epoch registered inside the undone savepoint
            raise

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
            Epoch(epoch=bytes(epoch), ordinal=ordinal, first_seen=stored_moment(seen), first_seq=first_seq)
            for epoch, ordinal, seen, first_seq in self._db.execute(
                "SELECT epoch, ordinal, first_seen_ms, first_seq FROM epochs WHERE vin=? ORDER BY ordinal", (vin,)
            )
        ]

    def _update_last_values(self, record: ReceivedRecord, received: datetime, ordinal: int) -> tuple[str, ...]:
        signals = record_signals(record.body)  # a snapshot's, or what a door/lock/parked/service event sent
        if not isinstance(signals, dict):
            return ()
        paths, skipped = usable_signals(signals)
        held = HeldRecord(
            vin=record.vin,
            ordinal=ordinal,
            seq=record.seq,
            received_ms=to_millis(received),
            signals=signals,
            paths=paths,
        )
        if self._holding:
            self._held.append(held)
        else:
            self._write_last_values(folded_rows([held]))
        return skipped

    def _write_held(self) -> None:
        """Write the readings held since the transaction began, or since a read needed them."""
        if not self._holding or self._written == len(self._held):
            return
        try:
            self._write_last_values(folded_rows(self._held[self._written :]))
        except sqlite3.Error as exc:  # the batch fails whole and is not acknowledged, as a failed commit
            raise DatabaseError(f"cannot store the last values of the transaction: {exc}") from exc
        self._written = len(self._held)

    def _write_last_values(self, rows: list[tuple[Any, ...]]) -> None:
        """(vin, path, value, ts_ms, seq, ordinal, received_ms) rows, each kept where it is newer."""
        upsert = "INSERT INTO last_values VALUES (?, ?, ?, ?, ?, ?, ?) "
        upsert += LAST_VALUE_RULE
        self._db.executemany(upsert, rows)

    def last_values(self, vin: str) -> list[LastValue]:
        self._write_held()
        return [
            LastValue(path=path, value=cbor2.loads(value), timestamp=stored_moment(ts), seq=seq)
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
                vin=v,
                epoch=bytes(e),
                seq=s,
                kind=k,
                created=stored_moment(c),
                received=stored_moment(r),
                body=cbor2.loads(b),
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

    def count(self, vin: str, epoch: bytes | None = None) -> int:
        """How many records of one epoch (by default the current one) are stored: `len(seqs())` in SQL."""
        chosen = self.current_epoch(vin) if epoch is None else epoch
        row = self._db.execute("SELECT count(*) FROM records WHERE vin=? AND epoch=?", (vin, chosen)).fetchone()
        return int(row[0])

    def gaps(self, vin: str, epoch: bytes | None = None) -> list[list[int]]:
        """Sequence ranges below the highest received that never arrived (or were dropped by policy)."""
        seqs = set(self.seqs(vin, epoch))
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
