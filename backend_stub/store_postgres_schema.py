"""The record store's tables in PostgreSQL: those of `backend_stub.store_schema`, in PostgreSQL's types.

Text columns the store sorts by use the "C" collation, so `ORDER BY vin` and `ORDER BY path` give
the byte order SQLite gives, whatever locale the database was created with. Times are milliseconds in
BIGINT, as in SQLite. Workers that start at once create the tables one after the other (an advisory
lock), since `CREATE TABLE IF NOT EXISTS` alone races in PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import psycopg

# Any constant works; this one is the record store's ("TCU REC0" in ASCII) and nothing else's.
SCHEMA_LOCK = 0x5443_5520_5245_4330

_TABLES = (
    """CREATE TABLE IF NOT EXISTS vehicles (
        vin         TEXT COLLATE "C" PRIMARY KEY,
        public_key  BYTEA NOT NULL,
        enrolled_ms BIGINT NOT NULL,
        online      INTEGER,
        status_ms   BIGINT
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        vin         TEXT COLLATE "C" NOT NULL,
        epoch       BYTEA NOT NULL DEFAULT '\\x'::bytea,
        seq         BIGINT NOT NULL,
        kind        TEXT COLLATE "C" NOT NULL,
        created_ms  BIGINT NOT NULL,
        received_ms BIGINT NOT NULL,
        body        BYTEA NOT NULL,
        scrubbed_ms BIGINT,
        PRIMARY KEY (vin, epoch, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS epochs (
        vin           TEXT COLLATE "C" NOT NULL,
        epoch         BYTEA NOT NULL,
        ordinal       INTEGER NOT NULL,
        first_seen_ms BIGINT NOT NULL,
        first_seq     BIGINT NOT NULL,
        PRIMARY KEY (vin, epoch)
    )""",
    """CREATE TABLE IF NOT EXISTS last_values (
        vin         TEXT COLLATE "C" NOT NULL,
        path        TEXT COLLATE "C" NOT NULL,
        value       BYTEA NOT NULL,
        ts_ms       BIGINT NOT NULL,
        seq         BIGINT NOT NULL,
        ordinal     INTEGER NOT NULL DEFAULT 0,
        received_ms BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (vin, path)
    )""",
    """CREATE TABLE IF NOT EXISTS rejections (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_ms BIGINT NOT NULL,
        topic       TEXT NOT NULL,
        vin         TEXT COLLATE "C",
        reason      TEXT NOT NULL
    )""",
    # Stored records an ingest worker relays to the backend's services (`store_postgres_relay`): written
    # in the batch's transaction, deleted by the backend once it has handed them over.
    """CREATE TABLE IF NOT EXISTS event_relay (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        vin         TEXT COLLATE "C" NOT NULL,
        epoch       BYTEA NOT NULL,
        seq         BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS records_by_time ON records (vin, created_ms)",
    # The retention job reads only records it has not scrubbed yet, oldest received first.
    "CREATE INDEX IF NOT EXISTS records_unscrubbed ON records (received_ms) WHERE scrubbed_ms IS NULL",
)


def create_tables(connection: psycopg.Connection[Any]) -> None:
    """Create what is missing, in one transaction; a no-op on a database that has them all."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in _TABLES:
            connection.execute(statement)
