"""`backend-stub`: run the backend, manage keys and vehicles, and query what vehicles sent."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backend_stub.account_cli import COMMANDS as ACCOUNT_COMMANDS
from backend_stub.account_cli import add_account_parsers, run_account_command
from backend_stub.app import BackendStub
from backend_stub.call_centre import read_call_centre_cases
from backend_stub.cli_args import calendar_date, moment
from backend_stub.config import BackendConfig, load_backend_config
from backend_stub.errors import BackendConfigError, BackendError, UnknownVehicleError
from backend_stub.invoice_cli import add_invoice_parser, run_invoice_command
from backend_stub.measure_cli import add_measure_parser, run_measure_command
from backend_stub.provisioning import DEFAULT_VALIDITY, IssuedFile, ProvisioningIssuer
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.psap import read_psap_msds
from backend_stub.store import BackendStore
from tcu.cli_errors import database_error_sentence, os_error_sentence
from tcu.clock import SystemClock
from tcu.config import validate_vin
from tcu.errors import TcuError
from tcu.keys import load_public_key, load_signing_key, write_box_keypair, write_signing_keypair
from tcu.runner import configure_logging, run_service
from tcu.services.catalogue import Brand
from tcu.services.terms import EXTENSION_MONTHS, Term
from tcu.uplink.strict_cbor import describe

_MAX_PRINT_DEPTH = 32
_ISSUING = ("book", "cancel", "extend", "suspend", "resume", "deactivate-sim", "reissue")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backend-stub", description="The backend a TCU talks to")
    parser.add_argument("--log-level", default="info")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="ingest vehicle data from the broker")
    run.add_argument("--config", type=Path, required=True)

    keygen = commands.add_parser("keygen", help="create the backend's X25519 and Ed25519 key pairs")
    keygen.add_argument("--dir", type=Path, required=True)

    enroll = commands.add_parser("enroll", help="register a vehicle's public key")
    enroll.add_argument("vin")
    enroll.add_argument("--public-key", type=Path, required=True)
    enroll.add_argument(
        "--legal-ecall",
        action=argparse.BooleanOptionalAction,
        help="the vehicle is equipped with EU legal eCall: every provisioning file keeps 6AF and its SIM "
        "(default: no for a new vehicle; a re-enrolment without the option keeps what is recorded)",
    )
    enroll.add_argument(
        "--brand", choices=[b.value for b in Brand], help="the brand the catalogue's terms are read for (default BMW)"
    )
    enroll.add_argument(
        "--equipment",
        type=_codes,
        help="option codes the vehicle is built with, e.g. 6AE,6AC,6AP; a code outside them is refused at booking "
        "(default: not recorded, every option code of the brand; 6AF is --legal-ecall)",
    )
    enroll.add_argument(
        "--first-registration",
        type=calendar_date,
        help="YYYY-MM-DD, the vehicle's first registration (Erstzulassung): 5y and 2+1y terms run from it "
        "(default: the day a new vehicle is enrolled; a re-enrolment without the option keeps what is recorded)",
    )

    commands.add_parser("vehicles", help="list enrolled vehicles")
    last = commands.add_parser("last", help="last transmitted value of each signal")
    last.add_argument("vin")
    records = commands.add_parser("records", help="records received from a vehicle")
    records.add_argument("vin")
    records.add_argument("--since", type=moment, help="ISO time, e.g. 2026-11-23T10:00Z")
    records.add_argument("--kind", choices=("telemetry", "event", "ecall"))
    records.add_argument("--limit", type=int)
    rejections = commands.add_parser("rejections", help="messages refused, with the reason")
    rejections.add_argument("--vin")
    epochs = commands.add_parser("epochs", help="the vehicle's queue epochs: one per reset of its queue")
    epochs.add_argument("vin")

    capabilities = commands.add_parser("capabilities", help="the vehicle's last capability report")
    capabilities.add_argument("vin")

    for sub in (enroll, commands.choices["vehicles"], last, records, rejections, epochs, capabilities):
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--json", action="store_true")
    _provision_parser(commands)
    add_account_parsers(commands)
    return parser


def _codes(text: str) -> frozenset[str]:
    return frozenset(code.strip() for code in text.split(",") if code.strip())


def _provision_parser(commands: Any) -> None:
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
    add_measure_parser(commands)
    add_invoice_parser(commands)
    psap = commands.add_parser("psap-msds", help="the MSDs the PSAP stub received, decoded")
    psap.add_argument("--config", type=Path, required=True)
    psap.add_argument("--json", action="store_true")
    centre = commands.add_parser(
        "call-centre-cases", help="the intelligent emergency calls' data (6AC) the call centre received, decoded"
    )
    centre.add_argument("--config", type=Path, required=True)
    centre.add_argument("--vin", help="only this vehicle")
    centre.add_argument("--json", action="store_true")
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


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def _printable(value: Any, depth: int = 0) -> Any:
    """`value` as JSON holds it, bounded: a body is whatever a vehicle sent, and printing it must not
    fail (`str()` of a 5,000-digit integer raises; JSON keys must be text)."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 64 else describe(value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if depth >= _MAX_PRINT_DEPTH:
        return describe(value)
    if isinstance(value, dict):
        return {_printable_key(key): _printable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_printable(item, depth + 1) for item in value]
    return describe(value)


