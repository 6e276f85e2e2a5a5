"""`backend-stub invoice issue|list|pay|check`: invoices for paid services and the payment default.

    backend-stub invoice issue VIN --service 6AM --amount 49.90 [--invoiced 2026-10-01] [--item "..."]
    backend-stub invoice list [VIN]
    backend-stub invoice pay NUMBER [--on 2026-11-30]
    backend-stub invoice check [VIN]

An invoice is for one booked option code with a fixed-term (paid) service. Unpaid 30 days after its
date, that code is in payment default (AGB 5.5 c) and is suspended: `issue`, `pay` and `check`
reconcile at once (issuing the suspend or resume file naming the codes); the running backend does the
same for every vehicle every ten minutes (backend_stub/invoices.py). An invoice the previous owner
left unpaid at an owner change is listed with `sold` and `debtor`: it no longer holds the vehicle.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

from backend_stub.cli_args import calendar_date
from backend_stub.cli_output import emit
from backend_stub.config import BackendConfig
from backend_stub.errors import BackendConfigError
from backend_stub.invoice_store import Invoice, InvoiceStore
from backend_stub.invoices import Billing, Reconciled, parse_amount
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store_location import open_record_store
from tcu.clock import SystemClock
from telematics_wire.keys import load_signing_key
from telematics_wire.vin import validate_vin


def add_invoice_parser(commands: Any) -> None:
    invoice = commands.add_parser("invoice", help="invoices of paid services; payment default after 30 days")
    actions = invoice.add_subparsers(dest="invoice_command", required=True)
    issue = actions.add_parser(
        "issue", help="invoice a booked option code with a fixed-term (paid) service (a booking or an extension)"
    )
    issue.add_argument("vin")
    issue.add_argument("--service", required=True, help="option code of the booked service, e.g. 6AM")
    issue.add_argument("--amount", required=True, help="price in euros, e.g. 49.90")
    issue.add_argument("--item", help="what is invoiced (default: the booking, e.g. '6AM 1y from 2026-11-01')")
    issue.add_argument("--invoiced", type=calendar_date, help="invoice date YYYY-MM-DD (default: today, UTC)")
    listing = actions.add_parser("list", help="invoices, all or of one vehicle, with what is overdue")
    listing.add_argument("vin", nargs="?")
    pay = actions.add_parser(
        "pay",
        help="record a payment; a code is resumed once none of its invoices is overdue (not one suspended by hand)",
    )
    pay.add_argument("number", type=int)
    pay.add_argument("--on", type=calendar_date, help="payment date YYYY-MM-DD (default: today, UTC)")
    check = actions.add_parser(
        "check", help="suspend the codes of overdue invoices and resume the paid ones, as the invoices say today"
    )
    check.add_argument("vin", nargs="?")
    for sub in actions.choices.values():
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--json", action="store_true")


def _row(invoice: Invoice, today: date) -> dict[str, Any]:
    return {
        "number": invoice.number,
        "vin": invoice.vin,
        "service": invoice.service,
        "item": invoice.item,
        "amount": invoice.amount,
        "invoiced": invoice.invoiced.isoformat(),
        "payable_until": invoice.last_day.isoformat(),
        "paid": None if invoice.paid is None else invoice.paid.isoformat(),
        "overdue": invoice.overdue(today),
        "sold": None if invoice.detached is None else invoice.detached.isoformat(),
        "debtor": invoice.debtor,
    }


def _reconciled(result: Reconciled) -> dict[str, Any]:
    return {
        "vin": result.vin,
        "payment_default": result.in_default,
        "overdue": [i.number for i in result.overdue],
        "suspended": sorted(result.suspended),
        "issued_versions": [f.version for f in result.issued],
        "operations": [f.operation for f in result.issued],
    }


def run_invoice_command(args: argparse.Namespace, config: BackendConfig) -> None:
    clock = SystemClock()
    today = clock.now().date()
    invoices = InvoiceStore(config.database)
    provisioning = ProvisioningStore(config.database)
    backend = open_record_store(config)
    try:
        vin = None if getattr(args, "vin", None) is None else validate_vin(args.vin, where="VIN argument")
        if args.invoice_command == "list":
            emit([_row(invoice, today) for invoice in invoices.invoices(vin)], args.json)
            return
        if config.signing_key is None:
            raise BackendConfigError("[keys] signing_key is not configured: suspend and resume files cannot be signed")
        issuer = ProvisioningIssuer(
            provisioning,
            signing_key=load_signing_key(config.signing_key),
            clock=clock,
            enrolled=lambda v: backend.public_key(v) is not None,
        )
        billing = Billing(invoices, provisioning, issuer, clock)
        if args.invoice_command == "issue":
            assert vin is not None
            invoice = billing.issue(
                vin, args.service, parse_amount(args.amount), item=args.item, invoiced=args.invoiced
            )
            emit([_row(invoice, today) | {"payment_default": billing.check(vin).in_default}], args.json)
        elif args.invoice_command == "pay":
            result = billing.pay(args.number, on=args.on)
            emit([_reconciled(result)], args.json)
        else:
            results = [billing.check(vin)] if vin is not None else list(billing.check_all())
            emit([_reconciled(result) for result in results], args.json)
    finally:
        backend.close()
        provisioning.close()
        invoices.close()
