"""The queue's SQLite file: schema, settings, migrations, the queue epoch, and write transactions.

Every write goes through `write_transaction`, which turns a SQLite failure into our `StorageError`
(`StorageFullError` when the disk or the size limit is full) after rolling back, so the connection is
never left inside a transaction.
"""

from __future__ import annotations

import errno
import logging
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tcu.config import QueueConfig
from tcu.errors import StorageError, StorageFullError
from telematics_wire.envelope import EPOCH_BYTES, LEGACY_EPOCH
from telematics_wire.private_files import private_database

_LOGGER = logging.getLogger(__name__)

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


def storage_error(what: str, exc: BaseException) -> StorageError:
    """Our error for a failed SQLite or file operation, telling a full disk from everything else."""
    full = (isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    )
    if full:
        return StorageFullError(f"{what}: disk or queue size limit full ({exc})")
    return StorageError(f"{what}: {exc}")


@contextmanager
def write_transaction(db: sqlite3.Connection, what: str) -> Iterator[None]:
    """One immediate transaction, rolled back on any exception; a SQLite failure is raised as StorageError."""
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                _LOGGER.exception("rollback failed; SQLite rolls back on the next statement")
        if isinstance(exc, sqlite3.Error):
            raise storage_error(what, exc) from exc
        raise


def open_queue_database(path: Path, config: QueueConfig) -> tuple[sqlite3.Connection, bytes]:
    """The connection and the queue's epoch, made here for a new queue (the legacy one for an old queue)."""
    try:
        private_database(path)  # 0600 (its -wal and -shm too), a new data directory 0700
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise storage_error(f"cannot open the queue database {path}", exc) from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={config.synchronous.upper()}")
        db.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_BYTES}")
        set_page_limit(db, config_page_limit(db, config))
        with write_transaction(db, f"cannot prepare the queue database {path}"):
            epoch = _schema_and_epoch(db)
    except (sqlite3.Error, StorageError) as exc:
        db.close()
        if isinstance(exc, StorageError):
            raise
        raise storage_error(f"cannot open the queue database {path}", exc) from exc
    return db, epoch


def _schema_and_epoch(db: sqlite3.Connection) -> bytes:
    existed = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='counters'").fetchone()
    for statement in _SCHEMA:
        db.execute(statement)
    if "unconfirmed" not in {row[1] for row in db.execute("PRAGMA table_info(dropped)")}:
        db.execute("ALTER TABLE dropped ADD COLUMN unconfirmed INTEGER NOT NULL DEFAULT 0")
    epoch = read_meta(db, "epoch")
    if epoch is None:
        epoch = LEGACY_EPOCH if existed else secrets.token_bytes(EPOCH_BYTES)
        write_meta(db, "epoch", epoch)
    return epoch


def config_page_limit(db: sqlite3.Connection, config: QueueConfig) -> int:
    """The database size `max_bytes` allows, in pages."""
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    return max(config.max_bytes // page_size, 16)


def set_page_limit(db: sqlite3.Connection, pages: int) -> None:
    db.execute(f"PRAGMA max_page_count={int(pages)}")


def page_count(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA page_count").fetchone()[0])


def read_meta(db: sqlite3.Connection, name: str) -> bytes | None:
    row = db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
    return None if row is None else bytes(row[0])


def write_meta(db: sqlite3.Connection, name: str, value: bytes | None) -> None:
    if value is None:
        db.execute("DELETE FROM meta WHERE name=?", (name,))
    else:
        db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value=excluded.value", (name, value)
        )


def advance_next_seq(db: sqlite3.Connection, expected: int, value: int) -> bool:
    """Set the next sequence number to `value` if it is still `expected`; False if another connection
    moved it (inside the caller's write transaction, so the caller can number its records again)."""
    cursor = db.execute("UPDATE counters SET value=? WHERE name='next_seq' AND value=?", (value, expected))
    return cursor.rowcount == 1