def _printable_key(key: object) -> str:
    return key if isinstance(key, str) else describe(key)


def _emit(rows: list[dict[str, Any]], as_json: bool) -> None:
    printable = [_printable(row) for row in rows]
    if as_json:
        print(json.dumps(printable, indent=2))
        return
    for row in printable:
        print("  ".join(f"{key}={value}" for key, value in row.items()))


def _file_row(file: IssuedFile) -> dict[str, Any]:
    return {
        "version": file.version,
        "state": file.state.value,
        "operation": file.operation,
        "issued": _iso(file.issued),
        "expires": _iso(file.expires),
        "published": _iso(file.published),
        "publications": file.publications,
        "changed": _iso(file.changed),
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
            "code": b.code,
            "name": store.catalogue.services[b.code].name,
            "term": b.term.value,
            "start": b.start.isoformat(),
            "end": None if b.end() is None else str(b.end()),
            "status": b.status(now).value,
            "extensions": [f"{e.months}m bought {e.bought}" for e in b.extensions],
            "cancelled_on": None if b.cancelled_on is None else b.cancelled_on.isoformat(),
            "sale": b.sale,
        }
        for b in (head.bookings if head else ())
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
            "seq": r.seq,
            "received": _iso(r.received),
            "version": r.version,
            "status": r.status.value,
            "code": r.code,
            "reason": r.reason,
            "booked_against": r.attributed,
        }
        for r in store.results(vin)
    ]
    files_rows = [_file_row(f) for f in files]
    if as_json:
        print(json.dumps({**vehicle, "services": services, "files": files_rows, "results": results}, indent=2))
        return
    _emit([vehicle], as_json=False)
    for title, rows in (("desired services", services), ("files", files_rows), ("results", results)):
        print(f"{title}:" if rows else f"{title}: none")
        _emit(rows, as_json=False)


def _provision(args: argparse.Namespace, config: BackendConfig) -> None:
    vin = validate_vin(args.vin, where="VIN argument")
    backend = BackendStore(config.database)
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


def _capabilities(args: argparse.Namespace, config: BackendConfig) -> None:
    vin = validate_vin(args.vin, where="VIN argument")
    store = ProvisioningStore(config.database)
    try:
        report = store.capabilities(vin)
    finally:
        store.close()
    if report is None:
        raise UnknownVehicleError(f"no capability report from vehicle {vin} yet")
    if args.json:
        meta = {"vin": vin, "seq": report.seq, "created": _iso(report.created), "received": _iso(report.received)}
        print(json.dumps({**meta, "report": report.report}, indent=2, default=str))
        return
    print(f"vin={vin}  seq={report.seq}  created={_iso(report.created)}  received={_iso(report.received)}")
    flat = {k: v for k, v in report.report.items() if not isinstance(v, dict) or k == "services"}
    _emit([flat], as_json=False)
    for name, category in report.report.get("categories", {}).items():
        _emit([{"category": name, **category}], as_json=False)


