"""The drop policy: which records go when the queue is over its bound or the disk is full.

Only telemetry is dropped, oldest first; events and eCall records never make room for telemetry (they
may exceed the bound). Every dropped sequence number is remembered in the queue's `dropped` table
until an overflow notice names it (`overflow_notice`). A dropped record that may already have reached
the backend (it was sent, or queued by an earlier run) is remembered apart, as unconfirmed, so the
backend never takes a record it stored for one it lost.

The functions that take a connection run inside the caller's write transaction.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable

from tcu.config import QueueConfig
from telematics_wire.envelope import seq_ranges
from telematics_wire.records import Priority

_LOGGER = logging.getLogger(__name__)

# Below this share of `max_records` the queue is not counted before a write: counting costs a scan.
_COUNT_ABOVE_SHARE = 0.9


class SentLedger:
    """Which queued records may have reached the backend: every one an earlier run queued, and those sent since."""

    def __init__(self) -> None:
        self._below = 1
        self._sent: set[int] = set()

    def reset(self, next_seq: int) -> None:
        """At open: everything numbered before `next_seq` was queued by an earlier run."""
        self._below = next_seq
        self._sent.clear()

    def add(self, seqs: Iterable[int]) -> None:
        self._sent.update(seqs)

    def forget(self, seqs: Iterable[int]) -> None:
        """These records left the queue (acknowledged or dropped)."""
        self._sent.difference_update(seqs)

    def unconfirmed(self, seqs: Iterable[int]) -> list[int]:
        return [seq for seq in seqs if seq < self._below or seq in self._sent]


def delete_records(db: sqlite3.Connection, seqs: Iterable[int]) -> Counter[int]:
    """Delete these records; how many went, by priority."""
    deleted: Counter[int] = Counter()
    for low, high in seq_ranges(seqs):
        for (priority,) in db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ? RETURNING priority", (low, high)):
            deleted[int(priority)] += 1
    return deleted


def drop_oldest_telemetry(db: sqlite3.Connection, count: int, ledger: SentLedger) -> list[int]:
    """Delete up to `count` oldest telemetry records and remember them; their sequence numbers."""
    victims = [
        int(row[0])
        for row in db.execute(
            "SELECT seq FROM outbox WHERE priority=? ORDER BY seq LIMIT ?", (int(Priority.TELEMETRY), count)
        )
    ]
    if not victims:
        return []  # only events left: they are never dropped for telemetry
    delete_records(db, victims)
    unconfirmed = ledger.unconfirmed(victims)
    never_sent = sorted(set(victims).difference(unconfirmed))
    db.executemany("INSERT INTO dropped VALUES (?, ?, 0)", seq_ranges(never_sent))
    db.executemany("INSERT INTO dropped VALUES (?, ?, 1)", seq_ranges(unconfirmed))
    db.execute("UPDATE counters SET value=value+? WHERE name='dropped'", (len(victims),))
    return victims


def evict_overflow(db: sqlite3.Connection, config: QueueConfig, depth: int, ledger: SentLedger) -> list[int]:
    """After inserting: drop the oldest telemetry past `max_records`. `depth` is the queue's size as the
    caller knows it, the new records included; near the bound the database is counted instead."""
    if depth < config.max_records * _COUNT_ABOVE_SHARE:
        return []  # far below the bound: no need to count
    counted = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    excess = counted - config.max_records
    if excess <= 0:
        return []
    victims = drop_oldest_telemetry(db, excess, ledger)
    if victims:
        _LOGGER.warning("queue full (%d records): dropped %d oldest telemetry record(s)", counted, len(victims))
    return victims
