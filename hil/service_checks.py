"""Checks of the services the vehicle says it runs, from its capability reports: at the end, at a
moment of the scenario, as a history, and at the moment of an eCall.

A code's state in one report is `running`, `suspended` (all its services), `partly suspended` (its
fixed-term services suspended, its unlimited ones running: 612 in payment default) or `off`
(hil.evidence_reads.service_state).

- `service_active` / `service_inactive`: the code in the last report's `running` list, or not.
- `service_at`: the code's state in the last report made at or before scenario second `at` (after an
  `advance_calendar` step, the report's wall time is placed in the calendar period it belongs to): a
  term that ends on the right day, not merely at some point.
- `service_history`: the code's states over all reports, in order, repeats collapsed;
  `intelligent_call_history` the same for the call to the call centre (`available` / `off`).
- `msd_while_suspended`: the PSAP received the eCall's MSD while the vehicle's last report before it
  had the code (partly) suspended — legal eCall works in payment default (AGB 5.5 c, hil.billing).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hil.evidence_reads import SERVICE_STATES, axis, capability_reports, msds, service_state
from hil.outcome import Outcome, duration
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from hil.expectations import Evidence

Check = Callable[["Evidence", dict[str, Any]], tuple[bool, str] | Outcome]


def _service(active: bool) -> Check:
    def check(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
        reports = capability_reports(evidence)
        if not reports:
            return False, "the vehicle sent no capability report"
        report = reports[-1][1]
        running = list(report.get("running", []))
        ok = (args["service"] in running) is active
        return (
            ok,
            f"last capability report (provisioning version {report.get('provisioning_version')}): running {running}",
        )

    return check


def service_at(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """The option code's state in the vehicle's last capability report made at or before scenario second `at`."""
    service, wanted = str(args["service"]), str(args["state"])
    if wanted not in SERVICE_STATES:
        raise ConfigError(f"state = {wanted!r}: expected one of {', '.join(SERVICE_STATES)}")
    at = duration(args, "at")
    if at is None:
        raise ConfigError("needs at = the scenario second to look at")
    to_scenario = axis(evidence)
    reports = [(to_scenario(created), created, report) for created, report in capability_reports(evidence)]
    before = [report for report in reports if report[0] <= at]
    limit = f"{wanted} at {at:g} s"
    if not before:
        return Outcome(
            passed=False,
            detail=f"no capability report made by {at:g} s ({len(reports)} in all)",
            measured="no report",
            limit=limit,
        )
    t, created, report = before[-1]
    state = service_state(report, service)
    detail = (
        f"{service} {state} in the report made at {t:.1f} s, dated {created.date().isoformat()} "
        f"(provisioning version {report.get('provisioning_version')})"
    )
    return Outcome(passed=state == wanted, detail=detail, measured=state, limit=limit)


def _collapsed(states: list[str]) -> list[str]:
    history: list[str] = []
    for state in states:
        if not history or history[-1] != state:
            history.append(state)
    return history


def service_history(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    service = str(args["service"])
    history = _collapsed([service_state(report, service) for _, report in capability_reports(evidence)])
    wanted = [str(s) for s in args["states"]]
    return history == wanted, f"{service} in the capability reports: {' → '.join(history) or 'no report'}"


def intelligent_call_history(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    states = ["available" if report.get("intelligent_ecall") else "off" for _, report in capability_reports(evidence)]
    history = _collapsed(states)
    wanted = [str(s) for s in args["states"]]
    return history == wanted, f"intelligent call in the capability reports: {' → '.join(history) or 'no report'}"


def msd_while_suspended(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    service = str(args["service"])
    received = msds(evidence)
    if not received:
        return False, f"the PSAP decoded no MSD with VIN {evidence.vin}"
    at = datetime.fromtimestamp(received[0]["received_ms"] / 1000, UTC)
    before = [report for created, report in capability_reports(evidence) if created <= at]
    if not before:
        return False, f"no capability report before the MSD at {at.isoformat(timespec='seconds')}"
    state = service_state(before[-1], service)
    return state in ("suspended", "partly suspended"), (
        f"MSD at the PSAP at {at.isoformat(timespec='seconds')}; the vehicle's last report before it had {service} "
        f"{state} (payment default: {'yes' if before[-1].get('suspended') else 'no'})"
    )


CHECKS: dict[str, Check] = {
    "service_active": _service(True),
    "service_inactive": _service(False),
    "service_at": service_at,
    "service_history": service_history,
    "intelligent_call_history": intelligent_call_history,
    "msd_while_suspended": msd_while_suspended,
}
