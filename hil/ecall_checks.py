"""Precise checks of the eCall: its timings from the trigger, and the MSD's position against the drive's.

The timings come from the `ecall` records (`tcu.ecall.call_report.CallReport.body`): each transition
carries the vehicle's `at_ms` and its session's `session_started_ms` (the trigger), so a stage's time is
measured on the vehicle's clock, not by when the record reached the backend (the telematics uplink keeps
off the radio until the AL-ACK). The MSD's position is compared with where the drive was at the trigger:
the crash or sos step, or, when no step caused the call, the trigger record's own time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backend_stub.psap import read_psap_msds
from backend_stub.storable import stored_moment
from hil.outcome import Outcome, number
from hil.signal_checks import axis
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


def msds(evidence: Evidence) -> list[dict[str, Any]]:
    """The MSDs the backend's PSAP decoded from this vehicle, oldest first."""
    if evidence.backend.psap is None:
        return []
    return [row for row in read_psap_msds(evidence.backend.config.database) if row["vin"] == evidence.vin]


def _transitions(evidence: Evidence) -> list[dict[str, Any]]:
    bodies = [record.body for record in evidence.backend.store.records(evidence.vin, kind="ecall")]
    return [
        body
        for body in bodies
        if body.get("event") == "transition"
        and isinstance(body.get("at_ms"), int)
        and not isinstance(body["at_ms"], bool)
    ]


def _session(transitions: list[dict[str, Any]], wanted: int | None) -> list[dict[str, Any]]:
    """The transitions of session `wanted`, or of the first emergency (non-test) session."""
    if wanted is None:
        emergency = [b for b in transitions if b.get("to") == "triggered" and b.get("call_type") != "test"]
        if not emergency:
            return []
        wanted = emergency[0].get("session")
    return sorted((b for b in transitions if b.get("session") == wanted), key=lambda b: int(b["at_ms"]))


def _bounds(args: dict[str, Any], stage: str) -> tuple[float | None, float | None]:
    return number(args, f"{stage}_min_ms"), number(args, f"{stage}_max_ms")


def _bound_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:.0f}..{high:.0f} ms"
    return f"<= {high:.0f} ms" if high is not None else f">= {low:.0f} ms"


def ecall_timings(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """Milliseconds from the trigger to each stage (first entry into its state), against its limits."""
    if not any(key in args for key in TIMING_KEYS):
        raise ConfigError(f"needs at least one limit: {', '.join(sorted(TIMING_KEYS))}")
    session = args.get("session")
    if session is not None and (isinstance(session, bool) or not isinstance(session, int)):
        raise ConfigError(f"session = {session!r}: expected a session number")
    bodies = _session(_transitions(evidence), session)
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
    if failures:
        detail += f"; {'; '.join(failures)}"
    return Outcome(passed=not failures, detail=detail, measured=", ".join(measured), limit=", ".join(limits))


def _trigger_time(evidence: Evidence) -> tuple[float, str] | None:
    """Scenario second of the emergency's trigger: the crash or sos step, else the trigger record."""
    step = next((step for step in evidence.steps if step.do in ("crash", "sos")), None)
    if step is not None:
        return step.at, f"the {step.do} step at {step.at:g} s"
    trigger = next(
        (b for b in _transitions(evidence) if b.get("to") == "triggered" and b.get("call_type") != "test"), None
    )
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


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], Outcome]] = {
    "ecall_timings": ecall_timings,
    "msd_received": msd_received,
}
