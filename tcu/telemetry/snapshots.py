"""Periodic telemetry: every `interval_s` a snapshot of the vehicle state becomes one record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from tcu.clock import Clock
from tcu.errors import RecordTooLargeError
from tcu.uplink.outbox import Outbox
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.records import Record, RecordKind, to_millis

_LOGGER = logging.getLogger(__name__)


def encode_signals(signals: Mapping[str, Signal]) -> dict[str, Any]:
    """The wire form of signals in a record body: path → {"v": value, "t": ms, "q": quality}."""
    encoded: dict[str, Any] = {}
    # A source stamps all readings of one update alike: each distinct stamp is converted once.
    stamp, millis = None, 0
    for path, signal in signals.items():
        # A list value (VSS string[], e.g. the stored DTCs) goes out as a CBOR array.
        value = list(signal.value) if isinstance(signal.value, tuple) else signal.value
        if signal.timestamp is not stamp:
            stamp, millis = signal.timestamp, to_millis(signal.timestamp)
        item: dict[str, Any] = {"v": value, "t": millis}
        if signal.quality is not Quality.GOOD:
            item["q"] = signal.quality.value
        encoded[path] = item
    return encoded


class SnapshotTelemetry:
    def __init__(
        self,
        *,
        state: VehicleState,
        outbox: Outbox,
        clock: Clock,
        interval_s: float,
        on_queued: Callable[[], None],
        select: Callable[[Iterable[str]], Collection[str]] = set,
    ) -> None:
        self._state = state
        self._outbox = outbox
        self._clock = clock
        self._interval_s = interval_s
        self._on_queued = on_queued
        self._select = select  # consent filter: a blocked category is never collected for upload
        self.enabled = True

    async def take(self) -> Record | None:
        """Queue one snapshot now (returns once it is durable); None when there is nothing (allowed) to report."""
        snapshot = self._state.snapshot()
        allowed = self._select(snapshot.keys())
        signals = {path: s for path, s in snapshot.items() if path in allowed}
        if not signals:
            return None
        record = Record(kind=RecordKind.TELEMETRY, created=self._clock.now(), body={"signals": encode_signals(signals)})
        try:
            await self._outbox.put(record)
        except RecordTooLargeError as exc:
            _LOGGER.error("telemetry snapshot not queued: %s", exc)
            return None
        self._on_queued()
        return record

    async def run(self) -> None:
        """Fixed rate: ticks keep to the schedule however long a snapshot takes; ticks missed while
        the loop was overloaded are skipped, not made up in a burst."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self._interval_s
        while True:
            await asyncio.sleep(max(due - loop.time(), 0.0))
            due += self._interval_s
            if due < loop.time():
                due = loop.time() + self._interval_s
            if self.enabled:
                await self.take()
