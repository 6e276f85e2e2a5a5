"""Reading the fields of a signed downlink payload (provisioning files, measure orders): exact types, bounds.

A correct signature says who wrote a payload, not that its values are sane: a backend bug, a hand-made
file or a compromised signing service can still sign `expires = 2**64 - 1` or `version = True`. Every
value therefore passes here before the vehicle stores or acts on it, so nothing stored can fail later
(in `datetime`, in SQLite at the backend, in a log line):

- Integers are exact `int`s, never `bool` (`True == 1` in Python) or `float`, and fit in a signed
  64-bit integer: the backend keeps versions and attempts in SQLite INTEGER columns.
- Times are integer milliseconds since 1970-01-01 UTC between 0 and the last millisecond of
  9999-12-31: Python's `datetime` holds no later year, and a time before 1970 means nothing for a
  message issued by a backend running today.
- Values shown in a rejection reason are bounded (`shown`): a reason travels back to the backend in
  a record, and printing a 40,000-digit integer raises in Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeGuard

from telematics_wire.errors import RejectedMessageError
from telematics_wire.records import from_millis, to_millis

INT64_MAX = 2**63 - 1
MIN_MILLIS = 0
MAX_MILLIS = to_millis(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))
_SHOWN_CHARS = 40

Malformed = Callable[[str], RejectedMessageError]


def shown(value: object) -> str:
    """A short, always-printable description of an untrusted value, for a rejection reason."""
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, str):
        return repr(value) if len(value) <= _SHOWN_CHARS else f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"
    if isinstance(value, bytes):
        return f"a byte string of {len(value)} bytes"
    return f"a value of type {type(value).__name__}"


def is_int(value: object) -> TypeGuard[int]:
    """An integer and nothing else: not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def text(data: Mapping[Any, Any], key: str, malformed: Malformed, *, max_chars: int | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise malformed(f"field {key!r} must be a text string, got {shown(value)}")
    if max_chars is not None and not 0 < len(value) <= max_chars:
        raise malformed(f"field {key!r} must have 1 to {max_chars} characters, got {len(value)}")
    return value


def integer(data: Mapping[Any, Any], key: str, malformed: Malformed, *, low: int, high: int = INT64_MAX) -> int:
    value = data.get(key)
    if not is_int(value):
        raise malformed(f"field {key!r} must be an integer, got {shown(value)}")
    if not low <= value <= high:
        raise malformed(f"field {key!r} must lie in {low}..{high}, got {shown(value)}")
    return int(value)


def number(data: Mapping[Any, Any], key: str, malformed: Malformed, *, low: float, high: float) -> float:
    """An int or a finite float (not a bool) in low..high."""
    value = data.get(key)
    if not is_int(value) and not isinstance(value, float):
        raise malformed(f"field {key!r} must be a number, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise malformed(f"field {key!r} must be finite, got {shown(value)}")
    if not low <= value <= high:
        raise malformed(f"field {key!r} must lie in {low:g}..{high:g}, got {shown(value)}")
    return float(value)


def flag(data: Mapping[Any, Any], key: str, malformed: Malformed) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise malformed(f"field {key!r} must be true or false, got {shown(value)}")
    return value


def moment(data: Mapping[Any, Any], key: str, malformed: Malformed) -> datetime:
    """Milliseconds since 1970 UTC, within 1970..9999."""
    value = data.get(key)
    if not is_int(value):
        raise malformed(f"time field {key!r} must be integer milliseconds, got {shown(value)}")
    if not MIN_MILLIS <= value <= MAX_MILLIS:
        raise malformed(
            f"time field {key!r} must lie between 1970-01-01 and 9999-12-31 "
            f"({MIN_MILLIS}..{MAX_MILLIS} ms), got {shown(value)}"
        )
    return from_millis(value)


def in_time_range(moment_: datetime) -> bool:
    """What `moment` accepts, for values built in code (the backend signs only what the vehicle reads)."""
    return moment_.tzinfo is not None and MIN_MILLIS <= to_millis(moment_) <= MAX_MILLIS
