"""Precise checks over the signal values the backend received: a value, a range held over a window, an
edge with its time (the latencies from an injected event or a reading to the backend: hil.latency_checks).

Every reading of a signal the vehicle sent is an `Observation`: from a telemetry snapshot, an event's
`signals`, a `door`/`lock` event or a `parked_position`. Its time `t` is the vehicle's own stamp of the
reading (a door event's `changed_at`), its `received` the backend's; both on the scenario's time axis
(`Evidence.scenario_seconds`, second 0 = the scenario's start), so the checks hold when the bench runs
on virtual time. A reading of quality `stale` or `invalid` is no reading of the signal and is left out.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from backend_stub.storable import stored_moment
from hil.evidence_reads import axis, real_io_allowance
from hil.outcome import Outcome, in_window, number, seconds, window, window_text
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from backend_stub.store import StoredRecord
    from hil.expectations import Evidence

# The packaged car's door contacts (tcu/vehicle/mapping/can.toml: a left-hand-drive car).
DOOR_PATHS = {
    "FrontLeft": "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen",
    "FrontRight": "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen",
    "RearLeft": "Vehicle.Cabin.Door.Row2.DriverSide.IsOpen",
    "RearRight": "Vehicle.Cabin.Door.Row2.PassengerSide.IsOpen",
}
CENTRAL_LOCK = "Vehicle.Body.CentralLock.State"
LOCKED = ("LOCKED", "DOUBLE_LOCKED")
# A reading stamped this much before its step still counts as showing it: the runner's step time and
# the vehicle's stamp are rounded independently.
STEP_SLACK_S = 0.25
# signal_edge's default `within_s`: how far from its step an edge may be read, at least; more where
# the bench's real I/O (the device's pty, the agent's read) is more at the run's time_scale.
EDGE_WITHIN_S = 1.0
# A door/lock event's `previous` value is placed this much before its `changed_at`.
_EPSILON = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    t: float  # scenario s: when the vehicle read the value
    received: float  # scenario s: when the backend received the record carrying it
    value: Any
    seq: int
    source: str  # "telemetry", "door event", ...


def _stamp(millis: Any, fallback: datetime) -> datetime:
    if isinstance(millis, bool) or not isinstance(millis, int):
        return fallback
    return stored_moment(millis)


def _readings(record: StoredRecord, path: str) -> Iterator[tuple[Any, datetime, str]]:
    """(value, vehicle stamp, source) of every good reading of `path` in one record."""
    body = record.body
    source = "telemetry" if record.kind == "telemetry" else f"{body.get('type', record.kind)} event"
    for key in ("signals", "position"):  # telemetry and events; a parked_position event's position
        signals = body.get(key)
        item = signals.get(path) if isinstance(signals, dict) else None
        if isinstance(item, dict) and "v" in item and item.get("q", "good") == "good":
            yield item["v"], _stamp(item.get("t"), record.created), source
    if body.get("type") in ("door", "lock") and body.get("path") == path and "value" in body:
        changed = _stamp(body.get("changed_at"), record.created)
        if "previous" in body:  # the event says what the signal was until it changed
            yield body["previous"], changed - _EPSILON, source
        yield body["value"], changed, source


def observations(evidence: Evidence, path: str) -> list[Observation]:
    """Every good reading of `path` the backend received, in the vehicle's reading order."""
    to_scenario = axis(evidence)
    found = []
    for record in evidence.backend.store.records(evidence.vin):
        if record.kind not in ("telemetry", "event"):
            continue
        received = to_scenario(record.received)
        for value, stamp, source in _readings(record, path):
            found.append(
                Observation(t=to_scenario(stamp), received=received, value=value, seq=record.seq, source=source)
            )
    return sorted(found, key=lambda o: (o.t, o.received))


# -- the expected value ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    """`equals` a bool, string or number, or a number within `tolerance` of it."""

    value: bool | str | float
    tolerance: float = 0.0

    @classmethod
    def of(cls, args: dict[str, Any], key: str = "equals") -> Expected:
        if key not in args:
            raise ConfigError(f"needs {key} = <bool, string or number>")
        value = args[key]
        tolerance = number(args, "tolerance", 0.0) or 0.0
        if isinstance(value, bool | str):
            if "tolerance" in args:
                raise ConfigError(f"tolerance applies to a number, not {key} = {value!r}")
            return cls(value)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: expected a bool, a string or a finite number")
        if tolerance < 0:
            raise ConfigError(f"tolerance = {tolerance}: expected >= 0")
        return cls(float(value), tolerance)

    def matches(self, value: Any) -> bool:
        # bool first: `True == 1` in Python, but a door state is no number and 1 is no door state.
        if isinstance(self.value, bool) or isinstance(value, bool):
            return isinstance(self.value, bool) and isinstance(value, bool) and value is self.value
        if isinstance(self.value, str):
            return isinstance(value, str) and value == self.value
        return isinstance(value, int | float) and math.isfinite(value) and abs(value - self.value) <= self.tolerance

    def __str__(self) -> str:
        if isinstance(self.value, float):
            return f"{self.value:g} ± {self.tolerance:g}" if self.tolerance else f"{self.value:g}"
        return repr(self.value)


def _path(args: dict[str, Any]) -> str:
    path = args.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError('needs path = "Vehicle...."')
    return path


# -- the checks ------------------------------------------------------------------------------------


