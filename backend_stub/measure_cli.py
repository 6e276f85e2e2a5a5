"""`backend-stub measure send|status|history`: order a remote measure and follow its attempts.

`send` only records the measure; the running backend's scheduler sends attempts and retries them.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from backend_stub.config import BackendConfig
from backend_stub.errors import BackendError
from backend_stub.measure_store import Measure, MeasureStore
from backend_stub.measures import MeasureScheduler
from tcu.clock import SystemClock
from tcu.config import validate_vin
from tcu.keys import load_signing_key
from tcu.services.measure_order import MeasureCategory
from tcu.vehicle.drive_cycle import VehicleMode


def add_measure_parser(commands: Any) -> None:
    measure = commands.add_parser("measure", help="remote measures: send one, follow its attempts")
    actions = measure.add_subparsers(dest="measure_command", required=True)
    send = actions.add_parser("send", help="order a measure; the running backend sends and retries it")
    send.add_argument("vin")
    send.add_argument("--id", required=True, help="measure id, unique")
    send.add_argument(
        "--change",
        action="append",
        required=True,
        metavar="KEY=VALUE",
        help='an ECU configuration change (repeatable); values are JSON (true, 5, "text")',
    )
    send.add_argument(
        "--state",
        action="append",
        choices=[m.value for m in VehicleMode],
        required=True,
        help="a vehicle state the measure may run in (repeatable)",
    )
    send.add_argument("--category", choices=[c.value for c in MeasureCategory], default="fault_fix")
    send.add_argument("--impairs", action="append", default=[], help="a service unavailable while it runs")
    send.add_argument("--deadline-hours", type=float, default=168.0)
    send.add_argument("--max-attempts", type=int, default=10)
    send.add_argument("--step-s", type=float, default=1.0, help="simulated time per change")
    status = actions.add_parser("status", help="every measure, or those of one vehicle")
    status.add_argument("vin", nargs="?")
    history = actions.add_parser("history", help="the attempts of one measure, with reasons")
    history.add_argument("id")
    for sub in (send, status, history):
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--json", action="store_true")


def _changes(pairs: list[str]) -> dict[str, Any]:
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise BackendError(f"--change {pair!r}: expected KEY=VALUE")
        try:
            changes[key] = json.loads(text)
        except json.JSONDecodeError:
            changes[key] = text  # a bare word is a string
    return changes


def _row(measure: Measure) -> dict[str, Any]:
    return {
        "id": measure.measure_id,
        "vin": measure.vin,
        "state": measure.state,
        "attempts": measure.attempts,
        "deadline": measure.deadline.isoformat(timespec="seconds"),
        "reason": measure.reason,
    }


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        for row in rows:
            print("  ".join(f"{k}={v}" for k, v in row.items()))


def run_measure_command(args: argparse.Namespace, config: BackendConfig) -> None:
    store = MeasureStore(config.database)
    try:
        if args.measure_command == "send":
            if config.signing_key is None:
                raise BackendError("measure send: the backend config has no [keys] signing_key to sign orders with")
            scheduler = MeasureScheduler(
                store,
                signing_key=load_signing_key(config.signing_key),
                clock=SystemClock(),
                vehicle_mode=lambda _vin: None,
                online=lambda _vin: None,
            )
            if store.get(args.id) is not None:
                raise BackendError(f"measure {args.id} exists already; measure ids are unique")
            measure = scheduler.send(
                vin=validate_vin(args.vin, where="VIN argument"),
                measure_id=args.id,
                changes=_changes(args.change),
                allowed_states=tuple(VehicleMode(s) for s in args.state),
                category=MeasureCategory(args.category),
                impairs=tuple(args.impairs),
                deadline=timedelta(hours=args.deadline_hours),
                max_attempts=args.max_attempts,
                step_s=args.step_s,
            )
            _print([_row(measure)], args.json)
        elif args.measure_command == "status":
            _print([_row(m) for m in store.all(args.vin)], args.json)
        else:
            if store.get(args.id) is None:
                raise BackendError(f"no measure {args.id}")
            _print(
                [
                    {
                        "attempt": a.attempt,
                        "status": a.status,
                        "code": a.code,
                        "reason": a.reason,
                        "sent": a.sent.isoformat(timespec="seconds"),
                        "ended": None if a.ended is None else a.ended.isoformat(timespec="seconds"),
                        "impaired_s": a.impaired_s,
                    }
                    for a in store.history(args.id)
                ],
                args.json,
            )
    finally:
        store.close()
