"""Checking a scenario's expectations against what the backend ended up with.

Each check returns a precise detail either way — what was expected and what was found — so a
failing CI run says what to look at without opening the bench folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backend_stub.app import BackendStub
from backend_stub.measure_store import SUCCEEDED, MeasureStore
from hil.scenario import Expectation, Scenario
from hil.timeline import Event, ExpectationResult


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    vin: str
    backend: BackendStub
    next_seq: int  # the vehicle queue's next sequence number at the end
    queued: int  # records still in the vehicle's queue at the end
    events: Sequence[Event]


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
    store = MeasureStore(evidence.backend.config.database)
    try:
        measure = store.get(str(args["id"]))
        history = store.history(str(args["id"]))
    finally:
        store.close()
    if measure is None:
        return False, f"no measure {args['id']} at the backend"
    attempts = "; ".join(f"#{a.attempt} {a.status}{' (' + a.code + ')' if a.code else ''}" for a in history)
    ok = measure.state == SUCCEEDED and len(history) >= int(args.get("min_attempts", 1))
    return ok, f"state {measure.state} after attempts: {attempts or 'none'}"


def _msd_received(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    return False, "the PSAP stub is not wired into this backend yet"


def _ecall_before_measure_result(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    return False, "the PSAP stub is not wired into this backend yet"


CHECK_TABLE: dict[str, Check] = {
    "records_without_gaps": _records_without_gaps,
    "signal_reported": _signal_reported,
    "no_rejections": _no_rejections,
    "service_active": _service(True),
    "service_inactive": _service(False),
    "measure_succeeded": _measure_succeeded,
    "msd_received": _msd_received,
    "ecall_before_measure_result": _ecall_before_measure_result,
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
