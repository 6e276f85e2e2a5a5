"""`door` and `lock` events: a door or flap opens or closes, the car is locked or unlocked.

Door and flap state is status data in the terms ("Tür- und Klappenstatus"). A contact that bounces, or
a CAN frame that flips a bit now and then, must not become an event storm: a change is reported only
once the new value has held for `debounce_s` (a flip and back within it is nothing), and at most
`burst` events per signal per `window_s` go out; the changes beyond that are counted and logged once.
When the window has room again, the state the signal settled in goes out (if it differs from the last
one sent) with the count as `suppressed`, so the backend never keeps a stale lock state after a storm.
The first reading of a signal is its state, not a change: an agent start is no door opening.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from tcu.clock import Clock
from tcu.vehicle.state import Quality, Signal
from telematics_wire.records import to_millis
from telematics_wire.signal_values import SignalValue

if TYPE_CHECKING:
    from tcu.telemetry.events import EventReporter

_LOGGER = logging.getLogger(__name__)


class AccessEvent(StrEnum):
    """The `type` of an access event record: a door or flap opened/closed, or the central lock changed."""

    DOOR = "door"
    LOCK = "lock"


CENTRAL_LOCK = "Vehicle.Body.CentralLock.State"
_FLAPS = ("Vehicle.Cabin.Door.", "Vehicle.Body.Trunk.", "Vehicle.Body.Hood.")


def event_type(path: str) -> AccessEvent | None:
    """`door` for an open/closed signal of a door or flap, `lock` for a lock state, None otherwise."""
    if path == CENTRAL_LOCK:
        return AccessEvent.LOCK
    if path.startswith(_FLAPS):
        if path.endswith(".IsOpen"):
            return AccessEvent.DOOR
        if path.endswith(".IsLocked"):
            return AccessEvent.LOCK
    return None


@dataclass(slots=True)
class _Track:
    reported: SignalValue
    sent_value: SignalValue  # what the backend was last told (or the first reading)
    pending: SignalValue | None = None
    since: float = 0.0  # monotonic time the pending value was first read
    since_wall: datetime | None = None
    sent: deque[float] = field(default_factory=deque)  # monotonic times of the events in the window
    suppressed: int = 0
    warned: bool = False


class DoorEvents:
    def __init__(
        self,
        *,
        reporter: EventReporter,
        clock: Clock,
        debounce_s: float = 1.0,
        burst: int = 6,
        window_s: float = 60.0,
    ) -> None:
        self._reporter = reporter
        self._clock = clock
        self._debounce_s = debounce_s
        self._burst = burst
        self._window_s = window_s
        self._tracks: dict[str, _Track] = {}

    @staticmethod
    def watches(path: str) -> bool:
        return event_type(path) is not None

    def on_signal(self, signal: Signal) -> None:
        if signal.quality is not Quality.GOOD or not isinstance(signal.value, bool | str):
            return  # a stale contact says nothing new; a number is no door state
        track = self._tracks.get(signal.path)
        if track is None:
            self._tracks[signal.path] = _Track(reported=signal.value, sent_value=signal.value)
            return
        if signal.value == track.reported:
            track.pending = None  # flipped back within the debounce time: nothing happened
        elif track.pending is None or signal.value != track.pending:
            track.pending, track.since, track.since_wall = signal.value, self._clock.monotonic(), signal.timestamp
        self._settle(signal.path, track)

    def tick(self) -> None:
        """Report the changes that have held long enough (a source may send only on change)."""
        for path, track in self._tracks.items():
            if track.pending is not None:
                self._settle(path, track)
            elif track.suppressed and self._room(track, self._clock.monotonic()):
                self._send(path, track, self._clock.monotonic())  # the state it settled in after a storm

    def _room(self, track: _Track, now: float) -> bool:
        while track.sent and now - track.sent[0] >= self._window_s:
            track.sent.popleft()
        return len(track.sent) < self._burst

    def _settle(self, path: str, track: _Track) -> None:
        now = self._clock.monotonic()
        if track.pending is None or now - track.since < self._debounce_s:
            return
        track.reported, track.pending = track.pending, None
        if not self._room(track, now):
            track.suppressed += 1
            if not track.warned:
                track.warned = True
                _LOGGER.warning(
                    "%s changes more than %d times in %.0f s (a loose contact?): further changes are counted, "
                    "not sent, until it calms down",
                    path,
                    self._burst,
                    self._window_s,
                )
            return
        self._send(path, track, now)

    def _send(self, path: str, track: _Track, now: float) -> None:
        kind = event_type(path)
        suppressed, track.suppressed, track.warned = track.suppressed, 0, False
        if kind is None or track.reported == track.sent_value:
            return  # back where the backend last saw it: nothing to tell
        body = {
            "type": kind,
            "path": path,
            "value": track.reported,
            "previous": track.sent_value,
            "changed_at": to_millis(track.since_wall or self._clock.now()),
        }
        if suppressed:
            body["suppressed"] = suppressed
        # A change the data policy refuses is handled too: it is not sent later (tcu.telemetry.events).
        previous, track.sent_value = track.sent_value, track.reported
        if self._reporter.send(body, paths=(path,)):
            track.sent.append(now)
            _LOGGER.debug("%s event: %s %r → %r", kind, path, previous, track.reported)
