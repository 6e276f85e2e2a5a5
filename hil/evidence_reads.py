"""What several checks read from a run's evidence the same way: the scenario's time axis, the PSAP's
MSDs of the vehicle, its eCall transitions and sessions, its capability reports and a service's state
in one, and the allowance a check makes for real I/O on a bench that runs faster than real time.

One reading each, so two checks can never disagree about what the backend holds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backend_stub.psap import read_psap_msds
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from backend_stub.app import BackendStub
    from hil.expectations import Evidence

SERVICE_STATES = ("running", "suspended", "partly suspended", "off")
# What a loaded bench may stall real I/O for (a pty, the broker, a process's scheduling), in real
# seconds: at time_scale 4 one virtual second, at 100 twenty-five. Mosquitto, the kernel and the
# processes keep real time (tcu.virtual_time), so a tolerance for their delays scales with the bench.
REAL_IO_S = 0.25


def axis(evidence: Evidence) -> Callable[[datetime], float]:
    """Wall time (a vehicle's or the backend's stamp) → scenario seconds."""
    if evidence.scenario_seconds is None:
        raise ConfigError("the runner gave no scenario time axis (Evidence.scenario_seconds)")
    return evidence.scenario_seconds


def real_io_allowance(evidence: Evidence, floor_s: float, real_s: float = REAL_IO_S) -> float:
    """`floor_s` scenario seconds, or `real_s` of real time at the run's scale if that is more."""
    return max(floor_s, real_s * evidence.time_scale)


def vehicle_msds(backend: BackendStub, vin: str) -> list[dict[str, Any]]:
    """The MSDs the backend's PSAP decoded from `vin`, oldest first (none without a PSAP)."""
    if backend.psap is None:
        return []
    return [row for row in read_psap_msds(backend.config.database) if row["vin"] == vin]


def msds(evidence: Evidence) -> list[dict[str, Any]]:
    return vehicle_msds(evidence.backend, evidence.vin)


def ecall_transitions(evidence: Evidence) -> list[dict[str, Any]]:
    """The vehicle's eCall transition records (tcu.ecall.call_report) with a valid `at_ms`, as received."""
    bodies = [record.body for record in evidence.backend.store.records(evidence.vin, kind="ecall")]
    return [
        body
        for body in bodies
        if body.get("event") == "transition"
        and isinstance(body.get("at_ms"), int)
        and not isinstance(body["at_ms"], bool)
    ]


def is_emergency_trigger(body: dict[str, Any]) -> bool:
    return body.get("to") == "triggered" and body.get("call_type") != "test"


def ecall_session(transitions: list[dict[str, Any]], wanted: int | None = None) -> list[dict[str, Any]]:
    """The transitions of session `wanted`, or of the first emergency (non-test) session, in time order."""
    if wanted is None:
        first = next((b for b in transitions if is_emergency_trigger(b)), None)
        if first is None:
            return []
        wanted = first.get("session")
    return sorted((b for b in transitions if b.get("session") == wanted), key=lambda b: int(b["at_ms"]))


def capability_reports(evidence: Evidence) -> list[tuple[datetime, dict[str, Any]]]:
    """(created, body) of the vehicle's capability reports, in the order the backend stored them."""
    records = evidence.backend.store.records(evidence.vin, kind="event")
    return [(r.created, dict(r.body)) for r in records if r.body.get("type") == "capabilities"]


def service_state(report: dict[str, Any], service: str) -> str:
    """One of SERVICE_STATES: `partly suspended` is a code whose fixed-term services are suspended and
    whose unlimited ones run (612 in payment default)."""
    running, suspended = service in report.get("running", []), service in report.get("suspended", [])
    if running and suspended:
        return "partly suspended"
    if running:
        return "running"
    return "suspended" if suspended else "off"
