"""What occupants and the vehicle ask of the eCall: triggers (crash, airbag, SOS button, test call), hang-up requests.

`TriggerDetector` is sans-I/O: feed it every `Signal` (it is a `VehicleState` subscriber) and, for the
SOS button's hold time, `tick(now)` at `next_deadline()`; it returns a `Trigger` when one fires.

Debouncing, because a false eCall ties up a PSAP and a missed one costs lives:

- only a rising edge counts (False/unknown → True) and only from a GOOD reading: a STALE or INVALID
  `True` (a dead CAN bus replaying its last frame, a value out of range) never dials;
- a STALE or INVALID reading says nothing about the signal, so it changes nothing: the last GOOD value
  stands. A latched crash flag that goes GOOD True → STALE (the CAN reader reconnecting) → GOOD True
  is the same crash, not a second one; a new edge needs a GOOD False first. The same holds for the
  airbag, the SOS button (a press goes on through a stale reading) and threshold rules, whose
  out-of-range or `invalid` readings arrive as INVALID False;
- the SOS button must stay pressed `sos_hold_s` (signal time); a bounce shorter than that is ignored;
- a crash and the airbag deployment of the same impact arrive together: after any trigger, further
  automatic or manual triggers are suppressed for `retrigger_suppress_s` (the state machine would
  ignore them anyway, but they would clutter the reports);
- a crash flag already True at the first reading (the agent restarted after an impact) does trigger:
  an eCall interrupted by a reset must still be made.

Which bus signal means "crash", "airbag deployed" or "SOS pressed" is a `TriggerRule` (`[[ecall.trigger]]`
in the agent config). A rule does not change the detector: the CAN decoder compiles it into a boolean
target that publishes the canonical path of its kind (`RULE_PATHS`) as True while the signal holds one
of the rule's values or lies within its thresholds, so every debounce rule above applies unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tcu.vehicle.state import Quality, Signal

_LOGGER = logging.getLogger(__name__)

CRASH_DETECTED = "Vehicle.Safety.CrashDetected"
AIRBAG_DEPLOYED = "Vehicle.Safety.Airbag.IsDeployed"
SOS_BUTTON = "Vehicle.Cabin.SosButton.IsPressed"
_AUTOMATIC = {CRASH_DETECTED: "crash detected", AIRBAG_DEPLOYED: "airbag deployed"}
WATCHED = frozenset({CRASH_DETECTED, AIRBAG_DEPLOYED, SOS_BUTTON})
AUTOMATIC_PATHS = frozenset(_AUTOMATIC)


class TriggerKind(StrEnum):
    CRASH = "crash"
    AIRBAG = "airbag"
    SOS = "sos"


RULE_PATHS = {TriggerKind.CRASH: CRASH_DETECTED, TriggerKind.AIRBAG: AIRBAG_DEPLOYED, TriggerKind.SOS: SOS_BUTTON}


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerRule:
    """`[[ecall.trigger]]`: which signal, and which of its values, mean a crash, a deployed airbag or SOS.

    `signal` is "Message.Signal" of the CAN database (`values`: VAL_ names or raw integers; `at_least` /
    `at_most`: the physical value in the DBC's unit) or a VSS path the CAN mapping feeds (values and
    thresholds of the converted value). `invalid`: raw values or names meaning "not available".
    """

    kind: TriggerKind
    signal: str
    values: tuple[str | int | float | bool, ...] = ()
    at_least: float | None = None
    at_most: float | None = None
    invalid: tuple[str | int, ...] = ()
    hold_s: float | None = None  # sos only: how long the button must stay pressed
    where: str = "ecall.trigger"

    @property
    def path(self) -> str:
        return RULE_PATHS[self.kind]


class CallType(StrEnum):
    TEST = "test"
    MANUAL = "manual"
    AUTOMATIC = "automatic"


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """Start an eCall (an input of the state machine)."""

    call_type: CallType
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HangUpRequest:
    """Someone in the vehicle wants the call ended (refused for an automatic eCall)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectedTrigger:
    """A trigger and what caused it."""

    trigger: Trigger
    at: datetime
    path: str | None  # the signal, None for a commanded test call


class TriggerDetector:
    def __init__(self, *, sos_hold_s: float = 0.3, retrigger_suppress_s: float = 10.0) -> None:
        if sos_hold_s < 0 or retrigger_suppress_s < 0:
            raise ValueError("sos_hold_s and retrigger_suppress_s must not be negative")
        self._hold = timedelta(seconds=sos_hold_s)
        self._suppress = timedelta(seconds=retrigger_suppress_s)
        self._last: dict[str, bool] = {}  # the last GOOD value of each path; absent: none yet
        self._sos_known = True  # the latest SOS reading was GOOD: only then may a hold become a call
        self._pressed_since: datetime | None = None
        self._sos_fired = False
        self._last_fired: datetime | None = None

    def next_deadline(self) -> datetime | None:
        """Wall time at which a held SOS button becomes a trigger, if one is being held and its latest
        reading was GOOD (a stale hold becomes a call at the next GOOD True, if still pressed)."""
        if self._pressed_since is None or self._sos_fired or not self._sos_known:
            return None
        return self._pressed_since + self._hold

    def on_signal(self, signal: Signal) -> DetectedTrigger | None:
        if signal.path not in WATCHED:
            return None
        if signal.quality is not Quality.GOOD:
            if signal.value is True:
                _LOGGER.warning("%s is %s (%s): not an eCall trigger", signal.path, signal.value, signal.quality.value)
            if signal.path == SOS_BUTTON:
                self._sos_known = False  # the hold goes on, but is not judged until a GOOD reading
            return None
        value = signal.value is True
        rising = value and self._last.get(signal.path) is not True
        self._last[signal.path] = value
        if signal.path == SOS_BUTTON:
            self._sos_known = True
            return self._sos(value, rising, signal.timestamp)
        if rising:
            return self._fire(CallType.AUTOMATIC, _AUTOMATIC[signal.path], signal.timestamp, signal.path)
        return None

    def tick(self, now: datetime) -> DetectedTrigger | None:
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return None
        self._sos_fired = True
        return self._fire(CallType.MANUAL, "SOS button pressed", now, SOS_BUTTON)

    def test_call(self, now: datetime) -> DetectedTrigger:
        """A test call on command (workshop, periodic inspection); never suppressed."""
        return DetectedTrigger(
            trigger=Trigger(call_type=CallType.TEST, reason="test call requested"), at=now, path=None
        )

    def _sos(self, pressed: bool, rising: bool, at: datetime) -> DetectedTrigger | None:
        if not pressed:
            if self._pressed_since is not None and not self._sos_fired:
                _LOGGER.info("SOS button released after %s: shorter than the hold time", at - self._pressed_since)
            self._pressed_since, self._sos_fired = None, False
            return None
        if rising:
            self._pressed_since, self._sos_fired = at, False
        return self.tick(at)

    def _fire(self, call_type: CallType, reason: str, at: datetime, path: str) -> DetectedTrigger | None:
        if self._last_fired is not None and abs(at - self._last_fired) < self._suppress:
            _LOGGER.info("%s at %s: within %s of the previous trigger, suppressed", reason, at, self._suppress)
            return None
        self._last_fired = at
        _LOGGER.warning("eCall trigger: %s (%s)", reason, call_type.value)
        return DetectedTrigger(trigger=Trigger(call_type=call_type, reason=reason), at=at, path=path)
