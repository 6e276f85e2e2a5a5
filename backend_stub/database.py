"""The backend's SQLite file, shared by its stores (records, provisioning, measures) and by the CLI
running beside the backend: WAL, fsync on commit, and immediate transactions to serialise writers."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from backend_stub.errors import DatabaseError
from telematics_wire.private_files import private_database

_LOGGER = logging.getLogger(__name__)

# How long a write waits for another connection's lock (the CLI, a second backend) before it fails.
# Bounded and short: database work runs on the backend's database thread, but the PSAP and every
# service wait on its results; a batch that fails here is not acknowledged and the vehicles resend
# it, so giving up after 2 s loses nothing, while 10 s held every queued database job for 10 s.
BUSY_TIMEOUT_MS = 2000


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    # Every vehicle's decrypted data: owner-only (0600, the -wal and -shm files too; a new directory 0700).
    private_database(path)
    # check_same_thread=False: a store is built on the main thread, then used only from the backend's
    # database thread (backend_stub.database_thread) while the app runs; one owner at a time.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Deleted content is overwritten, not left in free pages: retention and an owner change delete
    # personal data, which must then be gone from the file too (backend_stub.retention).
    db.execute("PRAGMA secure_delete=ON")
    db.executescript(schema)
    return db


def checkpoint(db: sqlite3.Connection) -> bool:
    """Copy the write-ahead log into the database and empty it, so that page images written before a
    deletion are gone from the -wal file too. False (logged) when a reader kept it from completing:
    the next checkpoint completes it."""
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        _LOGGER.warning("WAL checkpoint failed: %s", exc)
        return False
    if busy:
        _LOGGER.info("WAL checkpoint incomplete: another connection is reading; the next one completes it")
    return not busy


def migrate(db: sqlite3.Connection, *, table: str, column: str, script: str) -> None:
    """Run `script` (statements separated by `;`) in one transaction when `table` lacks `column`."""
    if column in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        return
    with transaction(db):
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One immediate transaction: it takes the write lock at once, across processes.

    Whatever happens, the connection leaves it outside any transaction: a COMMIT that fails (disk
    full, busy, a deferred constraint) is rolled back and raised as `DatabaseError`, so the next
    transaction on this connection starts clean instead of failing with "within a transaction".
    """
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot start a database transaction: {exc}") from exc
    try:
        yield
    except BaseException:
        _rollback(db)
        raise
    try:
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(db)
        raise DatabaseError(f"database commit failed, nothing of the transaction was stored: {exc}") from exc


@contextmanager
def savepoint(db: sqlite3.Connection, name: str = "step") -> Iterator[None]:
    """A nested step inside a transaction: an exception undoes only the writes made inside, then propagates.

    Raises `DatabaseError` when the step cannot be undone (SQLite may already have rolled back the
    whole transaction, e.g. on a full disk): then nothing of the enclosing transaction survives.
    """
    try:
        db.execute(f"SAVEPOINT {name}")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open a savepoint: {exc}") from exc
    try:
        yield
    except BaseException:
        try:
            db.execute(f"ROLLBACK TO {name}")
            db.execute(f"RELEASE {name}")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot undo a failed step, the transaction is lost: {exc}") from exc
        raise
    try:
        db.execute(f"RELEASE {name}")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot release a savepoint: {exc}") from exc


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite rolls a transaction back by itself after some errors (SQLITE_FULL, SQLITE_IOERR, ...);
    # a second ROLLBACK would then fail and hide the original error.
    if db.in_transaction:
        with suppress(sqlite3.Error):  # the original error is the one the caller must see
            db.execute("ROLLBACK")
