"""eCall records on their way to the backend: a bounded queue between the eCall engine and telematics.

    reports = EcallReports(capacity=256)
    reports.put(record)            # the engine: never waits; when full, the oldest report is dropped (logged)
    await reports.drain(store)     # telematics: `await store(record)` for each, one at a time, forever
    reports.take_pending()         # telematics stopping: what the drain had not stored yet

The eCall engine must never wait on a disk or on telematics (issue 14): it only ever calls `put`, which
returns at once. Telematics drains the queue when it runs; while it does not (starting, restarting, or a
disk slower than the reports come), the queue holds the newest `capacity` reports and drops the oldest.
A report lost so is logged here; the call itself is unaffected either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from telematics_wire.records import Record

_LOGGER = logging.getLogger(__name__)

DEFAULT_CAPACITY = 256  # about 20 calls' worth of transitions; a call reports 10 to 20
ReportStore = Callable[[Record], Awaitable[None]]


class EcallReports:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"an eCall report queue needs room for at least one report, not {capacity}")
        self.capacity = capacity
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=capacity)
        self.dropped = 0

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def put(self, record: Record) -> None:
        """Hand a report on without waiting; a full queue loses its oldest report, never the new one."""
        if self._queue.full():
            oldest = self._queue.get_nowait()
            self.dropped += 1
            _LOGGER.warning(
                "eCall report queue full (%d reports not yet stored by telematics): dropped the oldest, %r "
                "of %s; %d dropped since start",
                self.capacity,
                oldest.body.get("event"),
                oldest.created.isoformat(),
                self.dropped,
            )
        self._queue.put_nowait(record)

    def take_pending(self) -> list[Record]:
        """Every report not yet stored, oldest first, and the queue empty: for a stop that hands them on."""
        pending: list[Record] = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        return pending

    async def drain(self, store: ReportStore) -> NoReturn:
        """Store every report, oldest first; a report that cannot be stored is logged and skipped."""
        while True:
            record = await self._queue.get()
            try:
                await store(record)
            except Exception:  # one bad report or a broken disk must not stop the reports after it
                _LOGGER.exception(
                    "eCall report %r not stored; the eCall itself is unaffected", record.body.get("event")
                )
