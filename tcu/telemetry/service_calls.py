"""The automatic service call: a `service_call` event when a Condition Based Service item falls due.

CarData's example of event data ("ein automatischer Service-Call"). The items and when each is due:

- `service` (`Vehicle.Service.DistanceToService`, `.TimeToService`, `.IsServiceDue`): a distance or
  a time of 0 or less (VSS: negative is overdue), or IsServiceDue;
- `engine_oil` (`Vehicle.Powertrain.CombustionEngine.EngineOilLevel`): LOW, CRITICALLY_LOW or
  CRITICALLY_HIGH;
- `brake_pads_front` / `brake_pads_rear` (`Vehicle.Chassis.Axle.Row1|Row2.Wheel.Left|Right.Brake.PadWear`):
  a pad worn `pad_limit_pct` (80 %) or more.

Once per due item, not per reading: the items called are kept in a small file, so a restart while the
item is still due calls nothing again. An item whose readings all say "not due" again (the workshop reset
the service, topped up the oil, changed the pads) is forgotten, and its next due date calls again.
A queue failure leaves the item uncalled, so the next reading tries again. The record is written off
the event loop (tcu.persist.AtomicFile), in the order the items were called and forgotten.

An item that falls due while the data policy does not allow its signals (the customer blocked
maintenance data, no running service uses it, the SIM is off) is not called and counts as handled:
lifting the block later does not send data from the time it was in force. The log says so.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tcu.errors import StorageError
from tcu.persist import AtomicFile, read_optional
from tcu.telemetry.snapshots import encode_signals
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.signal_values import SignalValue

if TYPE_CHECKING:
    from tcu.telemetry.events import EventReporter

_LOGGER = logging.getLogger(__name__)

SERVICE_CALL = "service_call"
ODOMETER = "Vehicle.TraveledDistance"
PAD_LIMIT_PCT = 80.0
_AXLE = "Vehicle.Chassis.Axle"
_OIL_DUE = frozenset({"LOW", "CRITICALLY_LOW", "CRITICALLY_HIGH"})


def _finite(value: SignalValue) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None  # True == 1 in Python: a flag where a number belongs is no reading
    return float(value)


def _at_most_zero(value: SignalValue) -> bool | None:
    number = _finite(value)
    return None if number is None else number <= 0


def _worn(limit_pct: float) -> Callable[[SignalValue], bool | None]:
    def due(value: SignalValue) -> bool | None:
        number = _finite(value)
        return None if number is None else number >= limit_pct

    return due


def _flag(value: SignalValue) -> bool | None:
    return value if isinstance(value, bool) else None


def _oil(value: SignalValue) -> bool | None:
    return value in _OIL_DUE if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class CbsItem:
    name: str
    # path → whether a reading says due; None: not a reading this item understands (ignored)
    rules: Mapping[str, Callable[[SignalValue], bool | None]]


def cbs_items(pad_limit_pct: float = PAD_LIMIT_PCT) -> tuple[CbsItem, ...]:
    worn = _worn(pad_limit_pct)
    return (
        CbsItem(
            "service",
            {
                "Vehicle.Service.DistanceToService": _at_most_zero,
                "Vehicle.Service.TimeToService": _at_most_zero,
                "Vehicle.Service.IsServiceDue": _flag,
            },
        ),
        CbsItem("engine_oil", {"Vehicle.Powertrain.CombustionEngine.EngineOilLevel": _oil}),
        CbsItem("brake_pads_front", {f"{_AXLE}.Row1.Wheel.{s}.Brake.PadWear": worn for s in ("Left", "Right")}),
        CbsItem("brake_pads_rear", {f"{_AXLE}.Row2.Wheel.{s}.Brake.PadWear": worn for s in ("Left", "Right")}),
    )


class ServiceCalls:
    def __init__(
        self,
        *,
        state: VehicleState,
        reporter: EventReporter,
        store_path: Path,
        items: tuple[CbsItem, ...] | None = None,
    ) -> None:
        self._state = state
        self._reporter = reporter
        self._path = store_path
        self._file = AtomicFile(store_path)
        self._items = items if items is not None else cbs_items()
        self._item_of = {path: item for item in self._items for path in item.rules}
        self._due: dict[str, dict[str, bool]] = {item.name: {} for item in self._items}  # item → path → due
        self.called: set[str] = set()

    def watches(self, path: str) -> bool:
        return path in self._item_of

    def load(self) -> None:
        try:
            raw = read_optional(self._path)
            called = json.loads(raw)["called"] if raw is not None else []
        except (StorageError, ValueError, TypeError, KeyError, RecursionError) as exc:
            called, problem = [], str(exc)
        else:
            problem = "" if isinstance(called, list) else "'called' is not a list"
        if problem:
            # At worst a due item is called once more: better than a car that stops starting its agent.
            _LOGGER.error("service call record %s unreadable (%s); starting with none called", self._path, problem)
            called = []
        known = {item.name for item in self._items}
        self.called = {c for c in called if isinstance(c, str) and c in known}

    def on_signal(self, signal: Signal) -> None:
        item = self._item_of[signal.path]
        if signal.quality is not Quality.GOOD:
            return
        verdict = item.rules[signal.path](signal.value)
        if verdict is None:
            _LOGGER.debug("service call: %s reading %r ignored", signal.path, signal.value)
            return
        readings = self._due[item.name]
        readings[signal.path] = verdict
        if any(readings.values()):
            if item.name not in self.called:
                self._call(item, [path for path, due in readings.items() if due])
        elif item.name in self.called:
            _LOGGER.info("service item %s is no longer due (serviced): its next due date calls again", item.name)
            self._remember(self.called - {item.name})

    def _call(self, item: CbsItem, due_paths: list[str]) -> None:
        signals = {p: s for p in item.rules if (s := self._state.get(p)) is not None and s.quality is Quality.GOOD}
        body = {"type": SERVICE_CALL, "item": item.name, "due": sorted(due_paths), "readings": encode_signals(signals)}
        odometer = self._state.get(ODOMETER)
        context = {}
        if odometer is not None and odometer.quality is Quality.GOOD and self._reporter.refusal(ODOMETER) is None:
            context[ODOMETER] = odometer  # the mileage helps the workshop, but is not needed for the call
        body["context"] = encode_signals(context)
        if self._reporter.send(body, paths=signals):
            _LOGGER.info("service call: %s is due (%s)", item.name, ", ".join(sorted(due_paths)))
        else:
            _LOGGER.info("service item %s is due; not called, and not called later for this due date", item.name)
        self._remember(self.called | {item.name})

    async def settled(self) -> None:
        """Return once the record of every call made so far is written (or its failure logged)."""
        await self._file.settled()

    def _remember(self, called: set[str]) -> None:
        self.called = called
        # A subscriber of the vehicle state cannot wait for the disk: it hands the record over and goes on.
        self._file.submit(json.dumps({"called": sorted(called)}).encode()).add_done_callback(self._remembered)

    def _remembered(self, written: Future[None]) -> None:
        """On the writer's thread: a record that could not be written is only logged (see the docstring)."""
        exc = written.exception()
        if exc is not None:
            _LOGGER.error("service calls made are not recorded (%s): a restart may call them again", exc)
