"""What the agent sends: a record, its kind and the priority the queue gives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any


class RecordKind(StrEnum):
    ECALL = "ecall"  # eCall transitions and reports; never dropped
    EVENT = "event"  # change-triggered: door opened, service due, queue overflow, ...
    TELEMETRY = "telemetry"  # periodic snapshots; the only kind the drop policy may shed
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> RecordKind:
        return cls.UNKNOWN


class Priority(IntEnum):
    """Lower drains first; telemetry is the only priority the drop policy sheds."""

    ECALL = 0
    EVENT = 1
    TELEMETRY = 2


_PRIORITY = {
    RecordKind.ECALL: Priority.ECALL,
    RecordKind.EVENT: Priority.EVENT,
    RecordKind.TELEMETRY: Priority.TELEMETRY,
    RecordKind.UNKNOWN: Priority.EVENT,
}


# 9999-12-31T23:59:59.999Z: the last instant a `datetime` (and a four-digit ISO 8601 year) can hold.
MAX_MILLIS = 253_402_300_799_999


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def to_millis(moment: datetime) -> int:
    """Whole milliseconds since 1970, in integer arithmetic (a float product can land 1 ms short)."""
    return (moment - _UNIX_EPOCH) // _MILLISECOND


def from_millis(millis: int) -> datetime:
    return _UNIX_EPOCH + timedelta(milliseconds=millis)


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One telematics record before sealing; `body` holds CBOR-native values only."""

    kind: RecordKind
    created: datetime
    body: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.created.tzinfo is None:
            raise ValueError("Record.created must be timezone-aware UTC")
        if self.kind is RecordKind.UNKNOWN:
            raise ValueError("the agent never creates records of unknown kind")

    @property
    def priority(self) -> Priority:
        return _PRIORITY[self.kind]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedRecord:
    """A record as the backend opened it; `kind_name` is the kind as sent (a newer agent's kind is
    `UNKNOWN` here but keeps its name)."""

    vin: str
    seq: int
    kind: RecordKind
    kind_name: str = ""
    epoch: bytes = b""
    created: datetime
    body: Mapping[str, Any]
