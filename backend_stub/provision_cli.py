"""`backend-stub provision book|cancel|extend|suspend|resume|deactivate-sim|reissue|status VIN`.

Each change issues the next signed provisioning file (backend_stub.provisioning); the running
backend publishes it. `status` shows the desired services, every file's delivery state and the
vehicle's results.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from backend_stub.cli_args import calendar_date
from backend_stub.cli_output import emit, iso
from backend_stub.config import BackendConfig
from backend_stub.errors import BackendConfigError, UnknownVehicleError
from backend_stub.provisioning import DEFAULT_VALIDITY, ProvisioningIssuer
from backend_stub.provisioning_history import IssuedFile
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from backend_stub.store_location import open_record_store
from tcu.clock import SystemClock
from telematics_wire.keys import load_signing_key
from telematics_wire.terms import EXTENSION_MONTHS, Term
from telematics_wire.vin import validate_vin

_ISSUING = ("book", "cancel", "extend", "suspend", "resume", "deactivate-sim", "reissue")


def add_provision_parser(commands: Any) -> None:
    provision = commands.add_parser(
        "provision", help="change a vehicle's services (each change issues the next signed file) or show them"
    )
    actions = provision.add_subparsers(dest="action", required=True)
    book = actions.add_parser("book", help="book a service with a term")
    book.add_argument("--service", required=True, help="option code, e.g. 6AE")
    book.add_argument(
        "--term",
        choices=[t.value for t in Term],
        help="unlimited, 5y, 2+1y (Laufzeit 3 Jahre), 1y or 3m, as the catalogue offers it for the code and "
        "brand (default: the only one it offers)",
    )
    book.add_argument("--start", type=calendar_date, help="YYYY-MM-DD (default: today, UTC)")
    cancel = actions.add_parser(
        "cancel",
        help="give notice: unlimited services stop six weeks later; a 2+1 term noticed in time does not renew; "
        "other fixed terms run out (on sale of the vehicle: --sale, six weeks)",
    )
    target = cancel.add_mutually_exclusive_group(required=True)
    target.add_argument("--service")
    target.add_argument("--contract", action="store_true", help="the ConnectedDrive contract (AGB 6.2)")
    cancel.add_argument("--on", type=calendar_date, help="date of the notice (default: today, UTC)")
    cancel.add_argument("--sale", action="store_true", help="notice on sale of the vehicle (AGB 7.4)")
    extend = actions.add_parser("extend", help="buy a store extension of a service's term")
    extend.add_argument("--service", required=True)
    extend.add_argument("--months", type=int, required=True, choices=sorted(EXTENSION_MONTHS, reverse=True))
    extend.add_argument("--on", type=calendar_date, help="purchase date (default: today, UTC)")
    suspend = actions.add_parser(
        "suspend",
        help="payment default by hand: suspend the given booked codes' paid (fixed-term) services; without "
        "--service every booked code with a fixed-term service (invoices do it themselves: backend-stub invoice)",
    )
    suspend.add_argument("--service", action="append", help="option code to suspend (repeatable)")
    resume = actions.add_parser(
        "resume", help="lift the suspension of the given codes (without --service: of every suspended code)"
    )
    resume.add_argument("--service", action="append", help="option code to resume (repeatable)")
    actions.add_parser(
        "deactivate-sim",
        help=(
            "the dealer's deactivation (AGB 6.1): the SIM off; with legal eCall only 6AE and 6AC end "
            "and the SIM stays eCall-only"
        ),
    )
    actions.add_parser(
        "reissue", help="issue the same desired state as the next version (after correcting the equipment with enroll)"
    )
    actions.add_parser("status", help="desired services and every file's delivery state")
    for name, sub in actions.choices.items():
        sub.add_argument("vin")
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--json", action="store_true")
        if name in _ISSUING:
            sub.add_argument(
                "--valid-days",
                type=int,
                default=DEFAULT_VALIDITY.days,
                help=f"the file expires this many days after issue (default {DEFAULT_VALIDITY.days})",
            )


def run_provision_command(args: argparse.Namespace, config: BackendConfig) -> None:
    vin = validate_vin(args.vin, where="VIN argument")
    backend = open_record_store(config)
    store = ProvisioningStore(config.database)
    try:
        if args.action == "status":
            _status(vin, store, backend, args.json)
            return
        if config.signing_key is None:
            raise BackendConfigError("[keys] signing_key is not configured: provisioning files cannot be signed")
        if args.valid_days < 1:
            raise BackendConfigError(f"--valid-days must be at least 1, not {args.valid_days}")
        issuer = ProvisioningIssuer(
            store,
            signing_key=load_signing_key(config.signing_key),
            clock=SystemClock(),
            enrolled=lambda v: backend.public_key(v) is not None,
            validity=timedelta(days=args.valid_days),
        )
        issued = {
            "book": lambda: issuer.book(vin, args.service, args.term, args.start),
            "cancel": lambda: (
                issuer.cancel_contract(vin, args.on)
                if args.contract
                else issuer.cancel(vin, args.service, args.on, sale=args.sale)
            ),
            "extend": lambda: issuer.extend(vin, args.service, args.months, args.on),
            "suspend": lambda: issuer.suspend(vin, args.service, why="by hand"),
            "resume": lambda: issuer.resume(vin, args.service, why="by hand"),
            "deactivate-sim": lambda: issuer.deactivate_sim(vin),
            "reissue": lambda: issuer.reissue(vin, "requested on the command line"),
        }[args.action]()
        if args.json:
            print(json.dumps({"vin": vin, **_file_row(issued)}, indent=2))
        else:
            print(
                f"issued provisioning file version {issued.version} for {vin} ({issued.operation}); "
                "the running backend publishes it"
            )
    finally:
        store.close()
        backend.close()


def _file_row(file: IssuedFile) -> dict[str, Any]:
    return {
        "version": file.version,
        "state": file.state.value,
        "operation": file.operation,
        "issued": iso(file.issued),
        "expires": iso(file.expires),
        "published": iso(file.published),
        "publications": file.publications,
        "changed": iso(file.changed),
        "code": file.code,
        "reason": file.reason,
    }


def _status(vin: str, store: ProvisioningStore, backend: BackendStore, as_json: bool) -> None:
    files = store.files(vin)
    if not files and backend.public_key(vin) is None:
        raise UnknownVehicleError(f"vehicle {vin} is not enrolled")
    now = SystemClock().now()
    head = files[-1].contents if files else None
    services = [
        {
            "code": booking.code,
            "name": store.catalogue.services[booking.code].name,
            "term": booking.term.value,
            "start": booking.start.isoformat(),
            "end": None if booking.end() is None else str(booking.end()),
            "status": booking.status(now).value,
            "extensions": [f"{extension.months}m bought {extension.bought}" for extension in booking.extensions],
            "cancelled_on": None if booking.cancelled_on is None else booking.cancelled_on.isoformat(),
            "sale": booking.sale,
        }
        for booking in (head.bookings if head else ())
    ]
    record = store.vehicle(vin)
    vehicle = {
        "vin": vin,
        "legal_ecall": record.legal_ecall,
        "brand": record.brand.value,
        "equipment": None if record.equipment is None else ",".join(sorted(record.equipment)),
        "first_registration": None if record.first_registration is None else record.first_registration.isoformat(),
        "online": backend.online(vin),
        "desired_version": head.version if head else None,
        "payment_default": head.payment_default if head else False,
        "suspended": sorted(head.suspended) if head else [],
        "sim": head.sim if head else "active",
    }
    results = [
        {
            "seq": result.seq,
            "received": iso(result.received),
            "version": result.version,
            "status": result.status.value,
            "code": result.code,
            "reason": result.reason,
            "booked_against": result.attributed,
        }
        for result in store.results(vin)
    ]
    files_rows = [_file_row(file) for file in files]
    if as_json:
        print(json.dumps({**vehicle, "services": services, "files": files_rows, "results": results}, indent=2))
        return
    emit([vehicle], as_json=False)
    for title, rows in (("desired services", services), ("files", files_rows), ("results", results)):
        print(f"{title}:" if rows else f"{title}: none")
        emit(rows, as_json=False)
