"""Holding the queue's database at its size while the disk is full.

A write that finds the disk full spends the reserve (`disk_reserve`) on a checkpoint and then sets
SQLite's page limit to the file's current size: from then on SQLite refuses to grow the file before the
disk would, new records take the pages that dropped and acknowledged records leave, and the write-ahead
log has room to work in. Every `retry_s` the clamp looks for room again; once the disk has room for the
reserve (and as much again) the reserve is taken back and the queue may grow.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from tcu.clock import Clock
from tcu.config import QueueConfig
from tcu.uplink.disk_reserve import DiskReserve
from tcu.uplink.queue_db import config_page_limit, page_count, set_page_limit

_LOGGER = logging.getLogger(__name__)


class DiskClamp:
    def __init__(self, database: Path, *, reserve_bytes: int, clock: Clock, retry_s: float) -> None:
        self._database = database
        self._reserve = DiskReserve(database.with_name(database.name + ".reserve"), reserve_bytes)
        self._clock = clock
        self._retry_s = retry_s
        self._retry_at: float | None = None
        self.clamped = False

    def take_reserve(self) -> bool:
        return self._reserve.take()

    def due(self) -> bool:
        """Clamped, and time to look for room again."""
        return self.clamped and self._retry_at is not None and self._clock.monotonic() >= self._retry_at

    def clamp(self, db: sqlite3.Connection) -> None:
        """The disk is full: spend the reserve on a checkpoint, then keep the database at its size."""
        self._reserve.release()
        _checkpoint(db)
        try:
            pages = page_count(db)
            set_page_limit(db, pages)
        except sqlite3.Error as exc:
            _LOGGER.warning("cannot hold the queue at its size: %s", exc)
            return
        self.clamped = True
        self._retry_at = self._clock.monotonic() + self._retry_s
        _LOGGER.warning("disk full: the queue keeps to its %d pages until space returns", pages)

    def unclamp_if_room(self, db: sqlite3.Connection, config: QueueConfig) -> None:
        """Once the disk has room for the reserve (and as much again), the queue may grow again."""
        self._retry_at = self._clock.monotonic() + self._retry_s
        if not self._reserve.take():
            return
        try:
            set_page_limit(db, config_page_limit(db, config))
        except sqlite3.Error as exc:
            _LOGGER.warning("cannot let the queue grow again: %s", exc)
            return
        self.clamped = False
        self._retry_at = None
        _LOGGER.warning("queue %s: disk space is back", self._database)


def _checkpoint(db: sqlite3.Connection) -> None:
    """Move the log into the database so that its space is reused from the start."""
    try:
        db.execute("PRAGMA wal_checkpoint(RESTART)")
    except sqlite3.Error as exc:
        _LOGGER.debug("checkpoint failed: %s", exc)
