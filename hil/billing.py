"""Scenario steps and checks of invoices and payment default (AGB 5.5 c).

Steps (hil.actions.ACTION_TABLE): `invoice` has the backend invoice a booked option code with a
fixed-term (paid) service, dated `days_ago` days before today — how a scenario of seconds reaches day
31 without waiting a month: the backend's clock is not moved, the invoice is back-dated, and the
backend reconciles at once (a default begins: the suspend file naming that code); `pay` pays every
unpaid invoice of the vehicle (the resume file).

Checks (hil.expectations' CHECK_TABLE): `service_history` compares what the vehicle's capability
reports said about one option code, in order, with the expected history — `running`, `suspended`
(all its services), `partly suspended` (its fixed-term services suspended, its unlimited ones
running: 612 in payment default) or `off`; repeats collapsed; `intelligent_call_history` does the same
for whether the car's call to the call centre is available (`available` / `off`);
`msd_while_suspended` says the PSAP received the eCall's MSD while the vehicle's last report before it
had `service` (partly) suspended — legal eCall works in payment default.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from backend_stub.invoices import Billing, parse_amount
from backend_stub.psap import read_psap_msds
from hil.timeline import EventKind
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from hil.expectations import Evidence
    from hil.runner import Bench, ScenarioRunner
    from hil.scenario import Step


def _billing(bench: Bench) -> Billing:
    if bench.backend.billing is None:
        raise ConfigError("the backend has no signing key: it cannot suspend or resume a vehicle")
    return bench.backend.billing


async def invoice(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    billing, vin = _billing(bench), runner.scenario.vin
    days = int(step.args.get("days_ago", 0))
    dated = bench.backend.clock.now().date() - timedelta(days=days)
    issued = billing.issue(
        vin, str(step.args["service"]), parse_amount(str(step.args.get("amount", "9.99"))), invoiced=dated
    )
    default = billing.check(vin).in_default
    runner.event(
        EventKind.ACTION,
        f"invoice {issued.number} dated {dated}",
        f"{issued.item}, {issued.amount}; payment default: {'yes' if default else 'no'}",
    )


async def pay(runner: ScenarioRunner, bench: Bench, _step: Step) -> None:
    billing, vin = _billing(bench), runner.scenario.vin
    unpaid = [i for i in bench.backend.invoice_store.invoices(vin) if i.paid is None]
    if not unpaid:
        raise ConfigError(f"vehicle {vin} has no unpaid invoice to pay")
    for item in unpaid:
        result = billing.pay(item.number)
    runner.event(
        EventKind.ACTION,
        f"paid invoice(s) {', '.join(str(i.number) for i in unpaid)}",
        f"payment default: {'yes' if result.in_default else 'no'}",
    )


ACTIONS: dict[str, Callable[[ScenarioRunner, Bench, Step], Any]] = {"invoice": invoice, "pay": pay}


# -- checks ----------------------------------------------------------------------------------------


def _reports(evidence: Evidence) -> list[tuple[datetime, dict[str, Any]]]:
    """The vehicle's capability reports in the order it made them."""
    records = evidence.backend.store.records(evidence.vin, kind="event")
    return [(r.created, dict(r.body)) for r in records if r.body.get("type") == "capabilities"]


def _state(report: dict[str, Any], service: str) -> str:
    running, suspended = service in report.get("running", []), service in report.get("suspended", [])
    if running and suspended:
        return "partly suspended"
    if running:
        return "running"
    return "suspended" if suspended else "off"


def _collapsed(states: list[str]) -> list[str]:
    history: list[str] = []
    for state in states:
        if not history or history[-1] != state:
            history.append(state)
    return history


def _service_history(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    service = str(args["service"])
    history = _collapsed([_state(report, service) for _, report in _reports(evidence)])
    wanted = [str(s) for s in args["states"]]
    return history == wanted, f"{service} in the capability reports: {' → '.join(history) or 'no report'}"


def _intelligent_call_history(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    states = ["available" if report.get("intelligent_ecall") else "off" for _, report in _reports(evidence)]
    history = _collapsed(states)
    wanted = [str(s) for s in args["states"]]
    return history == wanted, f"intelligent call in the capability reports: {' → '.join(history) or 'no report'}"


def _msd_while_suspended(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    service = str(args["service"])
    msds = [row for row in read_psap_msds(evidence.backend.config.database) if row["vin"] == evidence.vin]
    if not msds:
        return False, f"the PSAP decoded no MSD with VIN {evidence.vin}"
    at = datetime.fromtimestamp(msds[0]["received_ms"] / 1000, UTC)
    before = [report for created, report in _reports(evidence) if created <= at]
    if not before:
        return False, f"no capability report before the MSD at {at.isoformat(timespec='seconds')}"
    state = _state(before[-1], service)
    return state in ("suspended", "partly suspended"), (
        f"MSD at the PSAP at {at.isoformat(timespec='seconds')}; the vehicle's last report before it had {service} "
        f"{state} (payment default: {'yes' if before[-1].get('suspended') else 'no'})"
    )


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], tuple[bool, str]]] = {
    "service_history": _service_history,
    "intelligent_call_history": _intelligent_call_history,
    "msd_while_suspended": _msd_while_suspended,
}
