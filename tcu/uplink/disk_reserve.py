"""A reserve file beside the queue: disk space held back so acknowledged records can always be deleted.

SQLite needs free blocks to delete (the write-ahead log grows before the database shrinks). When a
data partition fills up, by our records or by anything else, the queue gives this file's space back
and deletes what the backend acknowledged; once space has returned, it takes the reserve again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

_LOGGER = logging.getLogger(__name__)


class DiskReserve:
    def __init__(self, path: Path, size_bytes: int) -> None:
        self._path = path
        self._size = size_bytes

    @property
    def held(self) -> bool:
        try:
            return self._path.stat().st_size >= self._size
        except OSError:
            return False

    def take(self) -> bool:
        """Hold the reserve if the disk has room for it and as much again; True when it is held."""
        if self._size <= 0 or self.held:
            return True
        try:
            stats = os.statvfs(self._path.parent)
            if stats.f_bavail * stats.f_frsize < 2 * self._size:
                return False
            with self._path.open("wb") as file:
                file.write(bytes(self._size))  # real blocks: a sparse file would reserve nothing
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            self.release()
            _LOGGER.debug("disk reserve %s not taken: %s", self._path, exc)
            return False
        return True

    def release(self) -> bool:
        """Give the reserved space back; True when there was something to give."""
        had = self._path.exists()
        with contextlib.suppress(OSError):
            self._path.unlink()
        if had:
            _LOGGER.warning("disk full: released the %d-byte reserve %s to make room", self._size, self._path)
        return had
