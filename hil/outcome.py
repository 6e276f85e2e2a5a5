"""What a precise check answers: passed or not, why, and the measured value next to its limit.

The report shows `measured` and `limit` in their own columns, so a test engineer sees how close a
passing run came to its limit, and by how much a failing one missed it, without reading the detail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tcu.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    passed: bool
    detail: str  # what was expected and what was found, precise enough to act on
    measured: str = ""  # e.g. "p50 0.12 s, p99 0.48 s over 37 records"
    limit: str = ""  # e.g. "p50 <= 1 s, p99 <= 3 s"

    @classmethod
    def unless(cls, failures: Sequence[str], detail: str, *, measured: str = "", limit: str = "") -> Outcome:
        """Passed unless something failed; what failed follows the detail."""
        return cls(passed=not failures, detail="; ".join([detail, *failures]), measured=measured, limit=limit)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100] of a non-empty sequence: a value that was measured,
    never one interpolated between two."""
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def number(args: dict[str, Any], key: str, default: float | None = None) -> float | None:
    """A finite number argument of a check; a bool (`true == 1`) or a string is a mistake, said as such."""
    value = args.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r}: expected a finite number")
    return float(value)


def duration(args: dict[str, Any], key: str, default: float | None = None) -> float | None:
    """A `number` of seconds, which cannot be negative."""
    value = number(args, key, default)
    if value is not None and value < 0:
        raise ConfigError(f"{key} = {value!r}: expected a number of seconds >= 0")
    return value


def bounds_text(low: float | None, high: float | None, unit: str, spec: str = "g") -> str:
    """`low..high unit`, `>= low unit`, `<= high unit`, or `any` without either."""
    if low is not None and high is not None:
        return f"{low:{spec}}..{high:{spec}} {unit}"
    if low is not None:
        return f">= {low:{spec}} {unit}"
    return "any" if high is None else f"<= {high:{spec}} {unit}"


def window(args: dict[str, Any]) -> tuple[float, float] | None:
    """`window = [from_s, to_s]` in scenario seconds, or None."""
    raw = args.get("window")
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 2:
        raise ConfigError(f"window = {raw!r}: expected [from_s, to_s]")
    start, end = (number({"window": value}, "window") for value in raw)
    assert start is not None
    assert end is not None
    if start > end:
        raise ConfigError(f"window = {raw!r}: from_s is after to_s")
    return start, end


def in_window(span: tuple[float, float] | None, t: float) -> bool:
    return span is None or span[0] <= t <= span[1]


def window_text(span: tuple[float, float] | None) -> str:
    return "over the run" if span is None else f"in {span[0]:g}..{span[1]:g} s"


def seconds(value: float) -> str:
    return f"{value:.2f} s"
