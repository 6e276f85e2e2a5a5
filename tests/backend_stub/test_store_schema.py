"""A store whose records were a WITHOUT ROWID table (before the rowid table, `store_schema._RECORDS`) is
migrated when opened: every record kept as it was, its indexes made again, a resend still a duplicate."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import cbor2

from backend_stub.store import BackendStore
from telematics_wire.records import ReceivedRecord, RecordKind
from tests.conftest import VIN

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
_OLD_RECORDS = """CREATE TABLE records (vin TEXT NOT NULL, epoch BLOB NOT NULL DEFAULT x'', seq INTEGER NOT NULL,
    kind TEXT NOT NULL, created_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, body BLOB NOT NULL,
    scrubbed_ms INTEGER, PRIMARY KEY (vin, epoch, seq)) WITHOUT ROWID;
CREATE INDEX records_by_time ON records (vin, created_ms);
CREATE INDEX records_unscrubbed ON records (received_ms) WHERE scrubbed_ms IS NULL;"""
_COLUMNS = "vin, epoch, seq, kind, created_ms, received_ms, body, scrubbed_ms"


def _rows(db: sqlite3.Connection) -> list[tuple[object, ...]]:
    return db.execute(f"SELECT {_COLUMNS} FROM records ORDER BY vin, epoch, seq").fetchall()


def test_records_of_a_without_rowid_store_move_into_the_rowid_table(tmp_path: Path) -> None:
    path = tmp_path / "backend.sqlite3"
    with closing(BackendStore(path)):
        pass  # every other table as it is now
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript("DROP TABLE records;" + _OLD_RECORDS)
        db.executemany(
            f"INSERT INTO records ({_COLUMNS}) VALUES (?, ?, ?, 'telemetry', ?, ?, ?, ?)",
            [
                (VIN, b"", 1, 10, 11, cbor2.dumps({"n": 1}), None),
                (VIN, b"q", 1, 20, 21, cbor2.dumps({"n": "x" * 2000}), None),  # over a page's inline limit
                (VIN, b"q", 2, 30, 31, cbor2.dumps({}), 40),  # scrubbed
            ],
        )
        before = _rows(db)

    with closing(BackendStore(path)) as store:
        db = store._file
        (table,) = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='records'").fetchone()
        assert "WITHOUT ROWID" not in table
        assert _rows(db) == before
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE tbl_name='records'")}
        assert {"records_by_time", "records_unscrubbed"} <= indexes
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='records_without_rowid'").fetchone() == (0,)
        resend = ReceivedRecord(vin=VIN, seq=2, kind=RecordKind.TELEMETRY, epoch=b"q", created=NOW, body={})
        assert not store.add_record(resend, NOW).new
    with closing(BackendStore(path)) as again:  # opening it once more changes nothing
        assert _rows(again._file) == before
