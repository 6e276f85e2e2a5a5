"""Precise checks over the signal values the backend received: a value, a range held over a window, an
edge with its time, the latency from an injected event to the backend, the telemetry latency.

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

from backend_stub.psap import read_psap_msds
from backend_stub.storable import stored_moment
from hil.outcome import Outcome, number, percentile, seconds, window
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from backend_stub.store import StoredRecord
    from hil.expectations import Evidence
    from hil.scenario import Step

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
# A fault's span for telemetry_latency's `exclude`: from a second before it (a record in flight when it
# began) to `settle_s` after it ended.
FAULT_LEAD_S = 1.0
# A door/lock event's `previous` value is placed this much before its `changed_at`.
_EPSILON = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    t: float  # scenario s: when the vehicle read the value
    received: float  # scenario s: when the backend received the record carrying it
    value: Any
    seq: int
    source: str  # "telemetry", "door event", ...


def axis(evidence: Evidence) -> Callable[[datetime], float]:
    if evidence.scenario_seconds is None:
        raise ValueError("the evidence has no scenario time axis (Evidence.scenario_seconds)")
    return evidence.scenario_seconds


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


def _in(span: tuple[float, float] | None, t: float) -> bool:
    return span is None or span[0] <= t <= span[1]


def _span_text(span: tuple[float, float] | None) -> str:
    return "over the run" if span is None else f"in {span[0]:g}..{span[1]:g} s"


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
        inside = [o for o in seen if _in(span, o.t)]
        if not inside:
            return Outcome(
                passed=False,
                detail=f"no reading of {path} {_span_text(span)} ({len(seen)} outside it)",
                measured="no reading",
                limit=f"{limit} {_span_text(span)}",
            )
        wrong = [o for o in inside if not expected.matches(o.value)]
        values = sorted({repr(o.value) for o in inside})
        measured = f"{len(inside)} readings: {', '.join(values[:4])}{' ...' if len(values) > 4 else ''}"
        detail = f"{path} {_span_text(span)}: {measured}"
        if wrong:
            detail += f"; first off: {wrong[0].value!r} read at {seconds(wrong[0].t)} ({wrong[0].source})"
        return Outcome(passed=not wrong, detail=detail, measured=measured, limit=f"{limit} {_span_text(span)}")
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
    limit = f"{'' if low is None else f'{low:g} <= '}value{'' if high is None else f' <= {high:g}'} {_span_text(span)}"
    limit += f", >= {min_count} readings"
    inside = [o for o in observations(evidence, path) if _in(span, o.t)]
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
    detail = f"{path} {_span_text(span)}: {measured}"
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
    near, within = number(args, "near"), number(args, "within_s", 1.0)
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


# -- latencies -------------------------------------------------------------------------------------


def _shown_at(evidence: Evidence, step: Step) -> tuple[float, str] | None:
    """When the backend first received a record showing this step's effect, and what it was."""
    if step.do in ("crash", "sos"):  # the backend's PSAP decoding the MSD is what shows an emergency
        to_scenario = axis(evidence)
        msds = [] if evidence.backend.psap is None else read_psap_msds(evidence.backend.config.database)
        for row in msds:
            received = to_scenario(stored_moment(int(row["received_ms"])))
            if row["vin"] == evidence.vin and row["kind"] != "test" and received >= step.at - STEP_SLACK_S:
                return received, f"MSD of call {row['call_id']} at the PSAP"
        return None
    path, expected = _step_signal(step)
    seen = observations(evidence, path)
    # The change, not the state: a close_door is not shown by a door that never opened.
    for index in range(1, len(seen)):
        current = seen[index]
        if current.t < step.at - STEP_SLACK_S or expected.matches(seen[index - 1].value):
            continue
        if not expected.matches(current.value):
            continue
        # Every reading of the new state until it changes again shows it: the first to arrive counts.
        held = list(itertools.takewhile(lambda o: expected.matches(o.value), seen[index:]))
        first = min(held, key=lambda o: o.received)
        return first.received, f"{first.source} #{first.seq}"
    return None


def _step_signal(step: Step) -> tuple[str, Expected]:
    if step.do in ("open_door", "close_door"):
        door = str(step.args.get("door", "FrontLeft"))
        return DOOR_PATHS[door], Expected(step.do == "open_door")
    if step.do == "lock":
        return CENTRAL_LOCK, Expected("LOCKED")
    return CENTRAL_LOCK, Expected("UNLOCKED")


