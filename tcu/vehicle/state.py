"""One in-memory picture of the vehicle: latest value, time, source and quality of each VSS signal.

Sources write it; telemetry, eCall and services read it or subscribe to changes. A subscriber is a
plain callable invoked synchronously on every accepted update, so it must be cheap (typically it
puts the update on its own asyncio queue).

Readings are ordered by the agent's monotonic clock, never by their wall timestamp: a car's wall clock
steps (the RTC read at boot, a GNSS or NTP time sync), and ordering by it would freeze every signal
for as long as the clock was set back. The wall timestamp only says when, for the people reading it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from tcu.clock import Clock
from telematics_wire.signal_values import MAX_LIST_ITEM_CHARS, MAX_LIST_ITEMS, SignalValue

_LOGGER = logging.getLogger(__name__)


class Quality(StrEnum):
    GOOD = "good"
    STALE = "stale"  # the source stopped delivering (device unplugged, timeouts)
    INVALID = "invalid"  # the source delivered but the value failed a plausibility check


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """One reading of one VSS signal."""

    path: str
    value: SignalValue
    timestamp: datetime
    source: str
    quality: Quality = Quality.GOOD
    # Seconds on the agent's monotonic clock when read (`Clock.monotonic()`): what orders readings.
    # None (a reading made up by hand) is ordered by arrival.
    monotonic: float | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("Vehicle."):
            raise ValueError(f"signal path {self.path!r} is not a VSS path (must start with 'Vehicle.')")
        if self.timestamp.tzinfo is None:
            raise ValueError(f"signal {self.path}: timestamp must be timezone-aware UTC")
        monotonic = self.monotonic
        # A finite float, as Clock.monotonic gives it, passes on one type check; anything else the long way.
        if (
            monotonic is not None
            and (type(monotonic) is not float or not math.isfinite(monotonic))
            and not _finite_number(monotonic)
        ):
            raise ValueError(f"signal {self.path}: monotonic time {monotonic!r} is not a finite number")
        # Tuples of types, not `tuple | list`: a union is built anew on every reading.
        if isinstance(self.value, (tuple, list)):  # one isinstance on the hot path for scalars
            _check_list(self.path, self.value)

    def read_before(self, other: Signal) -> bool:
        """True when this reading was taken before `other`, by the monotonic clock; unknown is False."""
        return self.monotonic is not None and other.monotonic is not None and self.monotonic < other.monotonic


def _finite_number(value: object) -> bool:
    """An int or float (a bool is neither here) that is finite."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_list(path: str, value: tuple[object, ...] | list[object]) -> None:
    if type(value) is list:
        raise ValueError(f"signal {path}: a list value must be a tuple (a Signal is immutable)")
    if len(value) > MAX_LIST_ITEMS:
        raise ValueError(f"signal {path}: {len(value)} items, more than {MAX_LIST_ITEMS}")
    for index, item in enumerate(value):
        if type(item) is not str or not 1 <= len(item) <= MAX_LIST_ITEM_CHARS:
            raise ValueError(
                f"signal {path}: item {index} ({item!r:.40}) is not text of 1..{MAX_LIST_ITEM_CHARS} characters"
            )


def as_float(value: SignalValue) -> float:
    """A reading used as a number (as `float()` would take it); TypeError for a list value."""
    if isinstance(value, tuple):
        raise TypeError(f"a list of {len(value)} item(s) is not a number")
    return float(value)


Subscriber = Callable[[Signal], None]


class VehicleState:
    """Latest value of every signal, with change notification."""

    def __init__(self) -> None:
        self._signals: dict[str, Signal] = {}
        # A tuple, replaced on (un)subscribe: `update` iterates it as it was when the reading came, without
        # copying it per reading (a fleet process makes ~20 readings per vehicle-second).
        self._subscribers: tuple[Subscriber, ...] = ()

    def update(self, signal: Signal) -> None:
        """Store a reading and notify subscribers; a reading taken before the stored one is ignored.

        "Before" is by the monotonic clock: a reading stamped an hour earlier in wall time because the
        clock was just set back is still the newest reading.
        """
        current = self._signals.get(signal.path)
        # Signal.read_before, written out: this runs for every reading of every source.
        if (
            current is not None
            and signal.monotonic is not None
            and current.monotonic is not None
            and signal.monotonic < current.monotonic
        ):
            return
        self._signals[signal.path] = signal
        for subscriber in self._subscribers:
            try:
                subscriber(signal)
            except Exception:
                # A faulty subscriber must not stop the sources feeding everyone else.
                _LOGGER.exception("subscriber %r failed on %s", subscriber, signal.path)

    def update_many(self, signals: Iterable[Signal]) -> None:
        for signal in signals:
            self.update(signal)

    def mark_stale(self, source: str, clock: Clock) -> list[str]:
        """Mark every GOOD signal of one source stale (its device went away); returns the paths."""
        stale = []
        now, monotonic = clock.now(), clock.monotonic()
        for path, signal in list(self._signals.items()):
            if signal.source == source and signal.quality is Quality.GOOD:
                stale.append(path)
                self.update(replace(signal, timestamp=now, quality=Quality.STALE, monotonic=monotonic))
        return stale

    def get(self, path: str) -> Signal | None:
        return self._signals.get(path)

    def value(self, path: str) -> SignalValue | None:
        signal = self._signals.get(path)
        return None if signal is None else signal.value

    def snapshot(self) -> Mapping[str, Signal]:
        return dict(self._signals)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Register a change callback; returns a function that unsubscribes it."""
        self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            remaining = list(self._subscribers)
            remaining.remove(subscriber)  # ValueError when unsubscribed already, as list.remove says
            self._subscribers = tuple(remaining)

        return unsubscribe
