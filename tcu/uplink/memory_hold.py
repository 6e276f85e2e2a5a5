"""Records held in memory while the queue cannot take them (a full disk, a queue that cannot open).

Bounded: past `limit` the oldest telemetry is shed, as on disk. A shed record never had a sequence
number, so it is accounted for by count and creation-time span (`Shed`), which the next overflow
notice names; the account survives a restart in the queue's `meta` table.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from telematics_wire.records import Record, RecordKind, to_millis

_SHED_FORMAT = ">Qqq"  # count, first and last creation time (ms)


@dataclass(frozen=True, slots=True)
class Shed:
    """Records dropped from memory: how many, created between `first_ms` and `last_ms`."""

    count: int = 0
    first_ms: int = 0
    last_ms: int = 0

    def plus(self, record: Record) -> Shed:
        created = to_millis(record.created)
        if self.count == 0:
            return Shed(1, created, created)
        return Shed(self.count + 1, min(self.first_ms, created), max(self.last_ms, created))

    def merged(self, other: Shed) -> Shed:
        if not other.count:
            return self
        if not self.count:
            return other
        return Shed(self.count + other.count, min(self.first_ms, other.first_ms), max(self.last_ms, other.last_ms))

    def to_bytes(self) -> bytes:
        return struct.pack(_SHED_FORMAT, self.count, self.first_ms, self.last_ms)

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Shed:
        if not data or len(data) != struct.calcsize(_SHED_FORMAT):
            return cls()
        return cls(*struct.unpack(_SHED_FORMAT, data))


class MemoryHold:
    def __init__(self, limit: int) -> None:
        self._records: deque[Record] = deque()
        self._limit = limit
        self.shed = Shed()  # shed since the account was last taken

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Iterable[Record]) -> None:
        self._records.extend(records)
        while len(self._records) > self._limit:
            for index, held in enumerate(self._records):
                if held.kind is RecordKind.TELEMETRY:
                    del self._records[index]
                    self.shed = self.shed.plus(held)
                    break
            else:
                break  # only events and eCall records: they are never shed for telemetry

    def oldest(self, count: int) -> list[Record]:
        return [self._records[i] for i in range(min(count, len(self._records)))]

    def forget_oldest(self, count: int) -> None:
        for _ in range(count):
            self._records.popleft()

    def take_shed(self) -> Shed:
        shed, self.shed = self.shed, Shed()
        return shed
