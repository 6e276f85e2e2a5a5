"""Warnings about single frames, bounded: the first of each kind is logged, then every 1,000th.

A bus can repeat the same bad frame hundreds of times a second (a DBC message longer than the ECU
sends, a noisy line); one warning line per frame would bury everything else in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

_EVERY = 1000
_MAX_KEYS = 4096  # distinct kinds remembered; beyond, counting starts again (a flood of random ids)


class LogLimit:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._counts: dict[Hashable, int] = {}

    def warning(self, key: Hashable, message: str, *args: object) -> None:
        """Log `message % args` the first time for `key`, then once every 1,000 times with the count."""
        count = self._counts.get(key, 0) + 1
        if len(self._counts) >= _MAX_KEYS and key not in self._counts:
            self._counts.clear()
        self._counts[key] = count
        if count == 1:
            self._logger.warning(message, *args)
        elif count % _EVERY == 0:
            self._logger.warning("%s (%d times so far)", message % args, count)