def signal_value(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """The value at `at` (the last reading at or before it), every value in `window`, or the last value."""
    path, expected, span = _path(args), Expected.of(args), window(args)
    at = number(args, "at")
    if at is not None and span is not None:
        raise ConfigError("give at or window, not both")
    seen = observations(evidence, path)
    limit = f"== {expected}"
    if span is not None:
        inside = [o for o in seen if in_window(span, o.t)]
        if not inside:
            return Outcome(
                passed=False,
                detail=f"no reading of {path} {window_text(span)} ({len(seen)} outside it)",
                measured="no reading",
                limit=f"{limit} {window_text(span)}",
            )
        wrong = [o for o in inside if not expected.matches(o.value)]
        values = sorted({repr(o.value) for o in inside})
        measured = f"{len(inside)} readings: {', '.join(values[:4])}{' ...' if len(values) > 4 else ''}"
        detail = f"{path} {window_text(span)}: {measured}"
        if wrong:
            detail += f"; first off: {wrong[0].value!r} read at {seconds(wrong[0].t)} ({wrong[0].source})"
        return Outcome(passed=not wrong, detail=detail, measured=measured, limit=f"{limit} {window_text(span)}")
    chosen = [o for o in seen if at is None or o.t <= at + STEP_SLACK_S]
    where = "last reading" if at is None else f"last reading at or before {at:g} s"
    if not chosen:
        return Outcome(
            passed=False, detail=f"no {where} of {path} ({len(seen)} readings in all)", measured="none", limit=limit
        )
    last = chosen[-1]
    return Outcome(
        passed=expected.matches(last.value),
        detail=f"{where} of {path}: {last.value!r}, read at {seconds(last.t)} ({last.source} #{last.seq}); "
        f"expected {expected}",
        measured=f"{last.value!r} at {seconds(last.t)}",
        limit=limit,
    )


def signal_range(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """Every reading in `window` (default the run) within min..max, and at least `min_count` of them."""
    path, span = _path(args), window(args)
    low, high = number(args, "min"), number(args, "max")
    if low is None and high is None:
        raise ConfigError("needs min and/or max")
    min_count = int(number(args, "min_count", 1) or 0)
    limit = f"{'' if low is None else f'{low:g} <= '}value{'' if high is None else f' <= {high:g}'} {window_text(span)}"
    limit += f", >= {min_count} readings"
    inside = [o for o in observations(evidence, path) if in_window(span, o.t)]
    outside = [
        o
        for o in inside
        if isinstance(o.value, bool)
        or not isinstance(o.value, int | float)
        or not math.isfinite(o.value)
        or (low is not None and o.value < low)
        or (high is not None and o.value > high)
    ]
    numbers = [float(o.value) for o in inside if o not in outside]
    measured = f"{len(inside)} readings" + (f", {min(numbers):g}..{max(numbers):g}" if numbers else "")
    detail = f"{path} {window_text(span)}: {measured}"
    if outside:
        detail += f"; first outside: {outside[0].value!r} read at {seconds(outside[0].t)} ({outside[0].source})"
    if len(inside) < min_count:
        detail += f"; fewer than the {min_count} required"
    return Outcome(passed=not outside and len(inside) >= min_count, detail=detail, measured=measured, limit=limit)


def edges(seen: Sequence[Observation], before: Expected, after: Expected) -> list[Observation]:
    """The readings where the signal went from `before` to `after` (the first reading of `after`)."""
    return [
        current
        for previous, current in itertools.pairwise(seen)
        if before.matches(previous.value) and after.matches(current.value)
    ]


def signal_edge(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """A change `from` → `to`; with `near`, the one nearest that scenario second, within `within_s`."""
    path, before, after = _path(args), Expected.of(args, "from"), Expected.of(args, "to")
    near, within = number(args, "near"), number(args, "within_s", real_io_allowance(evidence, EDGE_WITHIN_S))
    assert within is not None
    seen = observations(evidence, path)
    found = edges(seen, before, after)
    what = f"{before} → {after}"
    limit = "seen" if near is None else f"within {within:g} s of {near:g} s"
    if not found:
        values = sorted({repr(o.value) for o in seen})
        return Outcome(
            passed=False,
            detail=f"no {what} edge of {path} in {len(seen)} readings (values seen: {', '.join(values) or 'none'})",
            measured="no edge",
            limit=limit,
        )
    if near is None:
        edge = found[0]
        return Outcome(
            passed=True,
            detail=f"{what} of {path} at {seconds(edge.t)} ({edge.source} #{edge.seq}); {len(found)} such edge(s)",
            measured=f"at {seconds(edge.t)}",
            limit=limit,
        )
    edge = min(found, key=lambda o: abs(o.t - near))
    off = edge.t - near
    return Outcome(
        passed=abs(off) <= within,
        detail=f"{what} of {path} at {seconds(edge.t)} ({off:+.2f} s from {near:g} s; {edge.source} #{edge.seq}); "
        f"{len(found)} such edge(s) in the run",
        measured=f"at {seconds(edge.t)} ({off:+.2f} s)",
        limit=limit,
    )


def signal_reported(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """Some value exists: a smoke check; signal_value/signal_edge check what it was and when."""
    values = {v.path: v for v in evidence.backend.store.last_values(evidence.vin)}
    found = values.get(str(args["path"]))
    if found is None:
        detail = f"no value of {args['path']} at the backend ({len(values)} other signals)"
        return Outcome(passed=False, detail=detail, measured="none", limit="a value")
    detail = f"last value {found.value!r} at {found.timestamp.isoformat(timespec='seconds')}"
    return Outcome(passed=True, detail=detail, measured=repr(found.value), limit="a value")


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], Outcome]] = {
    "signal_reported": signal_reported,
    "signal_value": signal_value,
    "signal_range": signal_range,
    "signal_edge": signal_edge,
}
