"""`backend-stub cardata ...`: the operator's and the owner's side of CarData on the command line.

    backend-stub cardata client-add "Home Assistant" --config backend.toml     → its client_id
    backend-stub cardata approve SDZZXXMD --account anna@example.org --config backend.toml
    backend-stub cardata grant VIN CLIENT_ID KEY_OR_CATEGORY... --config backend.toml
    backend-stub cardata revoke VIN CLIENT_ID --config backend.toml
    backend-stub cardata consents anna@example.org --config backend.toml
    backend-stub cardata report anna@example.org [--transactions] [--html] --config backend.toml

Beside a running backend, on the same database (WAL: each command is its own short transaction).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend_stub.accounts import AccountStore, Sealer
from backend_stub.cardata.errors import NotFound
from backend_stub.cardata.wiring import CardataParts, open_cardata
from backend_stub.config import BackendConfig
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store_location import open_record_store
from tcu.clock import SystemClock
from telematics_wire.keys import load_private_key
from telematics_wire.vin import validate_vin

COMMAND = "cardata"


def add_cardata_parser(commands: Any) -> None:
    cardata = commands.add_parser(COMMAND, help="CarData: third parties' clients, sign-ins, consents, reports")
    actions = cardata.add_subparsers(dest="action", required=True)
    client = actions.add_parser("client-add", help="register a third party (an OAuth client); prints its client_id")
    client.add_argument("name", help="e.g. 'Insurer X' or 'Home Assistant'")
    approve = actions.add_parser("approve", help="the owner approves (or denies) a sign-in by its user code")
    approve.add_argument("user_code")
    approve.add_argument("--account", help="the owner's account (required unless --deny)")
    approve.add_argument("--deny", action="store_true", help="refuse the sign-in instead")
    approve.add_argument(
        "--owner", action="store_true", help="it is the owner's own sign-in: keep cardata:owner (reports, consents)"
    )
    grant = actions.add_parser("grant", help="the vehicle's owner lets a client receive these keys or categories")
    grant.add_argument("vin")
    grant.add_argument("client_id")
    grant.add_argument("keys", nargs="+", help="CarData keys or categories (e.g. VEHICLE_STATUS)")
    revoke = actions.add_parser("revoke", help="the owner withdraws a client's consent: REST and streaming stop")
    revoke.add_argument("vin")
    revoke.add_argument("client_id")
    consents = actions.add_parser("consents", help="an account's consents, open and ended")
    consents.add_argument("account")
    report = actions.add_parser("report", help="an account's data report (or --transactions report)")
    report.add_argument("account")
    report.add_argument("--transactions", action="store_true", help="every transfer to a third party instead")
    report.add_argument("--html", action="store_true", help="as a readable HTML page")
    for sub in actions.choices.values():
        sub.add_argument("--config", type=Path, required=True)


@contextmanager
def _opened(config: BackendConfig) -> Iterator[CardataParts]:
    records = open_record_store(config)
    provisioning = ProvisioningStore(config.database)
    # Its tables first: CarData's consents hang on account links.
    accounts = AccountStore(config.database, sealer=Sealer(bytes(load_private_key(config.private_key))))
    try:
        parts = open_cardata(config, clock=SystemClock(), records=records, provisioning=provisioning)
        try:
            yield parts
        finally:
            parts.close()
    finally:
        accounts.close()
        provisioning.close()
        records.close()


def run_cardata_command(args: argparse.Namespace, config: BackendConfig) -> None:
    now = SystemClock().now()
    with _opened(config) as parts:
        if args.action == "client-add":
            client = parts.store.add_client(args.name, now)
            print(f"client_id={client.client_id}  name={client.name}")
        elif args.action == "approve":
            _approve(parts, args)
        elif args.action == "grant":
            keys = parts.store.grant(validate_vin(args.vin), args.client_id, args.keys, now)
            print(f"{args.client_id} may receive {len(keys)} keys of {args.vin}: {' '.join(sorted(keys))}")
        elif args.action == "revoke":
            parts.store.revoke(validate_vin(args.vin), args.client_id, now)
            print(f"{args.client_id} receives nothing more of {args.vin}")
        elif args.action == "consents":
            print(json.dumps(parts.store.consents_of(parts.store.gcid_of(args.account)), indent=2, default=str))
        elif args.action == "report":
            _report(parts, args)


def _approve(parts: CardataParts, args: argparse.Namespace) -> None:
    if args.deny:
        request = parts.flow.deny(args.user_code)
        print(f"sign-in {args.user_code} of client {request.client_id} denied")
        return
    if not args.account:
        raise NotFound("name the owner's account with --account (or refuse with --deny)")
    request = parts.flow.approve(args.user_code, args.account, owner=args.owner)
    print(f"sign-in {args.user_code} approved: client {request.client_id} acts for {args.account} ({request.scope})")


def _report(parts: CardataParts, args: argparse.Namespace) -> None:
    gcid = parts.store.gcid_of(args.account)
    service = parts.service
    if args.html:
        print(service.transaction_report_html(gcid) if args.transactions else service.data_report_html(gcid))
    else:
        report = service.transaction_report(gcid) if args.transactions else service.data_report(gcid)
        print(json.dumps(report, indent=2, default=str))
