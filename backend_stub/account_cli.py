"""`backend-stub account ...`, `backend-stub handover VIN` and `backend-stub retention run`: the portal's
account side (AGB 1.6 a, 2.3, 7.2, 7.3) and the retention job (privacy parts A, B, D) on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from backend_stub.accounts import AccountStore, Sealer, check_code_format
from backend_stub.config import BackendConfig
from backend_stub.errors import UnknownVehicleError
from backend_stub.handover import handover_list
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.retention import PersonalValues, RetentionJob, SideTables
from backend_stub.store_location import open_record_store
from tcu.clock import SystemClock
from telematics_wire.keys import load_private_key, load_signing_key
from telematics_wire.vin import validate_vin

COMMANDS = ("account", "handover", "retention")


def add_account_parsers(commands: Any) -> None:
    account = commands.add_parser("account", help="ConnectedDrive accounts: pair with a vehicle by security code")
    actions = account.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="register an account (its contact data is stored encrypted)")
    create.add_argument("account", help="the account's id, e.g. anna@example.org")
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True)
    request = actions.add_parser("request-code", help="send a security code into the vehicle (AGB 1.6 a)")
    request.add_argument("vin")
    request.add_argument("--account", required=True)
    pair = actions.add_parser("pair", help="enter the security code the vehicle shows; links the account")
    pair.add_argument("vin")
    pair.add_argument("--account", required=True)
    pair.add_argument("--code", required=True, help="the 8 digits the car shows (tcu account)")
    unlink = actions.add_parser("unlink", help="end the link between the vehicle and its account (AGB 7.2)")
    unlink.add_argument("vin")
    consent = actions.add_parser("consent", help="the linked account shares the vehicle's data with a third party")
    consent.add_argument("vin")
    consent.add_argument("--recipient", required=True, help="e.g. an insurer using CarData")
    show = actions.add_parser("show", help="the vehicle's account links, consents and last owner change")
    show.add_argument("vin")
    handover = commands.add_parser("handover", help="every active and deactivated service, for a new owner (7.3)")
    handover.add_argument("vin")
    retention = commands.add_parser("retention", help="delete what the terms say is due (4 weeks, 1 year)")
    retention_run = retention.add_subparsers(dest="action", required=True).add_parser("run", help="one pass now")
    for sub in (*actions.choices.values(), handover, retention_run):
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--json", action="store_true")


def _print(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, indent=2, default=str))
    else:
        print("  ".join(f"{key}={value}" for key, value in row.items()))


def run_account_command(args: argparse.Namespace, config: BackendConfig) -> None:
    backend = open_record_store(config)
    provisioning = ProvisioningStore(config.database)
    accounts = AccountStore(
        config.database,
        sealer=Sealer(bytes(load_private_key(config.private_key))),
        signing_key=None if config.signing_key is None else load_signing_key(config.signing_key),
        enrolled=lambda vin: backend.public_key(vin) is not None,
    )
    clock = SystemClock()
    try:
        if args.command == "retention":
            side = SideTables(config.database)
            try:
                report = RetentionJob(backend, accounts, PersonalValues(provisioning.catalogue), clock, side=side).run()
            finally:
                side.close()
            _print(
                {
                    "records_scrubbed": report.records_scrubbed,
                    "last_values_deleted": report.last_values_deleted,
                    "contracts_deleted": report.links_deleted,
                    "psap_msds_scrubbed": report.psap_msds_scrubbed,
                    "invoices_deleted": report.invoices_deleted,
                },
                args.json,
            )
            return
        vin = validate_vin(args.vin, where="VIN argument") if hasattr(args, "vin") else ""
        if args.command == "handover":
            if backend.public_key(vin) is None:
                raise UnknownVehicleError(f"vehicle {vin} is not enrolled")
            rows = handover_list(provisioning, vin, clock.now())
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(f"services of {vin} for the new owner (AGB 7.3):" if rows else f"{vin} has no services")
                for row in rows:
                    _print(row, as_json=False)
            return
        _account(args, vin, accounts, clock)
    finally:
        accounts.close()
        provisioning.close()
        backend.close()


def _account(args: argparse.Namespace, vin: str, accounts: AccountStore, clock: SystemClock) -> None:
    now = clock.now()
    if args.action == "create":
        accounts.create(args.account, name=args.name, email=args.email, now=now)
        _print({"account": args.account, "created": now.isoformat()}, args.json)
    elif args.action == "request-code":
        expires = accounts.request_code(vin, args.account, now)
        if args.json:
            _print({"vin": vin, "account": args.account, "expires": expires.isoformat()}, as_json=True)
        else:
            print(
                f"security code sent into {vin}; read it in the car (tcu account) and enter it with "
                f"`backend-stub account pair {vin} --account {args.account} --code ...` before {expires.isoformat()}"
            )
    elif args.action == "pair":
        link = accounts.pair(vin, args.account, check_code_format(args.code), now)
        _print({"vin": vin, "account": link.account, "linked": link.linked.isoformat()}, args.json)
    elif args.action == "unlink":
        ended = accounts.unlink(vin, now, reason="ended in the portal")
        if ended is None:
            raise UnknownVehicleError(f"vehicle {vin} has no linked account")
        _print({"vin": vin, "account": ended.account, "ended": now.isoformat()}, args.json)
    elif args.action == "consent":
        accounts.grant_consent(vin, args.recipient, now)
        _print({"vin": vin, "recipient": args.recipient, "granted": now.isoformat()}, args.json)
    else:
        last = accounts.last_handover(vin)
        shown = {
            "vin": vin,
            "links": [
                {
                    "account": link.account,
                    "linked": link.linked.isoformat(),
                    "ended": None if link.ended is None else link.ended.isoformat(),
                    "reason": link.end_reason,
                }
                for link in accounts.links(vin)
            ],
            "consents": [
                {
                    "recipient": c.recipient,
                    "granted": c.granted.isoformat(),
                    "ended": None if c.ended is None else c.ended.isoformat(),
                }
                for c in accounts.consents(vin)
            ],
            "last_owner_change": None if last is None else last[0].isoformat(),
        }
        print(json.dumps(shown, indent=2 if args.json else None))
