"""How often a CarData stream may carry a key: at most once per the key's minimum interval.

The limit is kept per stream (gcid + VIN) and key. A reading that comes too early is not dropped but
held, and a newer one replaces it (coalescing, the latest wins): when the interval has passed the held
reading goes out, so a client never keeps a stale value because the change came in a burst (a door
opened and closed within the interval arrives as "closed", late, not never). Time is the monotonic
clock the caller passes in, so tests need no sleeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_Reading = TypeVar("_Reading")

StreamId = tuple[str, str]  # (gcid, vin)


@dataclass(slots=True)
class _KeyState(Generic[_Reading]):
    sent_at: float
    held: _Reading | None = None


@dataclass(slots=True)
class RateGate(Generic[_Reading]):
    """Per (stream, key): when it last went out, and the newest reading held back since."""

    _keys: dict[StreamId, dict[str, _KeyState[_Reading]]] = field(default_factory=dict)
    held_count: int = 0  # readings currently held back (for the log and the tests)

    def offer(
        self, stream: StreamId, readings: Mapping[str, _Reading], intervals: Mapping[str, float], now: float
    ) -> dict[str, _Reading]:
        """The readings that may go out now; the others are held (replacing any held before)."""
        states = self._keys.setdefault(stream, {})
        passed: dict[str, _Reading] = {}
        for key, reading in readings.items():
            state = states.get(key)
            interval = intervals.get(key, 0.0)
            if state is None or now - state.sent_at >= interval:
                if state is not None and state.held is not None:
                    self.held_count -= 1  # superseded by this newer reading going out now
                states[key] = _KeyState(sent_at=now)
                passed[key] = reading
            else:
                if state.held is None:
                    self.held_count += 1
                state.held = reading
        return passed

    def take_due(self, intervals: Mapping[str, float], now: float) -> dict[StreamId, dict[str, _Reading]]:
        """The held readings whose interval has passed, by stream; they count as sent now."""
        due: dict[StreamId, dict[str, _Reading]] = {}
        for stream, states in self._keys.items():
            for key, state in states.items():
                if state.held is not None and now - state.sent_at >= intervals.get(key, 0.0):
                    due.setdefault(stream, {})[key] = state.held
                    state.held, state.sent_at = None, now
                    self.held_count -= 1
        return due

    def next_due(self, intervals: Mapping[str, float]) -> float | None:
        """The monotonic time the earliest held reading may go out; None when nothing is held."""
        times = [
            state.sent_at + intervals.get(key, 0.0)
            for states in self._keys.values()
            for key, state in states.items()
            if state.held is not None
        ]
        return min(times, default=None)

    def forget(self, stream: StreamId) -> None:
        """Drop a stream's state and what it held: its consent ended, nothing more goes out on it."""
        states = self._keys.pop(stream, {})
        self.held_count -= sum(1 for state in states.values() if state.held is not None)

    def streams(self) -> list[StreamId]:
        return list(self._keys)
