"""Precise checks of latency: from an injected event to the backend, and from a telemetry record's
creation to its receipt, each as p50/p99/max against its limits.

An event is shown at the backend by the first record carrying the signal's new value (hil.signal_checks'
observations), an emergency by the PSAP decoding its MSD (hil.ecall_checks). Telemetry created while an
`exclude`d fault lasted is left out, up to the link being back: an agent restarted on a fast bench takes
many scenario seconds to start and connect (a Python process starts in real time), so the span ends at
the first link-up after the fault, not at a fixed time after it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hil.ecall_checks import msd_at_psap
from hil.evidence_reads import axis, real_io_allowance
from hil.outcome import Outcome, in_window, number, percentile, seconds, window, window_text
from hil.signal_checks import CENTRAL_LOCK, DOOR_PATHS, STEP_SLACK_S, Expected, observations
from hil.timeline import Event, EventKind
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from hil.expectations import Evidence
    from hil.scenario import Step

SHOWN = frozenset({"open_door", "close_door", "lock", "unlock", "crash", "sos"})
# An excluded fault's span begins this long before its step (a record in flight when it began), or
# REAL_IO_S of real time at the run's scale if that is more.
FAULT_LEAD_S = 1.0
# ... and ends `settle_s` after the link is back: the backlog sent first delays what follows it. The
# default: 5 scenario seconds, or 1.25 real seconds at the run's time_scale if that is more.
SETTLE_S = 5.0
SETTLE_REAL_S = 1.25


# -- event_latency ---------------------------------------------------------------------------------


def _step_signal(step: Step) -> tuple[str, Expected]:
    if step.do in ("open_door", "close_door"):
        door = str(step.args.get("door", "FrontLeft"))
        return DOOR_PATHS[door], Expected(step.do == "open_door")
    if step.do == "lock":
        return CENTRAL_LOCK, Expected("LOCKED")
    return CENTRAL_LOCK, Expected("UNLOCKED")


def _shown_at(evidence: Evidence, step: Step) -> tuple[float, str] | None:
    """When the backend first received a record showing this step's effect, and what it was."""
    if step.do in ("crash", "sos"):  # the backend's PSAP decoding the MSD is what shows an emergency
        return msd_at_psap(evidence, since=step.at - STEP_SLACK_S)
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


# -- telemetry_latency -----------------------------------------------------------------------------


def link_back(events: Sequence[Event], after: float) -> float:
    """When the agent's link was up again at or after scenario second `after`: `after` itself if the
    last link or agent event by then left it up (or there is none), else the next `link up` (an agent
    restarted has no link until it says so); infinity if it never came back."""
    ordered = sorted((e for e in events if e.kind in (EventKind.LINK, EventKind.AGENT)), key=lambda e: e.t)
    last = next((e for e in reversed(ordered) if e.t <= after), None)
    if last is None or (last.kind is EventKind.LINK and last.label == "link up"):
        return after
    return next((e.t for e in ordered if e.t > after and e.kind is EventKind.LINK and e.label == "link up"), math.inf)


def _fault_spans(evidence: Evidence, args: dict[str, Any]) -> list[tuple[float, float]]:
    kinds = args.get("exclude", [])
    if not isinstance(kinds, list):
        raise ConfigError(f'exclude = {kinds!r}: expected a list of step names, e.g. ["tunnel"]')
    settle = number(args, "settle_s", real_io_allowance(evidence, SETTLE_S, SETTLE_REAL_S)) or 0.0
    lead = real_io_allowance(evidence, FAULT_LEAD_S)
    spans = []
    for step in evidence.steps:
        if step.do in kinds:
            lasts = float(step.args.get("for_s", step.args.get("restart_after_s", 0.0)))
            spans.append((step.at - lead, link_back(evidence.events, step.at + lasts) + settle))
    return spans


def _spans_text(spans: Sequence[tuple[float, float]]) -> str:
    return ", ".join(f"{start:g}..{end:g} s" if math.isfinite(end) else f"{start:g} s..the end" for start, end in spans)


def telemetry_latency(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """Telemetry records created (in `window`, outside the spans of the `exclude`d steps) → received."""
    to_scenario, span = axis(evidence), window(args)
    spans = _fault_spans(evidence, args)
    min_count = int(number(args, "min_count", 1) or 0)
    latencies, excluded = [], 0
    for record in evidence.backend.store.records(evidence.vin, kind="telemetry"):
        created = to_scenario(record.created)
        if not in_window(span, created):
            continue
        if any(start <= created <= end for start, end in spans):
            excluded += 1
            continue
        latencies.append(to_scenario(record.received) - created)
    ok, measured, limit = _judge(latencies, args, "records")
    detail = f"telemetry created {window_text(span)}: {measured}"
    if spans:
        detail += f"; {excluded} created in the excluded fault spans {_spans_text(spans)}"
    if len(latencies) < min_count:
        detail += f"; fewer than the {min_count} records required"
    return Outcome(passed=ok and len(latencies) >= min_count, detail=detail, measured=measured, limit=limit)


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], Outcome]] = {
    "event_latency": event_latency,
    "telemetry_latency": telemetry_latency,
}
