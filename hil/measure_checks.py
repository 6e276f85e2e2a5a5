"""Checks of remote measures (AGB 3.4 d): a measure succeeded, one attempt's status, code and real
duration, and an eCall that rolled a measure back reaching the PSAP first.

`measure_attempt` measures what a shortcut would get wrong, on two clocks: one attempt as the backend
recorded it — its status and code, the seconds the vehicle says it impaired services (`impaired.seconds`
of its `measure_result`), and the span between the backend sending the attempt and receiving its answer,
on the backend's own clock. An attempt whose steps finished at once, or a vehicle that reported a
duration it did not spend, fails `min_s`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backend_stub.measure_store import MeasureState
from hil.evidence_reads import msds
from hil.outcome import Outcome, bounds_text, duration
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from backend_stub.measure_store import Attempt
    from hil.expectations import Evidence


def _attempt_number(args: dict[str, Any]) -> int | None:
    value = args.get("attempt")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"attempt = {value!r}: expected an attempt number from 1")
    return value


def _describe(attempt: Attempt) -> str:
    return f"#{attempt.attempt} {attempt.status}{f' ({attempt.code})' if attempt.code else ''}"


def measure_attempt(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """One attempt (default the last) of measure `id`: status, code, and its duration within min_s..max_s."""
    measure_id = str(args["id"])
    wanted = _attempt_number(args)
    low, high = duration(args, "min_s"), duration(args, "max_s")
    limit = bounds_text(low, high, "s")
    history = evidence.backend.measure_store.history(measure_id)
    attempt = (
        (history[-1] if history else None)
        if wanted is None
        else next((a for a in history if a.attempt == wanted), None)
    )
    if attempt is None:
        which = "any attempt" if wanted is None else f"attempt {wanted}"
        seen = ", ".join(_describe(a) for a in history) or "none"
        return Outcome(passed=False, detail=f"measure {measure_id}: no {which} (attempts: {seen})", limit=limit)
    failures = []
    for key, found in (("status", attempt.status), ("code", attempt.code)):
        if key in args and str(args[key]) != found:
            failures.append(f"{key} {found!r}, expected {args[key]!r}")
    impaired = attempt.impaired_s
    span = None if attempt.ended is None else (attempt.ended - attempt.sent).total_seconds()
    if impaired is None or span is None:
        failures.append("the vehicle reported no duration" if span is not None else "no answer from the vehicle")
    else:
        if (low is not None and impaired < low) or (high is not None and impaired > high):
            failures.append(f"the vehicle impaired services for {impaired:g} s, outside {limit}")
        # The backend sent the order before the vehicle started and received the answer after it ended:
        # on its clock at least as much time passed, or the vehicle's figure is not what happened.
        if span < impaired or (low is not None and span < low):
            failures.append(f"the backend saw only {span:.3f} s between sending and the answer")
    spent = "no duration" if impaired is None else f"impaired {impaired:g} s"
    seen = "no answer" if span is None else f"{span:.3f} s from sending to the answer at the backend"
    detail = f"measure {measure_id} attempt {_describe(attempt)}: {spent} (vehicle), {seen}"
    measured = "none" if impaired is None else f"{impaired:g} s"
    return Outcome.unless(failures, detail, measured=measured, limit=limit)


def measure_succeeded(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    store = evidence.backend.measure_store
    measure = store.get(str(args["id"]))
    history = store.history(str(args["id"]))
    if measure is None:
        return False, f"no measure {args['id']} at the backend"
    attempts = "; ".join(_describe(a) for a in history)
    ok = measure.state == MeasureState.SUCCEEDED and len(history) >= int(args.get("min_attempts", 1))
    return ok, f"state {measure.state} after attempts: {attempts or 'none'}"


def ecall_before_measure_result(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
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


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], tuple[bool, str] | Outcome]] = {
    "measure_succeeded": measure_succeeded,
    "ecall_before_measure_result": ecall_before_measure_result,
    "measure_attempt": measure_attempt,
}
