"""Checking a scenario's expectations against what the backend ended up with.

Each check returns a precise detail either way — what was expected and what was found — so a
failing CI run says what to look at without opening the bench folder. The precise checks (a value, a
range, an edge, a latency: hil.signal_checks; eCall timings and the MSD's position: hil.ecall_checks)
also return the measured value and its limit (`hil.outcome.Outcome`), which the report shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend_stub.app import BackendStub
from backend_stub.measure_store import SUCCEEDED
from hil.audit import audit_vehicle
from hil.billing import CHECKS as BILLING_CHECKS
from hil.ecall_checks import CHECKS as ECALL_CHECKS
from hil.ecall_checks import msds
from hil.horizon_checks import CHECKS as HORIZON_CHECKS
from hil.outcome import Outcome
from hil.ownership import CHECKS as OWNERSHIP_CHECKS
from hil.scenario import Expectation, Scenario, Step
from hil.signal_checks import CHECKS as SIGNAL_CHECKS
from hil.timeline import Event, ExpectationResult
from tcu.errors import ConfigError

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    vin: str
    backend: BackendStub
    next_seq: int  # the vehicle queue's next sequence number at the end
    queued: int  # records still in the vehicle's queue at the end
    events: Sequence[Event]
    steps: Sequence[Step] = ()  # the scenario's steps, each `at` in scenario seconds
    # A wall time stamped by the agent or the backend on the scenario's axis (ScenarioRunner.scenario_seconds).
    scenario_seconds: Callable[[datetime], float] | None = None
    # Where the drive was (latitude, longitude) at a scenario second: what the GNSS device reported.
    position_at: Callable[[float], tuple[float, float] | None] | None = None
    personal_path: Path | None = None  # the car's personal data file (hil.ownership)


Check = Callable[[Evidence, dict[str, Any]], tuple[bool, str] | Outcome]


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


def _signal_reported(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """Some value exists: a smoke check; signal_value/signal_edge check what it was and when."""
    values = {v.path: v for v in evidence.backend.store.last_values(evidence.vin)}
    found = values.get(str(args["path"]))
    if found is None:
        detail = f"no value of {args['path']} at the backend ({len(values)} other signals)"
        return Outcome(passed=False, detail=detail, measured="none", limit="a value")
    detail = f"last value {found.value!r} at {found.timestamp.isoformat(timespec='seconds')}"
    return Outcome(passed=True, detail=detail, measured=repr(found.value), limit="a value")


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


def _ecall_before_measure_result(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    """The MSD reached the PSAP before the backend heard that the measure rolled back for the eCall."""
    measure_id = str(args["id"])
    received = msds(evidence)
    rollbacks = [
        record
        for record in evidence.backend.store.records(evidence.vin, kind="event")
        if record.body.get("type") == "measure_result"
        and record.body.get("measure_id") == measure_id
        and record.body.get("code") == "ecall"
        and record.body.get("status") == "rolled_back"
    ]
    if not received or not rollbacks:
        return False, f"MSDs at the PSAP: {len(received)}; rollbacks of {measure_id} for the eCall: {len(rollbacks)}"
    msd_at = datetime.fromtimestamp(received[0]["received_ms"] / 1000, UTC)
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
    "ecall_before_measure_result": _ecall_before_measure_result,
    **SIGNAL_CHECKS,
    **ECALL_CHECKS,
    **BILLING_CHECKS,
    **OWNERSHIP_CHECKS,
    **HORIZON_CHECKS,
}


def evaluate(scenario: Scenario, evidence: Evidence) -> list[ExpectationResult]:
    results = []
    for expectation in scenario.expectations:
        results.append(_one(expectation, evidence))
    return results


def _one(expectation: Expectation, evidence: Evidence) -> ExpectationResult:
    try:
        answer = CHECK_TABLE[expectation.check](evidence, expectation.args)
    except ConfigError as exc:  # the scenario's arguments: said, no traceback
        _LOGGER.error("check %s cannot run: %s", expectation.name, exc)
        answer = Outcome(passed=False, detail=f"check failed to run: {exc}")
    except Exception as exc:  # a check that cannot run is a failed check with its reason
        _LOGGER.exception("check %s failed to run", expectation.name)
        answer = Outcome(passed=False, detail=f"check failed to run: {type(exc).__name__}: {exc}")
    if not isinstance(answer, Outcome):
        answer = Outcome(passed=answer[0], detail=answer[1])
    return ExpectationResult(
        name=expectation.name,
        passed=answer.passed,
        detail=answer.detail,
        measured=answer.measured,
        limit=answer.limit,
    )
