"""The PSAP stub's MSD table: every MSD a call brought, written on the archive's own thread.

The record is for people afterwards (`backend-stub psap-msds`, retention); the emergency call in
progress must not wait for it. The PSAP hands a row over after its acks are on the wire and goes on;
the archive's thread writes it, waiting on a lock held by another process (the CLI, the backend's
writer) at most the busy timeout. A row the database cannot take (full disk, a lock held longer) is
logged and stays in the PSAP's memory. Its connection is made and used on that thread only.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from backend_stub.database import BUSY_TIMEOUT_MS, migrate
from backend_stub.database_thread import DatabaseThread

_LOGGER = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS psap_msds (
    call_id            INTEGER NOT NULL,
    received_ms        INTEGER NOT NULL,
    kind               TEXT NOT NULL,
    message_identifier INTEGER,
    vin                TEXT,
    latitude_deg       REAL,
    longitude_deg      REAL,
    position_trusted   INTEGER,
    raw_hex            TEXT NOT NULL,
    error              TEXT,
    transport          TEXT NOT NULL DEFAULT 'cs',
    answered_after_ms  INTEGER,
    msd_after_ms       INTEGER
)"""
# Both kinds of eCall in one table: "cs" (the 112 voice call, in-band modem) or "ng" (SIP, RFC 8147);
# the timings are from the call's start (the CALL line, the INVITE) to its answer and to this MSD.
_ADD_TRANSPORT = """
ALTER TABLE psap_msds ADD COLUMN transport TEXT NOT NULL DEFAULT 'cs';
ALTER TABLE psap_msds ADD COLUMN answered_after_ms INTEGER;
ALTER TABLE psap_msds ADD COLUMN msd_after_ms INTEGER
"""
_COLUMNS = (  # the order of the table's columns, and of _INSERT's parameters
    "call_id",
    "received_ms",
    "kind",
    "message_identifier",
    "vin",
    "latitude_deg",
    "longitude_deg",
    "position_trusted",
    "raw_hex",
    "error",
    "transport",
    "answered_after_ms",
    "msd_after_ms",
)
# Named columns: a table migrated from before NG eCall has the new ones at its end.
_INSERT = f"INSERT INTO psap_msds ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"  # noqa: S608 - our constants


class PsapArchive:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = DatabaseThread("psap-archive")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Make the table if it is missing; raises `sqlite3.Error` when the file cannot be opened."""
        await self._thread.run(self._open)

    def add(self, call_id: int, row: dict[str, Any]) -> None:
        """Queue one MSD's row (the `_COLUMNS` keys) for writing; returns at once."""
        self._thread.submit(self._insert, call_id, row)

    async def written(self) -> None:
        """Once every row handed over so far is written (or its failure logged)."""
        await self._thread.run(lambda: None)

    async def close(self) -> None:
        """Write what is queued, then close the connection and end the thread."""
        await self._thread.run(self._close)
        self._thread.close()

    # -- on the archive's thread ----------------------------------------------------------------------------
    def _open(self) -> None:
        self._db = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_MS / 1000)
        self._db.execute(_SCHEMA)
        migrate(self._db, table="psap_msds", column="transport", script=_ADD_TRANSPORT)

    def _insert(self, call_id: int, row: dict[str, Any]) -> None:
        if self._db is None:
            _LOGGER.error("PSAP call %d: MSD not written, the archive is closed; kept in memory only", call_id)
            return
        try:
            with self._db:
                self._db.execute(_INSERT, tuple(row[column] for column in _COLUMNS))
        except sqlite3.Error as exc:
            _LOGGER.error("PSAP call %d: MSD not written to the database (%s); kept in memory only", call_id, exc)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
