"""Checking a scenario's expectations against what the backend ended up with.

Each check returns a precise detail either way — what was expected and what was found — so a
failing CI run says what to look at without opening the bench folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend_stub.app import BackendStub
from backend_stub.measure_store import SUCCEEDED
from backend_stub.psap import read_psap_msds
from hil.audit import audit_vehicle
from hil.billing import CHECKS as BILLING_CHECKS
from hil.ownership import CHECKS as OWNERSHIP_CHECKS
from hil.scenario import Expectation, Scenario
from hil.timeline import Event, ExpectationResult
from tcu.vehicle.geo import distance_m


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    vin: str
    backend: BackendStub
    next_seq: int  # the vehicle queue's next sequence number at the end
    queued: int  # records still in the vehicle's queue at the end
    events: Sequence[Event]
    crash_position: tuple[float, float] | None = None  # where the drive was when the crash step ran
    personal_path: Path | None = None  # the car's personal data file (hil.ownership)


Check = Callable[[Evidence, dict[str, Any]], tuple[bool, str]]


def _records_without_gaps(evidence: Evidence, _args: dict[str, Any]) -> tuple[bool, str]:
    stored = evidence.backend.store.seqs(evidence.vin)
    expected = evidence.next_seq - 1
    gaps = evidence.backend.store.gaps(evidence.vin)
    ok = stored == list(range(1, evidence.next_seq)) and evidence.queued == 0
    return (
        ok,
        f"vehicle produced {expected}, backend stored {len(stored)} exactly once; gaps {gaps or 'none'}; "
        f"left in the vehicle's queue {evidence.queued}",
    )


def _records_accounted(evidence: Evidence, _args: dict[str, Any]) -> tuple[bool, str]:
    """Stored exactly once, or named as dropped by the vehicle's own queue_overflow event: what a full
    disk may force out of the queue (docs/protocol.md), and nothing else (hil.audit)."""
    audit = audit_vehicle(evidence.backend.store, evidence.vin, issued_through=evidence.next_seq - 1)
    ok = audit.ok and evidence.queued == 0
    return ok, f"{audit.describe()}; left in the vehicle's queue {evidence.queued}"


def _signal_reported(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    values = {v.path: v for v in evidence.backend.store.last_values(evidence.vin)}
    found = values.get(str(args["path"]))
    if found is None:
        return False, f"no value of {args['path']} at the backend ({len(values)} other signals)"
    return True, f"last value {found.value!r} at {found.timestamp.isoformat(timespec='seconds')}"


def _no_rejections(evidence: Evidence, _args: dict[str, Any]) -> tuple[bool, str]:
    rejections = evidence.backend.store.rejections(evidence.vin)
    if not rejections:
        return True, "the backend refused nothing"
    return False, f"{len(rejections)} refused, first: {rejections[0].reason}"


def _last_capabilities(evidence: Evidence) -> dict[str, Any] | None:
    reports = [
        r.body
        for r in evidence.backend.store.records(evidence.vin, kind="event")
        if r.body.get("type") == "capabilities"
    ]
    return reports[-1] if reports else None


def _service(active: bool) -> Check:
    def check(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
        report = _last_capabilities(evidence)
        if report is None:
            return False, "the vehicle sent no capability report"
        running = list(report.get("running", []))
        ok = (args["service"] in running) is active
        return (
            ok,
            f"last capability report (provisioning version {report.get('provisioning_version')}): running {running}",
        )

    return check


def _measure_succeeded(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    store = evidence.backend.measure_store
    measure = store.get(str(args["id"]))
    history = store.history(str(args["id"]))
    if measure is None:
        return False, f"no measure {args['id']} at the backend"
    attempts = "; ".join(f"#{a.attempt} {a.status}{' (' + a.code + ')' if a.code else ''}" for a in history)
    ok = measure.state == SUCCEEDED and len(history) >= int(args.get("min_attempts", 1))
    return ok, f"state {measure.state} after attempts: {attempts or 'none'}"


def _msds(evidence: Evidence) -> list[dict[str, Any]]:
    if evidence.backend.psap is None:
        return []
    return [row for row in read_psap_msds(evidence.backend.config.database) if row["vin"] == evidence.vin]


def _msd_received(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    if evidence.backend.psap is None:
        return False, "this backend runs no PSAP stub ([psap] port)"
    msds = [row for row in _msds(evidence) if row["kind"] != "test"]
    if not msds:
        return False, f"the PSAP decoded no MSD with VIN {evidence.vin}"
    first = msds[0]
    if evidence.crash_position is None or first["latitude_deg"] is None:
        return True, f"MSD #{first['message_identifier']} from {first['vin']} (no position to compare)"
    off = distance_m(evidence.crash_position, (first["latitude_deg"], first["longitude_deg"]))
    within = float(args.get("within_m", 200))
    return off <= within, (
        f"MSD #{first['message_identifier']} from {first['vin']} at {first['latitude_deg']:.5f},"
        f"{first['longitude_deg']:.5f}: {off:.0f} m from the crash position (limit {within:.0f} m), "
        f"position trusted: {bool(first['position_trusted'])}"
    )


def _ecall_before_measure_result(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    """The MSD reached the PSAP before the backend heard that the measure rolled back for the eCall."""
    measure_id = str(args["id"])
    msds = _msds(evidence)
    rollbacks = [
        record
        for record in evidence.backend.store.records(evidence.vin, kind="event")
        if record.body.get("type") == "measure_result"
        and record.body.get("measure_id") == measure_id
        and record.body.get("code") == "ecall"
        and record.body.get("status") == "rolled_back"
    ]
    if not msds or not rollbacks:
        return False, f"MSDs at the PSAP: {len(msds)}; rollbacks of {measure_id} for the eCall: {len(rollbacks)}"
    msd_at = datetime.fromtimestamp(msds[0]["received_ms"] / 1000, UTC)
    lead = (rollbacks[0].received - msd_at).total_seconds()
    return lead >= 0, f"MSD at the PSAP {lead:.2f} s before the backend received the measure's rollback"


CHECK_TABLE: dict[str, Check] = {
    "records_without_gaps": _records_without_gaps,
    "records_accounted": _records_accounted,
    "signal_reported": _signal_reported,
    "no_rejections": _no_rejections,
    "service_active": _service(True),
    "service_inactive": _service(False),
    "measure_succeeded": _measure_succeeded,
    "msd_received": _msd_received,
    "ecall_before_measure_result": _ecall_before_measure_result,
    **BILLING_CHECKS,
    **OWNERSHIP_CHECKS,
}


def evaluate(scenario: Scenario, evidence: Evidence) -> list[ExpectationResult]:
    results = []
    for expectation in scenario.expectations:
        results.append(_one(expectation, evidence))
    return results


def _one(expectation: Expectation, evidence: Evidence) -> ExpectationResult:
    try:
        passed, detail = CHECK_TABLE[expectation.check](evidence, expectation.args)
    except Exception as exc:  # a check that cannot run is a failed check with its reason
        passed, detail = False, f"check failed to run: {type(exc).__name__}: {exc}"
    return ExpectationResult(name=expectation.name, passed=passed, detail=detail)
