"""`backend-stub vehicles|last|records|rejections|epochs|capabilities|psap-msds|call-centre-cases`:
what the backend received, read from its database (while the backend runs, too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from datetime import UTC
from pathlib import Path
from typing import Any

from backend_stub.call_centre import read_call_centre_cases
from backend_stub.cli_args import moment
from backend_stub.cli_output import emit, iso
from backend_stub.config import BackendConfig
from backend_stub.errors import UnknownVehicleError
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.psap import read_psap_msds
from backend_stub.store import BackendStore
from backend_stub.store_location import open_record_store
from telematics_wire.vin import validate_vin

COMMANDS = ("vehicles", "last", "records", "rejections", "epochs", "capabilities", "psap-msds", "call-centre-cases")


def add_query_parsers(commands: Any) -> None:
    vehicles = commands.add_parser("vehicles", help="list enrolled vehicles")
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
    psap = commands.add_parser("psap-msds", help="the MSDs the PSAP stub received, decoded")
    centre = commands.add_parser(
        "call-centre-cases", help="the intelligent emergency calls' data (6AC) the call centre received, decoded"
    )
    centre.add_argument("--vin", help="only this vehicle")
    for sub in (vehicles, last, records, rejections, epochs, capabilities, psap, centre):
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--json", action="store_true")


def run_query_command(args: argparse.Namespace, config: BackendConfig) -> None:
    if args.command == "capabilities":
        _capabilities(args, config)
    elif args.command == "psap-msds":
        emit(read_psap_msds(config.database), args.json)
    elif args.command == "call-centre-cases":
        with contextlib.closing(open_record_store(config)) as cases_store:
            emit([case.row() for case in read_call_centre_cases(cases_store, args.vin)], args.json)
    else:
        with contextlib.closing(open_record_store(config)) as store:
            query_store(args, store)


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
        meta = {"vin": vin, "seq": report.seq, "created": iso(report.created), "received": iso(report.received)}
        print(json.dumps({**meta, "report": report.report}, indent=2, default=str))
        return
    print(f"vin={vin}  seq={report.seq}  created={iso(report.created)}  received={iso(report.received)}")
    flat = {key: value for key, value in report.report.items() if not isinstance(value, dict) or key == "services"}
    emit([flat], as_json=False)
    for name, category in report.report.get("categories", {}).items():
        emit([{"category": name, **category}], as_json=False)


def query_store(args: argparse.Namespace, store: BackendStore) -> None:
    """The commands answered from the records' tables (vehicles, last, records, epochs, rejections)."""
    if args.command == "vehicles":
        emit(
            [
                {
                    "vin": vehicle.vin,
                    "records": vehicle.records,
                    "last_seq": vehicle.last_seq,
                    "online": vehicle.online,
                    "last_received": iso(vehicle.last_received),
                }
                for vehicle in store.vehicles()
            ],
            args.json,
        )
    elif args.command == "last":
        values = store.last_values(args.vin)
        if not values and store.public_key(args.vin) is None:
            raise UnknownVehicleError(f"vehicle {args.vin} is not enrolled")
        emit(
            [
                {"path": value.path, "value": value.value, "time": iso(value.timestamp), "seq": value.seq}
                for value in values
            ],
            args.json,
        )
    elif args.command == "records":
        since = args.since.replace(tzinfo=args.since.tzinfo or UTC) if args.since else None
        emit(
            [
                {
                    "epoch": record.epoch.hex(),
                    "seq": record.seq,
                    "kind": record.kind,
                    "created": iso(record.created),
                    "received": iso(record.received),
                    "body": record.body,
                }
                for record in store.records(args.vin, since=since, kind=args.kind, limit=args.limit)
            ],
            args.json,
        )
    elif args.command == "epochs":
        emit(
            [
                {
                    "epoch": epoch.epoch.hex() or "legacy",
                    "ordinal": epoch.ordinal,
                    "first_seen": iso(epoch.first_seen),
                    "first_seq": epoch.first_seq,
                    "records": len(store.seqs(args.vin, epoch.epoch)),
                }
                for epoch in store.epochs(args.vin)
            ],
            args.json,
        )
    elif args.command == "rejections":
        emit(
            [
                {
                    "received": iso(rejection.received),
                    "topic": rejection.topic,
                    "vin": rejection.vin,
                    "reason": rejection.reason,
                }
                for rejection in store.rejections(args.vin)
            ],
            args.json,
        )
