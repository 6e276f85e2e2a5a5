"""`backend-stub`: run the backend, manage keys and vehicles, and query what vehicles sent."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.errors import BackendError, UnknownVehicleError
from backend_stub.store import BackendStore
from tcu.clock import SystemClock
from tcu.config import validate_vin
from tcu.errors import TcuError
from tcu.keys import load_public_key, write_box_keypair, write_signing_keypair
from tcu.runner import configure_logging, run_service


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

    commands.add_parser("vehicles", help="list enrolled vehicles")
    last = commands.add_parser("last", help="last transmitted value of each signal")
    last.add_argument("vin")
    records = commands.add_parser("records", help="records received from a vehicle")
    records.add_argument("vin")
    records.add_argument("--since", type=datetime.fromisoformat, help="ISO time, e.g. 2026-11-23T10:00Z")
    records.add_argument("--kind", choices=("telemetry", "event", "ecall"))
    records.add_argument("--limit", type=int)
    rejections = commands.add_parser("rejections", help="messages refused, with the reason")
    rejections.add_argument("--vin")

    for sub in (enroll, commands.choices["vehicles"], last, records, rejections):
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--json", action="store_true")
    return parser


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def _emit(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        print("  ".join(f"{key}={value}" for key, value in row.items()))


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
                {"seq": r.seq, "kind": r.kind, "created": _iso(r.created), "received": _iso(r.received), "body": r.body}
                for r in store.records(args.vin, since=since, kind=args.kind, limit=args.limit)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        if args.command == "keygen":
            for private, public in (write_box_keypair(args.dir, "backend"), write_signing_keypair(args.dir, "backend")):
                print(f"wrote {private} (private, 0600) and {public}")
            return 0
        config = load_backend_config(args.config)
        if args.command == "run":
            run_service(BackendStub(config).run())
            return 0
        store = BackendStore(config.database)
        try:
            if args.command == "enroll":
                vin = validate_vin(args.vin, where="VIN argument")
                store.enroll(vin, bytes(load_public_key(args.public_key)), SystemClock().now())
                print(f"enrolled {vin}")
            else:
                _query(args, store)
        finally:
            store.close()
    except (TcuError, BackendError) as exc:
        print(f"backend-stub: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
