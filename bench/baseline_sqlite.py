"""Baseline for the sealed + queued benchmark: bare SQLite INSERTs of blobs, with the queue's durability.

One table of (seq INTEGER PRIMARY KEY, blob), WAL and synchronous=FULL like the agent's queue, one
transaction per batch of `batch` rows through `executemany`, blobs of `payload_size` bytes (the caller
passes the size of a real sealed telemetry envelope). No sealing, no sequence counter, no priority
index, no thread: the floor any durable queue on SQLite stands on with the same fsyncs.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path


def bare_insert_per_s(directory: Path, count: int, batch: int, payload_size: int) -> float:
    """Rows/s inserting `count` blobs of `payload_size` bytes in transactions of `batch`, WAL + FULL."""
    path = directory / "baseline-sqlite.db"
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)  # every run starts from an empty file, as the queue's bench does
    payload = os.urandom(payload_size)  # incompressible, like ciphertext
    rows = [(seq, payload) for seq in range(1, count + 1)]
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE queue (seq INTEGER PRIMARY KEY, envelope BLOB NOT NULL)")
        start = time.perf_counter()
        for offset in range(0, count, batch):
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO queue VALUES (?, ?)", rows[offset : offset + batch])
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
    finally:
        db.close()
    return count / elapsed
