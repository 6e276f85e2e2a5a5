"""Injected time. Wall time stamps records; monotonic time drives timers and backoff."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current UTC wall time (timezone-aware)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def age_s(clock: Clock, wall: datetime, monotonic: float | None) -> float:
    """Seconds since a moment stamped on both clocks.

    By the monotonic clock when the moment has a monotonic stamp: the wall clock may have been set back
    or forward since (RTC at boot, GNSS or NTP sync), which would make a fresh reading look an hour or a
    day old, or from the future. The wall difference is the fallback for moments stamped elsewhere.
    """
    if monotonic is not None:
        return clock.monotonic() - monotonic
    return (clock.now() - wall).total_seconds()


@dataclass(slots=True)
class ManualClock:
    """A clock that moves only when told to; for tests and accelerated scenarios."""

    wall: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    mono: float = 0.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def step_wall(self, seconds: float) -> None:
        """Set the wall clock forward (or back, if negative) without time passing: an RTC read at boot,
        a GNSS or NTP time sync. Monotonic time does not move."""
        self.wall += timedelta(seconds=seconds)