def _query(args: argparse.Namespace, store: BackendStore) -> None:
    if args.command == "vehicles":
        _emit(
            [
                {
                    "vin": v.vin,
                    "records": v.records,
                    "last_seq": v.last_seq,
                    "online": v.online,
                    "last_received": _iso(v.last_received),
                }
                for v in store.vehicles()
            ],
            args.json,
        )
    elif args.command == "last":
        values = store.last_values(args.vin)
        if not values and store.public_key(args.vin) is None:
            raise UnknownVehicleError(f"vehicle {args.vin} is not enrolled")
        _emit([{"path": v.path, "value": v.value, "time": _iso(v.timestamp), "seq": v.seq} for v in values], args.json)
    elif args.command == "records":
        since = args.since.replace(tzinfo=args.since.tzinfo or UTC) if args.since else None
        _emit(
            [
                {
                    "epoch": r.epoch.hex(),
                    "seq": r.seq,
                    "kind": r.kind,
                    "created": _iso(r.created),
                    "received": _iso(r.received),
                    "body": r.body,
                }
                for r in store.records(args.vin, since=since, kind=args.kind, limit=args.limit)
            ],
            args.json,
        )
    elif args.command == "epochs":
        _emit(
            [
                {
                    "epoch": e.epoch.hex() or "legacy",
                    "ordinal": e.ordinal,
                    "first_seen": _iso(e.first_seen),
                    "first_seq": e.first_seq,
                    "records": len(store.seqs(args.vin, e.epoch)),
                }
                for e in store.epochs(args.vin)
            ],
            args.json,
        )
    elif args.command == "rejections":
        _emit(
            [
                {"received": _iso(r.received), "topic": r.topic, "vin": r.vin, "reason": r.reason}
                for r in store.rejections(args.vin)
            ],
            args.json,
        )


def _enroll(args: argparse.Namespace, config: BackendConfig, store: BackendStore) -> None:
    vin = validate_vin(args.vin, where="VIN argument")
    public_key = bytes(load_public_key(args.public_key))
    provisioning = ProvisioningStore(config.database)
    try:  # the build first: equipment the catalogue refuses leaves nothing enrolled
        with provisioning.transaction():
            provisioning.set_legal_ecall(vin, args.legal_ecall)
            record = provisioning.record_build(
                vin,
                brand=None if args.brand is None else Brand(args.brand),
                equipment=args.equipment,
                first_registration=args.first_registration,
                today=SystemClock().now().date(),
            )
    except ValueError as exc:
        raise BackendConfigError(f"enroll {vin}: {exc}") from exc
    finally:
        provisioning.close()
    store.enroll(vin, public_key, SystemClock().now())
    equipment = "not recorded" if record.equipment is None else ",".join(sorted(record.equipment)) or "none"
    print(
        f"enrolled {vin} (legal eCall: {'yes' if record.legal_ecall else 'no'}, brand: {record.brand}, "
        f"equipment: {equipment}, first registration: {record.first_registration or 'not recorded'})"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    config: BackendConfig | None = None
    try:
        if args.command == "keygen":
            for private, public in (write_box_keypair(args.dir, "backend"), write_signing_keypair(args.dir, "backend")):
                print(f"wrote {private} (private, 0600) and {public}")
            return 0
        config = load_backend_config(args.config)
        if args.command == "run":
            run_service(BackendStub(config).run())
            return 0
        if args.command == "provision":
            _provision(args, config)
            return 0
        if args.command == "capabilities":
            _capabilities(args, config)
            return 0
        if args.command == "measure":
            run_measure_command(args, config)
            return 0
        if args.command == "invoice":
            run_invoice_command(args, config)
            return 0
        if args.command in ACCOUNT_COMMANDS:
            run_account_command(args, config)
            return 0
        if args.command == "psap-msds":
            _emit(read_psap_msds(config.database), args.json)
            return 0
        if args.command == "call-centre-cases":
            with contextlib.closing(BackendStore(config.database)) as cases_store:
                _emit([case.row() for case in read_call_centre_cases(cases_store, args.vin)], args.json)
            return 0
        store = BackendStore(config.database)
        try:
            if args.command == "enroll":
                _enroll(args, config, store)
            else:
                _query(args, store)
        finally:
            store.close()
    except (TcuError, BackendError) as exc:
        print(f"backend-stub: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path a person gave that the file system refuses: a sentence, not a traceback
        print(f"backend-stub: error: {os_error_sentence(exc)}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        database = "configured" if config is None else config.database
        print(f"backend-stub: error: {database_error_sentence(exc, database)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
