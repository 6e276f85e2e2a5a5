"""Scenario steps of invoices and payment default (AGB 5.5 c).

Steps (hil.actions.ACTION_TABLE): `invoice` has the backend invoice a booked option code with a
fixed-term (paid) service, dated `days_ago` days before today — how a scenario of seconds reaches day
31 without waiting a month: the backend's clock is not moved, the invoice is back-dated, and the
backend reconciles at once (a default begins: the suspend file naming that code); `pay` pays every
unpaid invoice of the vehicle (the resume file).

What a payment default does to the vehicle is checked from its capability reports (hil.service_checks:
`service_history`, `intelligent_call_history`, `msd_while_suspended`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from backend_stub.invoice_store import Invoice
from backend_stub.invoices import Billing, Reconciled, parse_amount
from hil.timeline import EventKind
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from hil.run_context import RunContext
    from hil.scenario import Step


def _billing(run: RunContext) -> Billing:
    if run.bench.backend.billing is None:
        raise ConfigError("the backend has no signing key: it cannot suspend or resume a vehicle")
    return run.bench.backend.billing


async def invoice(run: RunContext, step: Step) -> None:
    billing, vin = _billing(run), run.scenario.vin
    days = int(step.args.get("days_ago", 0))
    dated = run.bench.backend.clock.now().date() - timedelta(days=days)
    amount = parse_amount(str(step.args.get("amount", "9.99")))

    def issue_and_check() -> tuple[Invoice, bool]:
        issued = billing.issue(vin, str(step.args["service"]), amount, invoiced=dated)
        return issued, billing.check(vin).in_default

    # On the backend's database thread: its connections are that thread's while it runs.
    issued, default = await run.bench.backend.operate(issue_and_check)
    run.event(
        EventKind.ACTION,
        f"invoice {issued.number} dated {dated}",
        f"{issued.item}, {issued.amount}; payment default: {'yes' if default else 'no'}",
    )


async def pay(run: RunContext, _step: Step) -> None:
    billing, vin, backend = _billing(run), run.scenario.vin, run.bench.backend

    def pay_unpaid() -> tuple[list[Invoice], Reconciled]:
        unpaid = [i for i in backend.invoice_store.invoices(vin) if i.paid is None]
        if not unpaid:
            raise ConfigError(f"vehicle {vin} has no unpaid invoice to pay")
        for item in unpaid:
            result = billing.pay(item.number)
        return unpaid, result

    unpaid, result = await backend.operate(pay_unpaid)  # on the database thread, as `invoice`
    run.event(
        EventKind.ACTION,
        f"paid invoice(s) {', '.join(str(i.number) for i in unpaid)}",
        f"payment default: {'yes' if result.in_default else 'no'}",
    )


ACTIONS: dict[str, Callable[[RunContext, Step], Any]] = {"invoice": invoice, "pay": pay}
