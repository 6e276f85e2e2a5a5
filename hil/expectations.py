"""Checking a scenario's expectations against what the backend ended up with.

Each check returns a precise detail either way — what was expected and what was found — so a
failing CI run says what to look at without opening the bench folder. The precise checks also return
the measured value and its limit (`hil.outcome.Outcome`), which the report shows.

Here: the records themselves (none missing, none refused). By concept, elsewhere: a signal's value,
range and edge (hil.signal_checks); latencies (hil.latency_checks); the eCall's timings, its MSD and
its T2 clear-down (hil.ecall_checks); the services in the capability reports (hil.service_checks);
remote measures (hil.measure_checks); owners and personal data (hil.ownership).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from backend_stub.app import BackendStub
from hil.audit import audit_vehicle
from hil.ecall_checks import CHECKS as ECALL_CHECKS
from hil.latency_checks import CHECKS as LATENCY_CHECKS
from hil.measure_checks import CHECKS as MEASURE_CHECKS
from hil.ng_ecall_checks import CHECKS as NG_ECALL_CHECKS
from hil.outcome import Outcome
from hil.ownership import CHECKS as OWNERSHIP_CHECKS
from hil.scenario import Expectation, Scenario, Step
from hil.service_checks import CHECKS as SERVICE_CHECKS
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
    # Virtual seconds per real second of the run: a check's tolerance for real I/O (a pty, the broker, a
    # process starting) is that many times larger in scenario seconds (hil.evidence_reads.REAL_IO_S).
    time_scale: float = 1.0


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


def _no_rejections(evidence: Evidence, _args: dict[str, Any]) -> tuple[bool, str]:
    rejections = evidence.backend.store.rejections(evidence.vin)
    if not rejections:
        return True, "the backend refused nothing"
    return False, f"{len(rejections)} refused, first: {rejections[0].reason}"


CHECK_TABLE: dict[str, Check] = {
    "records_without_gaps": _records_without_gaps,
    "records_accounted": _records_accounted,
    "no_rejections": _no_rejections,
    **SIGNAL_CHECKS,
    **LATENCY_CHECKS,
    **ECALL_CHECKS,
    **SERVICE_CHECKS,
    **MEASURE_CHECKS,
    **OWNERSHIP_CHECKS,
    **NG_ECALL_CHECKS,
}


def evaluate(scenario: Scenario, evidence: Evidence) -> list[ExpectationResult]:
    results = []
    for expectation in scenario.expectations:
        results.append(_one(expectation, evidence))
    return results


def _one(expectation: Expectation, evidence: Evidence) -> ExpectationResult:
    errored = False
    try:
        answer = CHECK_TABLE[expectation.check](evidence, expectation.args)
    except ConfigError as exc:  # the scenario's arguments: said, no traceback
        _LOGGER.error("check %s cannot run: %s", expectation.name, exc)
        answer, errored = Outcome(passed=False, detail=f"check failed to run: {exc}"), True
    except Exception as exc:  # a check that cannot run is a failed check with its reason
        _LOGGER.exception("check %s failed to run", expectation.name)
        answer, errored = Outcome(passed=False, detail=f"check failed to run: {type(exc).__name__}: {exc}"), True
    if not isinstance(answer, Outcome):
        answer = Outcome(passed=answer[0], detail=answer[1])
    return ExpectationResult(
        name=expectation.name,
        passed=answer.passed,
        detail=answer.detail,
        measured=answer.measured,
        limit=answer.limit,
        errored=errored,
    )
