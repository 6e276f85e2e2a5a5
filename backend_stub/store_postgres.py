"""The record store on PostgreSQL: `BackendStore`'s queries and behaviour, for ingest workers on several
hosts that share one database (`[store] url`, `backend_stub.store_location`).

What differs from SQLite, and why:

- Writers run side by side. SQLite serialises them (BEGIN IMMEDIATE); PostgreSQL runs transactions at
  once under READ COMMITTED and locks rows. A record is stored once by `INSERT ... ON CONFLICT DO
  NOTHING` on its key: a second worker inserting the same record waits for the first's commit, then
  finds a duplicate. A last value keeps the vehicle's own order because the upsert's condition is
  evaluated again on the newest committed row, whichever worker commits first.
- Lock order. A batch holds many vehicles: two workers writing the last values of A then B and of B
  then A would deadlock. A transaction's last values and status changes are held back and written at
  its commit (or before a read that needs them), sorted by (vin, path), so every worker locks in one
  order. The retention job deletes in that order too.
- Epochs. A new epoch's ordinal is one more than the vehicle's highest: it is registered in a short
  transaction of its own, under a per-vehicle advisory lock, so two workers that see a new epoch at
  once agree on its place, and no batch keeps the lock. The registration stays when the batch rolls
  back (the epoch was seen); this store then reports it as new once more on the next attempt.
- `checkpoint`: VACUUM of records and last values (dead row versions pruned), and a WAL checkpoint of
  the SQLite file the other stores keep. PostgreSQL has no `secure_delete`: a scrubbed body's old bytes
  may stay in free space and WAL segments until they are reused (README, "PostgreSQL record store").
- A connection lost (server restart) fails the batch in progress (not acknowledged: the vehicles send
  it again); the next transaction connects anew.
- Relay. An ingest worker on another host tells the backend's services of the event records it stored
  through the database (`relay`, `backend_stub.store_postgres_relay`), not through a pipe.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from backend_stub import database
from backend_stub.errors import BackendConfigError, DatabaseError
from backend_stub.storable import storable
from backend_stub.store import LAST_VALUE_RULE, Added, BackendStore, LastValue, VehicleSummary
from backend_stub.store_postgres_connection import PostgresConnection, connect
from backend_stub.store_url import PostgresUrl
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis

_LOGGER = logging.getLogger(__name__)

EPOCH_LOCK_CLASS = 0x5443  # first key of the per-vehicle advisory lock; the second is hashtext(vin)
SERVICES_LOCK = 0x5443_5520_5356_4353  # held by the one backend running the services ("TCU SVCS")
_STATUS, _LAST_VALUE = 0, 1  # held-back writes, in the order a commit writes them
_SET_ONLINE = "UPDATE vehicles SET online=?, status_ms=? WHERE vin=?"
# Many last values in one statement, in the order given (psycopg placeholders: it runs on the raw connection).
_UPSERT_MANY = (
    "INSERT INTO last_values SELECT vin, path, value, ts_ms, seq, ordinal, received_ms FROM unnest("
    "%b::text[], %b::text[], %b::bytea[], %b::bigint[], %b::bigint[], %b::integer[], %b::bigint[]) "
    "WITH ORDINALITY AS given (vin, path, value, ts_ms, seq, ordinal, received_ms, n) ORDER BY n "
)
# Many records in one statement, in key order (psycopg placeholders); the keys it stored come back.
_INSERT_MANY = (
    "INSERT INTO records (vin, epoch, seq, kind, created_ms, received_ms, body) "
    "SELECT vin, epoch, seq, kind, created_ms, %b::bigint, body FROM unnest("
    "%b::text[], %b::bytea[], %b::bigint[], %b::text[], %b::bigint[], %b::bytea[]) "
    "WITH ORDINALITY AS given (vin, epoch, seq, kind, created_ms, body, n) ORDER BY n "
    "ON CONFLICT DO NOTHING RETURNING vin, epoch, seq"
)
_WITH_LAST_VALUES = (RecordKind.TELEMETRY, RecordKind.EVENT)
RELAY_CHANNEL = "tcu_event_relay"  # what the backend LISTENs on (store_postgres_relay)
_RELAY_MANY = (
    "INSERT INTO event_relay (vin, epoch, seq) SELECT vin, epoch, seq "
    "FROM unnest(%b::text[], %b::bytea[], %b::bigint[]) WITH ORDINALITY AS given (vin, epoch, seq, n) ORDER BY n"
)

# (kind, vin, path, row): `kind` and the key decide the order they are written in.
_Write = tuple[int, str, str, tuple[Any, ...]]


class PostgresStore(BackendStore):
    def __init__(self, url: PostgresUrl, *, read_only: bool = False, side_file: Path | None = None) -> None:
        self._url = url
        self._read_only = read_only
        self._side_file = side_file  # the SQLite file of the other stores, checkpointed with ours
        self._pg = connect(url, read_only=read_only)
        self._db = self._pg
        self._ordinals: dict[tuple[str, bytes], int] = {}
        self._registrar: PostgresConnection | None = None  # registers epochs in transactions of its own
        self._in_transaction = False
        self._pending: list[_Write] = []  # held back until the commit, sorted then
        self._applied = 0  # how many of `_pending` were written already (a read needed them)
        self._seen_new: list[tuple[str, bytes]] = []  # epochs this transaction registered
        self._relayed: list[tuple[str, bytes, int]] = []  # written at the commit (`relay`)
        self._unannounced: set[tuple[str, bytes]] = set()  # registered, but their transaction rolled back
        self._claimed = False  # this connection holds SERVICES_LOCK

    def close(self) -> None:
        self._pg.close()
        if self._registrar is not None:
            self._registrar.close()

    # -- transactions ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._begin()
        try:
            yield
            self._flush()
            self._write_relayed()
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, psycopg.Error):
                raise DatabaseError(f"the record store failed, nothing of the transaction was stored: {exc}") from exc
            raise
        self._commit()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """One message's writes inside the batch transaction, undone alone when handling it fails."""
        pending, applied, seen, relayed = len(self._pending), self._applied, len(self._seen_new), len(self._relayed)
        try:
            self._pg.execute("SAVEPOINT message")
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot open a savepoint: {exc}") from exc
        try:
            yield
        except BaseException:
            del self._pending[pending:]
            del self._relayed[relayed:]
            self._applied = min(self._applied, applied)  # written inside it: undone with it, due again
            self._unannounced.update(self._seen_new[seen:])
            del self._seen_new[seen:]
            try:
                self._pg.execute("ROLLBACK TO SAVEPOINT message")
                self._pg.execute("RELEASE SAVEPOINT message")
            except psycopg.Error as exc:
                raise DatabaseError(f"cannot undo a failed step, the transaction is lost: {exc}") from exc
            raise
        try:
            self._pg.execute("RELEASE SAVEPOINT message")
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot release a savepoint: {exc}") from exc

    def _begin(self) -> None:
        if self._in_transaction:  # PostgreSQL would only warn, and the inner COMMIT end the outer one
            raise DatabaseError("cannot start a database transaction: this store's transaction is still open")
        try:
            if self._pg.raw.closed or self._pg.raw.broken:
                self._reconnect()
            self._pg.execute("BEGIN")
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot start a database transaction: {exc}") from exc
        self._in_transaction = True

    def _commit(self) -> None:
        try:
            # COMMIT of a transaction a statement failed in answers ROLLBACK, without an error: the
            # command tag says which it was.
            tag = self._pg.execute("COMMIT").statusmessage
        except psycopg.Error as exc:
            self._rollback()
            raise DatabaseError(f"database commit failed, nothing of the transaction was stored: {exc}") from exc
        if tag != "COMMIT":
            self._rollback()
            raise DatabaseError(f"database commit answered {tag}: nothing of the transaction was stored")
        self._end()

    def _rollback(self) -> None:
        raw = self._pg.raw
        if not raw.closed and raw.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):  # the original error is the one the caller must see
                self._pg.execute("ROLLBACK")
        self._unannounced.update(self._seen_new)
        self._ordinals.clear()
        self._end()

    def _end(self) -> None:
        self._in_transaction = False
        self._pending.clear()
        self._applied = 0
        self._seen_new.clear()
        self._relayed.clear()

    def _reconnect(self) -> None:
        _LOGGER.warning("connection to the record store at %s lost; connecting again", self._url)
        with contextlib.suppress(psycopg.Error):
            self._pg.close()
        self._pg = self._db = connect(self._url, read_only=self._read_only)
        if self._claimed:  # a session lock goes with its connection: take it again, or stop
            self._claimed = False
            self.claim_services()

    def claim_services(self) -> None:
        """Refuse to be the second backend on this database: its provisioning, measures, accounts and
        invoices would live in a SQLite file of its own and contradict the first one's. Ingest
        workers share the store without claiming it. Raises `BackendConfigError`."""
        row = self._pg.execute("SELECT pg_try_advisory_lock(?)", (SERVICES_LOCK,)).fetchone()
        if row is None or not row[0]:
            raise BackendConfigError(
                f"another backend already runs its services on the record store at {self._url}; one backend "
                "per record store (the other stores are in its SQLite file): add ingest workers instead"
            )
        self._claimed = True

    # -- held-back writes ------------------------------------------------------------------------

    def _hold(self, write: _Write) -> None:
        if self._in_transaction:
            self._pending.append(write)
        else:
            self._write([write])

    def _flush(self) -> None:
        """Write what this transaction held back, sorted: every worker locks rows in the same order."""
        if self._applied < len(self._pending):
            self._write(sorted(self._pending[self._applied :], key=lambda write: write[:3]))
            self._applied = len(self._pending)

    def _write(self, writes: list[_Write]) -> None:
        statuses = [row for kind, _, _, row in writes if kind == _STATUS]
        values = [row for kind, _, _, row in writes if kind == _LAST_VALUE]
        if statuses:
            self._pg.executemany(_SET_ONLINE, statuses)
        # One statement per round, a round holding each (vin, path) once: PostgreSQL cannot update a row
        # twice in one statement. A vehicle's second record in the batch is the second round, so every
        # row still meets the rule in the batch's order; the first round takes every lock, sorted.
        rounds: list[list[tuple[Any, ...]]] = []
        seen: dict[tuple[str, str], int] = {}
        for row in values:
            turn = seen[row[0], row[1]] = seen.get((row[0], row[1]), -1) + 1
            if turn == len(rounds):
                rounds.append([])
            rounds[turn].append(row)
        for rows in rounds:
            self._pg.raw.execute(_UPSERT_MANY + LAST_VALUE_RULE, [list(column) for column in zip(*rows, strict=True)])

    def _write_last_values(self, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            self._hold((_LAST_VALUE, row[0], row[1], row))

    def set_online(self, vin: str, online: bool, at: datetime) -> None:
        self._hold((_STATUS, vin, "", (int(online), to_millis(at), vin)))

    # Reads that must see this transaction's held-back writes, as SQLite's connection sees its own.

    def online(self, vin: str) -> bool | None:
        self._flush()
        return super().online(vin)

    def vehicles(self) -> list[VehicleSummary]:
        self._flush()
        return super().vehicles()

    def last_value(self, vin: str, path: str) -> Any:
        self._flush()
        return super().last_value(vin, path)

    def last_values(self, vin: str) -> list[LastValue]:
        self._flush()
        return super().last_values(vin)

    # -- the relay to the backend's services ----------------------------------------------------------

    def relay(self, record: ReceivedRecord) -> None:
        """Hand a record this transaction stored to the backend's services: a row of `event_relay` and a
        NOTIFY, written at the commit. PostgreSQL delivers a notification only when its transaction
        commits, and the row commits with the record or not at all: nothing of a rolled-back batch is
        heard of, and nothing committed is lost while the backend is away (it reads the rows left)."""
        self._relayed.append((record.vin, record.epoch, record.seq))
        if not self._in_transaction:
            self._write_relayed()

    def _write_relayed(self) -> None:
        if self._relayed:
            self._pg.raw.execute(_RELAY_MANY, [list(column) for column in zip(*self._relayed, strict=True)])
            self._pg.raw.execute(f"NOTIFY {RELAY_CHANNEL}")
            self._relayed.clear()

    # -- records ---------------------------------------------------------------------------------

    def add_records(self, records: Sequence[ReceivedRecord], received: datetime) -> list[Added]:
        """`add_record` of each, in order, in one INSERT: one round trip instead of one per record.

        Raises `UnstorableError`, having written nothing, when one of them cannot be held. The rows
        go in sorted by key, so two workers given the same records (a resend) lock them in one order."""
        held = [storable(record) for record in records]  # every refusal before the first write
        first: dict[tuple[str, bytes, int], int] = {}  # a record twice in `records`: the second is a duplicate
        for index, record in enumerate(records):
            first.setdefault((record.vin, record.epoch, record.seq), index)
        epochs = {index: self._epoch_ordinal(records[index], received) for index in first.values()}
        if not first:
            return []
        rows = [(*key, *held[index]) for key, index in sorted(first.items())]
        columns = [list(column) for column in zip(*rows, strict=True)]
        cursor = self._pg.raw.execute(_INSERT_MANY, [to_millis(received), *columns])
        stored = {(vin, bytes(epoch), seq) for vin, epoch, seq in cursor.fetchall()}
        added = []
        for index, record in enumerate(records):
            key = (record.vin, record.epoch, record.seq)
            if first[key] != index or key not in stored:
                added.append(Added(new=False))
                continue
            ordinal, new_epoch = epochs[index]
            skipped = self._update_last_values(record, received, ordinal) if record.kind in _WITH_LAST_VALUES else ()
            added.append(Added(new=True, skipped=skipped, new_epoch=new_epoch))
        return added

    # -- epochs and rejections -------------------------------------------------------------------

    def _epoch_ordinal(self, record: ReceivedRecord, received: datetime) -> tuple[int, bool]:
        key = (record.vin, record.epoch)
        ordinal = self.epoch_ordinal(*key)
        if ordinal is None:
            ordinal, registered = self._register_epoch(record, received)
            if not registered:  # another worker was first
                return ordinal, False
        elif key in self._unannounced:
            self._unannounced.discard(key)  # registered in a batch that rolled back: new, once more
        else:
            return ordinal, False
        if self._in_transaction:
            self._seen_new.append(key)
        return ordinal, True

    def _register_epoch(self, record: ReceivedRecord, received: datetime) -> tuple[int, bool]:
        """(ordinal, registered here): the epoch's place among the vehicle's, committed at once."""
        if self._registrar is None or self._registrar.raw.closed or self._registrar.raw.broken:
            self._registrar = connect(self._url, read_only=self._read_only)
        db = self._registrar
        with db.raw.transaction():
            db.execute("SELECT pg_advisory_xact_lock(?::integer, hashtext(?))", (EPOCH_LOCK_CLASS, record.vin))
            key = (record.vin, record.epoch)
            row = db.execute("SELECT ordinal FROM epochs WHERE vin=? AND epoch=?", key).fetchone()
            if row is not None:
                return int(row[0]), False
            ordinal = 0  # the legacy queue precedes every queue with an epoch
            if record.epoch:
                (latest,) = db.execute("SELECT coalesce(max(ordinal), 0) FROM epochs WHERE vin=?", (record.vin,))
                ordinal = int(latest[0]) + 1
            db.execute(
                "INSERT INTO epochs VALUES (?, ?, ?, ?, ?)",
                (record.vin, record.epoch, ordinal, to_millis(received), record.seq),
            )
        return ordinal, True

    def add_rejection(self, *, topic: str, vin: str | None, reason: str, received: datetime) -> None:
        # PostgreSQL's text cannot hold U+0000, which a forged topic may carry; a rejection is for people.
        super().add_rejection(
            topic=topic.replace("\0", "\\x00"),
            vin=None if vin is None else vin.replace("\0", "\\x00"),
            reason=reason.replace("\0", "\\x00"),
            received=received,
        )

    # -- retention -------------------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Prune the dead row versions retention left (VACUUM), and empty the WAL of the other stores'
        SQLite file, whose deletions the retention job made too. False (logged) when either failed."""
        done = True
        try:
            self._pg.execute("VACUUM records, last_values")
        except psycopg.Error as exc:
            _LOGGER.warning("VACUUM of the record store failed: %s", exc)
            done = False
        if self._side_file is not None and self._side_file.exists():
            with contextlib.closing(sqlite3.connect(self._side_file)) as side:
                done = database.checkpoint(side) and done
        return done