SHOWN = frozenset({"open_door", "close_door", "lock", "unlock", "crash", "sos"})


def _limits(args: dict[str, Any]) -> tuple[float | None, float | None, float | None, str]:
    p50, p99, most = number(args, "p50_max_s"), number(args, "p99_max_s"), number(args, "max_s")
    if p50 is None and p99 is None and most is None:
        raise ConfigError("needs p50_max_s, p99_max_s and/or max_s")
    named = (("p50", p50), ("p99", p99), ("max", most))
    return p50, p99, most, ", ".join(f"{name} <= {limit:g} s" for name, limit in named if limit is not None)


def _judge(latencies: Sequence[float], args: dict[str, Any], what: str) -> tuple[bool, str, str]:
    """(within the limits, measured, limit) of a set of latencies."""
    p50_max, p99_max, max_max, limit = _limits(args)
    if not latencies:
        return False, f"no {what}", limit
    p50, p99, most = percentile(latencies, 50), percentile(latencies, 99), max(latencies)
    ok = (
        (p50_max is None or p50 <= p50_max)
        and (p99_max is None or p99 <= p99_max)
        and (max_max is None or most <= max_max)
    )
    measured = f"p50 {seconds(p50)}, p99 {seconds(p99)}, max {seconds(most)} over {len(latencies)} {what}"
    return ok, measured, limit


def event_latency(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """From each injected step (`steps`, default every one the backend can see) to the backend's
    receipt of the first record that shows it; every such step must be shown."""
    kinds = args.get("steps", sorted(SHOWN))
    if not isinstance(kinds, list) or not set(kinds) <= SHOWN:
        raise ConfigError(f"steps = {kinds!r}: expected a list of {', '.join(sorted(SHOWN))}")
    steps = [step for step in evidence.steps if step.do in kinds]
    if not steps:
        raise ConfigError(f"the scenario has no {', '.join(kinds)} step to measure")
    latencies, parts, missing = [], [], []
    for step in steps:
        shown = _shown_at(evidence, step)
        if shown is None:
            missing.append(f"{step.do}@{step.at:g}s")
            continue
        latencies.append(shown[0] - step.at)
        parts.append(f"{step.do}@{step.at:g}s {latencies[-1]:.2f} s ({shown[1]})")
    ok, measured, limit = _judge(latencies, args, "events")
    detail = f"{measured}: {'; '.join(parts) or 'none shown'}"
    if missing:
        detail += f"; never shown at the backend: {', '.join(missing)}"
    return Outcome(passed=ok and not missing, detail=detail, measured=measured, limit=limit)


def _fault_spans(evidence: Evidence, args: dict[str, Any]) -> list[tuple[float, float]]:
    kinds = args.get("exclude", [])
    if not isinstance(kinds, list):
        raise ConfigError(f'exclude = {kinds!r}: expected a list of step names, e.g. ["tunnel"]')
    settle = number(args, "settle_s", 5.0) or 0.0
    spans = []
    for step in evidence.steps:
        if step.do in kinds:
            lasts = step.args.get("for_s", step.args.get("restart_after_s", 0.0))
            spans.append((step.at - FAULT_LEAD_S, step.at + float(lasts) + settle))
    return spans


def telemetry_latency(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """Telemetry records created (in `window`, outside the spans of the `exclude`d steps) → received."""
    to_scenario, span = axis(evidence), window(args)
    spans = _fault_spans(evidence, args)
    min_count = int(number(args, "min_count", 1) or 0)
    latencies, excluded = [], 0
    for record in evidence.backend.store.records(evidence.vin, kind="telemetry"):
        created = to_scenario(record.created)
        if not _in(span, created):
            continue
        if any(start <= created <= end for start, end in spans):
            excluded += 1
            continue
        latencies.append(to_scenario(record.received) - created)
    ok, measured, limit = _judge(latencies, args, "records")
    detail = f"telemetry created {_span_text(span)}: {measured}"
    if spans:
        detail += f"; {excluded} created in the excluded fault spans " + ", ".join(
            f"{start:g}..{end:g} s" for start, end in spans
        )
    if len(latencies) < min_count:
        detail += f"; fewer than the {min_count} records required"
    return Outcome(passed=ok and len(latencies) >= min_count, detail=detail, measured=measured, limit=limit)


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], Outcome]] = {
    "signal_value": signal_value,
    "signal_range": signal_range,
    "signal_edge": signal_edge,
    "event_latency": event_latency,
    "telemetry_latency": telemetry_latency,
}
