"""Precise checks of the eCall: its timings from the trigger, the MSD's position against the drive's, and
a call ended by the vehicle's T2 clear-down an hour after the PSAP answered.

The timings come from the `ecall` records (`tcu.ecall.call_report.CallReport.body`): each transition
carries the vehicle's `at_ms` and its session's `session_started_ms` (the trigger), so a stage's time is
measured on the vehicle's clock, not by when the record reached the backend (the telematics uplink keeps
off the radio until the AL-ACK). The MSD's position is compared with where the drive was at the trigger:
the crash or sos step, or, when no step caused the call, the trigger record's own time.

`ecall_cleared_by_t2` (the ecall_t2 scenario, on virtual time): the first emergency eCall was connected
once (no redial, no drop), its MSD acknowledged without a T5/T6/T7 fallback, and ended by the vehicle's
T2 clear-down `t2_s` after the PSAP answered — on the vehicle's clock (its `ecall` records) and on the
PSAP's (who hung up, when).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backend_stub.storable import stored_moment
from hil.evidence_reads import (
    axis,
    ecall_session,
    ecall_transitions,
    is_emergency_trigger,
    msds,
    real_io_allowance,
)
from hil.outcome import Outcome, bounds_text, duration, number
from tcu.errors import ConfigError
from tcu.vehicle.geo import distance_m

if TYPE_CHECKING:
    from hil.expectations import Evidence

# stage → the state the eCall enters (tcu.ecall.state_machine.EcallState), in the order of a call.
STAGES = {
    "dial": "dialling",
    "answered": "call_established",
    "msd_acknowledged": "msd_acknowledged",
    "voice": "voice",
    "cleared": "cleared",
}
TIMING_KEYS = frozenset({f"{stage}_{bound}_ms" for stage in STAGES for bound in ("min", "max")})
_TIMER_FALLBACKS = ("T5:", "T6:", "T7:")  # tcu.ecall.state_machine: the MSD phase gave up waiting
_MS_SLACK = 1  # the vehicle stamps transitions in whole milliseconds
# ecall_cleared_by_t2's default tolerance: 5 s, or REAL_IO_S of real time at the run's scale if more.
T2_TOLERANCE_S = 5.0


def _bounds(args: dict[str, Any], stage: str) -> tuple[float | None, float | None]:
    return number(args, f"{stage}_min_ms"), number(args, f"{stage}_max_ms")


def _bound_text(low: float | None, high: float | None) -> str:
    return bounds_text(low, high, "ms", ".0f")


def msd_at_psap(evidence: Evidence, since: float) -> tuple[float, str] | None:
    """When the PSAP decoded the vehicle's first emergency MSD at or after scenario second `since`, and
    which call it came in: what shows a crash or sos step at the backend (hil.latency_checks)."""
    to_scenario = axis(evidence)
    for row in msds(evidence):
        received = to_scenario(stored_moment(int(row["received_ms"])))
        if row["kind"] != "test" and received >= since:
            return received, f"MSD of call {row['call_id']} at the PSAP"
    return None


def ecall_timings(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """Milliseconds from the trigger to each stage (first entry into its state), against its limits."""
    if not any(key in args for key in TIMING_KEYS):
        raise ConfigError(f"needs at least one limit: {', '.join(sorted(TIMING_KEYS))}")
    session = args.get("session")
    if session is not None and (isinstance(session, bool) or not isinstance(session, int)):
        raise ConfigError(f"session = {session!r}: expected a session number")
    bodies = ecall_session(ecall_transitions(evidence), session)
    trigger = next((b for b in bodies if b.get("to") == "triggered"), None)
    if trigger is None:
        which = "the first emergency session" if session is None else f"session {session}"
        return Outcome(
            passed=False,
            detail=f"no eCall trigger of {which} at the backend ({len(bodies)} transitions)",
            measured="no trigger",
            limit=", ".join(
                f"{stage} {_bound_text(*_bounds(args, stage))}" for stage in STAGES if any(_bounds(args, stage))
            ),
        )
    started = int(trigger.get("session_started_ms", trigger["at_ms"]))
    measured, limits, failures = [], [], []
    for stage, state in STAGES.items():
        entry = next((b for b in bodies if b.get("to") == state), None)
        elapsed = None if entry is None else int(entry["at_ms"]) - started
        measured.append(f"{stage} {'never' if elapsed is None else f'{elapsed} ms'}")
        low, high = _bounds(args, stage)
        if low is None and high is None:
            continue
        limits.append(f"{stage} {_bound_text(low, high)}")
        if elapsed is None:
            failures.append(f"{stage} never reached")
        elif (low is not None and elapsed < low) or (high is not None and elapsed > high):
            failures.append(f"{stage} {elapsed} ms outside {_bound_text(low, high)}")
    session_text = f"eCall session {trigger.get('session')} ({trigger.get('call_type')}, {trigger.get('reason')})"
    detail = f"{session_text}: from the trigger {', '.join(measured)}"
    return Outcome.unless(failures, detail, measured=", ".join(measured), limit=", ".join(limits))


def _trigger_time(evidence: Evidence) -> tuple[float, str] | None:
    """Scenario second of the emergency's trigger: the crash or sos step, else the trigger record."""
    step = next((step for step in evidence.steps if step.do in ("crash", "sos")), None)
    if step is not None:
        return step.at, f"the {step.do} step at {step.at:g} s"
    trigger = next((b for b in ecall_transitions(evidence) if is_emergency_trigger(b)), None)
    if trigger is None:
        return None
    at = axis(evidence)(stored_moment(int(trigger["at_ms"])))
    return at, f"the eCall trigger at {at:.2f} s ({trigger.get('reason')})"


