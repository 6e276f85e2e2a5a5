"""Event data: what the vehicle reports when something happens, not on the telemetry schedule.

BMW CarData names them ("Ereignisdaten wie ein automatischer Service-Call"; "Benachrichtigung per Push
bei auftretenden Ereignissen im Fahrzeug wie beispielsweise eine automatische Servicedatenübermittlung
oder eine Aktualisierung von Positionsdaten"). Three kinds, each its own module:

- `service_call` (tcu.telemetry.service_calls): a Condition Based Service item falls due;
- `parked_position` (here): the car is parked after driving, its last position once;
- `door` / `lock` (tcu.telemetry.door_events): a door or flap opens or closes, the car is locked or
  unlocked, debounced.

Every event passes the data policy like telemetry does (`EventReporter`): an event carrying a signal of a
category the customer blocked, or that no running service uses, or while the SIM does not allow
telematics, is not sent, and the log says which signal and why. A sent event goes to the durable queue
and wakes the uplink at once (the agent's `queue_record`), so it is pushed, not left for the next
snapshot. `VehicleEvents` is the one `VehicleState` subscriber that feeds all three.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from tcu.clock import Clock
from tcu.shared_tick import every
from tcu.telemetry.data_policy import Verdict
from tcu.telemetry.door_events import DoorEvents
from tcu.telemetry.service_calls import ServiceCalls
from tcu.telemetry.snapshots import encode_signals
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.catalogue import Category
from telematics_wire.records import Record, RecordKind

_LOGGER = logging.getLogger(__name__)

PARKED_POSITION = "parked_position"
SPEED = "Vehicle.Speed"
MODE = "Vehicle.Mode"
LOW_VOLTAGE_STATE = "Vehicle.LowVoltageSystemState"
POSITION_PATHS = (
    "Vehicle.CurrentLocation.Latitude",
    "Vehicle.CurrentLocation.Longitude",
    "Vehicle.CurrentLocation.Heading",
    "Vehicle.CurrentLocation.Altitude",
    "Vehicle.CurrentLocation.HorizontalAccuracy",
)
_IGNITION_OFF = frozenset({"OFF", "LOCK"})
MOVING_KMH = 0.5  # below this a speed reading is standing still (GNSS and wheel-speed noise)


class EventGate(Protocol):
    """What the data policy (`tcu.telemetry.data_policy.DataPolicy`) answers about a signal."""

    def category_of(self, path: str) -> Category: ...

    def verdict(self, category: Category) -> Verdict: ...


class EventReporter:
    """Sends an event record when the data policy allows every signal it carries; otherwise logs why."""

    def __init__(self, *, gate: EventGate, clock: Clock, report: Callable[[Record], None]) -> None:
        self._gate = gate
        self._clock = clock
        self._report = report

    def refusal(self, path: str) -> str | None:
        """Why the signal at `path` may not leave the car now, or None when it may."""
        category = self._gate.category_of(path)
        verdict = self._gate.verdict(category)
        return None if verdict.allowed else f"{path} is {category.value} data: {verdict.reason}"

    def send(self, body: dict[str, Any], *, paths: Iterable[str]) -> bool:
        """Queue `body` as an event unless a signal it carries is not allowed; True when queued."""
        for path in paths:
            refused = self.refusal(path)
            if refused is not None:
                _LOGGER.info("%s event not sent: %s", body["type"], refused)
                return False
        self._report(Record(kind=RecordKind.EVENT, created=self._clock.now(), body=body))
        return True


def _number(signal: Signal) -> float | None:
    """A good, finite numeric reading; None for anything else (a bool is not a number here)."""
    value = signal.value
    if signal.quality is not Quality.GOOD or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class ParkedPosition:
    """One `parked_position` event when the car is parked after driving: its last position.

    Parked means the ignition went off (`Vehicle.Mode` parked, `Vehicle.LowVoltageSystemState` OFF or
    LOCK). A vehicle whose sources give no ignition state (OBD alone) counts as parked after
    `standstill_s` without movement; with an ignition state a long stop at a level crossing is not a
    parking. Re-armed by the next movement, so a restart or a second ignition-off sends nothing.
    """

    def __init__(
        self, *, state: VehicleState, reporter: EventReporter, clock: Clock, standstill_s: float = 180.0
    ) -> None:
        self._state = state
        self._reporter = reporter
        self._clock = clock
        self._standstill_s = standstill_s
        self._moved = False
        self._still_since: float | None = None
        self._ignition_known = False

    def on_signal(self, signal: Signal) -> None:
        if signal.quality is not Quality.GOOD:
            return
        if signal.path == SPEED:
            speed = _number(signal)
            if speed is None:
                return
            if speed >= MOVING_KMH:
                self._moved, self._still_since = True, None
            elif self._still_since is None:
                self._still_since = self._clock.monotonic()
        elif signal.path == MODE:
            self._ignition_known = True
            if signal.value == "driving":
                self._moved = True
            elif signal.value == "parked":
                self._parked("ignition_off")
        elif signal.path == LOW_VOLTAGE_STATE:
            self._ignition_known = True
            if signal.value in _IGNITION_OFF:
                self._parked("ignition_off")

    def tick(self) -> None:
        if (
            self._moved
            and not self._ignition_known
            and self._still_since is not None
            and self._clock.monotonic() - self._still_since >= self._standstill_s
        ):
            self._parked("standstill")

    def _parked(self, trigger: str) -> None:
        if not self._moved:
            return  # parked already reported, or never driven since the agent started
        self._moved, self._still_since = False, None
        position = {
            path: signal
            for path in POSITION_PATHS
            if (signal := self._state.get(path)) is not None and signal.quality is Quality.GOOD
        }
        if not {POSITION_PATHS[0], POSITION_PATHS[1]} <= position.keys():
            _LOGGER.warning("%s event not sent: the car is parked but no good position is known", PARKED_POSITION)
            return
        body = {"type": PARKED_POSITION, "trigger": trigger, "position": encode_signals(position)}
        if self._reporter.send(body, paths=position):
            _LOGGER.info(
                "car parked (%s) at %.6f, %.6f: position sent",
                trigger,
                position[POSITION_PATHS[0]].value,
                position[POSITION_PATHS[1]].value,
            )


class VehicleEvents:
    """The `VehicleState` subscriber behind all event data; `run()` drives the debounce and standstill timers."""

    def __init__(
        self,
        *,
        state: VehicleState,
        clock: Clock,
        gate: EventGate,
        report: Callable[[Record], None],
        store_path: Path,
        debounce_s: float = 1.0,
        standstill_s: float = 180.0,
        tick_s: float = 0.25,
    ) -> None:
        self.reporter = EventReporter(gate=gate, clock=clock, report=report)
        self.service_calls = ServiceCalls(state=state, reporter=self.reporter, store_path=store_path)
        self.parked = ParkedPosition(state=state, reporter=self.reporter, clock=clock, standstill_s=standstill_s)
        self.doors = DoorEvents(reporter=self.reporter, clock=clock, debounce_s=debounce_s)
        self._tick_s = tick_s
        self._route: dict[str, tuple[Callable[[Signal], None], ...]] = {}

    def load(self) -> None:
        """Read which service items were called before a restart, so none is called twice."""
        self.service_calls.load()

    def on_signal(self, signal: Signal) -> None:
        handlers = self._route.get(signal.path)
        if handlers is None:  # first reading of this path: one look-up per reading after that
            handlers = self._route[signal.path] = self._handlers(signal.path)
        for handler in handlers:
            handler(signal)

    def _handlers(self, path: str) -> tuple[Callable[[Signal], None], ...]:
        handlers: list[Callable[[Signal], None]] = []
        if self.service_calls.watches(path):
            handlers.append(self.service_calls.on_signal)
        if path in (SPEED, MODE, LOW_VOLTAGE_STATE):
            handlers.append(self.parked.on_signal)
        if self.doors.watches(path):
            handlers.append(self.doors.on_signal)
        return tuple(handlers)

    def tick(self) -> None:
        self.doors.tick()
        self.parked.tick()

    async def run(self) -> None:
        await every(self._tick_s, self.tick)  # on the loop's shared tick: a fleet runs thousands of these
