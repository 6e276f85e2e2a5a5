"""The backend store's tables, and how a store made by an older version is brought up to them.

Old stores are migrated in place when opened: first the queue epochs (docs/protocol.md), then the
retention column (`backend_stub.retention`), then the records into a rowid table (`_RECORDS` says why).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backend_stub.database import migrate, open_database, transaction

# A rowid table, not WITHOUT ROWID: there a row over ~1,000 bytes (a 20-signal snapshot's body is ~1,200)
# takes an overflow page of its own, ~4.8 kB per record in the file and in the WAL each commit syncs;
# here it stays on its leaf page (~1.5 kB per record, a commit about half the time).
_RECORDS = """records (
    vin         TEXT NOT NULL,
    epoch       BLOB NOT NULL DEFAULT x'',
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body        BLOB NOT NULL,
    scrubbed_ms INTEGER,  -- personal values taken out of the body then (backend_stub.retention)
    PRIMARY KEY (vin, epoch, seq)
)"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS vehicles (
    vin         TEXT PRIMARY KEY,
    public_key  BLOB NOT NULL,
    enrolled_ms INTEGER NOT NULL,
    online      INTEGER,
    status_ms   INTEGER
);
CREATE TABLE IF NOT EXISTS {_RECORDS};
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

# Stores whose records were a WITHOUT ROWID table (see _RECORDS): copied once into a rowid table. Its
# indexes go with the old table and are made again by `open_store`; secure_delete overwrites its pages.
_MIGRATE_TO_ROWID = f"""
ALTER TABLE records RENAME TO records_without_rowid;
CREATE TABLE {_RECORDS};
INSERT INTO records (vin, epoch, seq, kind, created_ms, received_ms, body, scrubbed_ms)
    SELECT vin, epoch, seq, kind, created_ms, received_ms, body, scrubbed_ms FROM records_without_rowid;
DROP TABLE records_without_rowid
"""  # noqa: S608 - constant text, no value in it


def open_store(path: Path) -> sqlite3.Connection:
    """The store's database, created or migrated to the current tables, with its indexes."""
    db = open_database(path, _SCHEMA)
    migrate(db, table="records", column="epoch", script=_MIGRATE_TO_EPOCHS)
    migrate(db, table="records", column="scrubbed_ms", script=_MIGRATE_TO_SCRUBBING)
    _migrate_to_rowid(db)
    db.execute("CREATE INDEX IF NOT EXISTS records_by_time ON records (vin, created_ms)")
    # The retention job reads only records it has not scrubbed yet, oldest received first.
    db.execute("CREATE INDEX IF NOT EXISTS records_unscrubbed ON records (received_ms) WHERE scrubbed_ms IS NULL")
    return db


def _migrate_to_rowid(db: sqlite3.Connection) -> None:
    with transaction(db):  # checked inside: a second process opening the store at once finds it done
        (table,) = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='records'").fetchone()
        if "WITHOUT ROWID" in table.upper():
            for statement in _MIGRATE_TO_ROWID.split(";"):
                db.execute(statement)