def msd_received(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """The PSAP decoded an MSD with this VIN, within `within_m` of the drive's position at the trigger."""
    within = number(args, "within_m", 200.0)
    assert within is not None
    limit = f"<= {within:.0f} m"
    if evidence.backend.psap is None:
        return Outcome(passed=False, detail="this backend runs no PSAP stub ([psap] port)", limit=limit)
    received = [row for row in msds(evidence) if row["kind"] != "test"]
    if not received:
        return Outcome(passed=False, detail=f"the PSAP decoded no MSD with VIN {evidence.vin}", limit=limit)
    first = received[0]
    name = f"MSD #{first['message_identifier']} from {first['vin']}"
    trigger = _trigger_time(evidence)
    if trigger is None:
        return Outcome(
            passed=False,
            detail=f"{name}, but no crash or sos step and no eCall trigger record to place it",
            limit=limit,
        )
    if evidence.position_at is None:
        return Outcome(passed=False, detail=f"{name}, but the bench knows no drive position to compare", limit=limit)
    expected = evidence.position_at(trigger[0])
    if expected is None:
        return Outcome(passed=False, detail=f"{name}, but the drive has no position at {trigger[1]}", limit=limit)
    if first["latitude_deg"] is None or first["longitude_deg"] is None:
        return Outcome(passed=False, detail=f"{name} carries no position (drive at {trigger[1]})", limit=limit)
    off = distance_m(expected, (first["latitude_deg"], first["longitude_deg"]))
    return Outcome(
        passed=off <= within,
        detail=f"{name} at {first['latitude_deg']:.5f},{first['longitude_deg']:.5f}: {off:.0f} m from the drive's "
        f"position {expected[0]:.5f},{expected[1]:.5f} at {trigger[1]} (limit {within:.0f} m), "
        f"position trusted: {bool(first['position_trusted'])}",
        measured=f"{off:.0f} m",
        limit=limit,
    )


# -- ecall_cleared_by_t2 ---------------------------------------------------------------------------


def _psap_side(evidence: Evidence, t2_s: float, tolerance: float) -> tuple[str, str | None]:
    """What the PSAP saw of the first emergency call: a description, and what is wrong with it (or None).
    Its clock is the backend's and its stamps include the network, so it gets the tolerance both ways."""
    psap = evidence.backend.psap
    call = None if psap is None else next((c for c in psap.calls if c.kind in ("automatic", "manual")), None)
    if call is None:
        return "no PSAP call", "the PSAP took no emergency call"
    connected = call.at("connected")
    ended = next((t for t, name in call.timeline if name.startswith("ended by")), None)
    if connected is None or ended is None:
        text = f"PSAP call {call.id} {'never answered' if connected is None else 'not ended'}"
        return text, text
    text = f"PSAP call {call.id} ended by {call.ended_by} {ended - connected:.1f} s after it answered"
    if call.ended_by != "ivs":
        return text, f"{text}: the vehicle should have hung up"
    if not t2_s - tolerance <= ended - connected <= t2_s + tolerance:
        return text, f"{text}: not at T2"
    return text, None


def ecall_cleared_by_t2(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """The first emergency call ended by the vehicle's T2 clear-down `t2_s` after the PSAP answered."""
    t2_s = duration(args, "t2_s", 3600.0)
    tolerance = duration(args, "tolerance_s", real_io_allowance(evidence, T2_TOLERANCE_S))
    assert t2_s is not None
    assert tolerance is not None
    limit = f"T2 clear-down {t2_s:g}..{t2_s + tolerance:g} s after the PSAP answered"
    bodies = ecall_session(ecall_transitions(evidence))
    if not bodies:
        return Outcome(passed=False, detail="no emergency eCall at the backend", measured="no call", limit=limit)
    failures = []
    dials = sum(1 for b in bodies if b.get("to") == "dialling")
    if dials != 1:
        failures.append(f"{dials} dial attempts, expected 1")
    established = next((b for b in bodies if b.get("to") == "call_established"), None)
    if established is None:
        return Outcome(passed=False, detail="the eCall never connected", measured="not connected", limit=limit)
    after = [b for b in bodies if int(b["at_ms"]) >= int(established["at_ms"])]
    if not any(b.get("to") == "msd_acknowledged" for b in after):
        failures.append("the MSD was never acknowledged")
    failures += [f"{b.get('from')} → {b.get('to')}: {b.get('reason')}" for b in after if b.get("to") == "triggered"]
    failures += [f"fallback {b.get('reason')}" for b in after if str(b.get("reason", "")).startswith(_TIMER_FALLBACKS)]
    cleared = next((b for b in after if b.get("to") == "cleared"), None)
    if cleared is None:
        failures.append("the call was never cleared")
        vehicle_s = None
    else:
        vehicle_s = (int(cleared["at_ms"]) - int(established["at_ms"])) / 1000
        if not str(cleared.get("reason", "")).startswith("T2"):
            failures.append(f"cleared by {cleared.get('reason')!r}, not by T2")
        if not t2_s - _MS_SLACK / 1000 <= vehicle_s <= t2_s + tolerance:
            failures.append(f"cleared {vehicle_s:.3f} s after the PSAP answered")
    psap_text, psap_problem = _psap_side(evidence, t2_s, tolerance)
    if psap_problem is not None:
        failures.append(psap_problem)
    vehicle_text = "never cleared" if vehicle_s is None else f"cleared {vehicle_s:.3f} s after the PSAP answered"
    detail = f"eCall session {bodies[0].get('session')}: {dials} dial(s), {vehicle_text} (vehicle); {psap_text}"
    measured = "never" if vehicle_s is None else f"{vehicle_s:.3f} s"
    return Outcome.unless(failures, detail, measured=measured, limit=limit)


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], Outcome]] = {
    "ecall_timings": ecall_timings,
    "msd_received": msd_received,
    "ecall_cleared_by_t2": ecall_cleared_by_t2,
}
