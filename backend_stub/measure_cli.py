"""`backend-stub measure send|replan|status|history`: order a remote measure and follow its attempts.

`send` judges the measure's plan (AGB 3.4 a to d: the fault it fixes, its steps with their expected
durations, no vehicle function, no personal settings, at most 10 minutes) and only records it; the
running backend's scheduler sends attempts and retries them. A plan is given as steps,

    --step 120 navigation.map_region=EU-2027 navigation.poi_database=2026-Q1 --step 45 navigation.traffic_feed=v3

(seconds, up to three decimals, then the step's changes), or as `--change KEY=VALUE` options, each
its own step of `--step-s` seconds. `replan` gives a measure that ran into the 10-minute cap
(`needs_plan`) new steps, or with `--same-plan` its old ones again.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from backend_stub.cli_output import emit
from backend_stub.config import BackendConfig
from backend_stub.errors import BackendError
from backend_stub.measure_store import Measure, MeasureStore
from backend_stub.measures import MeasureScheduler
from tcu.clock import SystemClock
from telematics_wire.keys import load_signing_key
from telematics_wire.measure_order import MeasureCategory
from telematics_wire.measure_plan import Fault, MeasureStep, one_step_per_change, planned_ms, seconds_text
from telematics_wire.vehicle_mode import VehicleMode
from telematics_wire.vin import validate_vin


def add_measure_parser(commands: Any) -> None:
    measure = commands.add_parser("measure", help="remote measures: send one, follow its attempts")
    actions = measure.add_subparsers(dest="measure_command", required=True)
    send = actions.add_parser("send", help="order a measure; the running backend sends and retries it")
    send.add_argument("vin")
    send.add_argument("--id", required=True, help="measure id, unique")
    send.add_argument("--fault-ref", required=True, help="the fault, vulnerability or regulation it addresses")
    send.add_argument("--fault-service", required=True, help="the service whose fault it fixes (AGB 3.4 c)")
    _add_plan_arguments(send)
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
    replan = actions.add_parser("replan", help="new steps for a measure that ran into the 10-minute cap")
    replan.add_argument("id")
    _add_plan_arguments(replan)
    replan.add_argument("--same-plan", action="store_true", help="send the old steps again, on purpose")
    replan.add_argument("--max-attempts", type=int, default=10, help="further attempts allowed")
    status = actions.add_parser("status", help="every measure, or those of one vehicle")
    status.add_argument("vin", nargs="?")
    history = actions.add_parser("history", help="the attempts of one measure, with reasons")
    history.add_argument("id")
    for sub in (send, replan, status, history):
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--json", action="store_true")


def _add_plan_arguments(parser: Any) -> None:
    parser.add_argument(
        "--step",
        action="append",
        nargs="+",
        default=[],
        metavar="SECONDS KEY=VALUE",
        help="one step of the plan: its expected seconds, then its changes (repeatable, in order)",
    )
    parser.add_argument(
        "--change",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='a change that is its own step of --step-s seconds (repeatable); values are JSON (true, 5, "text")',
    )
    parser.add_argument("--step-s", default="1", help="expected seconds of each --change step")


def _milliseconds(text: str) -> int:
    """Seconds as typed, exactly, in whole milliseconds: no float rounding decides the 10-minute boundary."""
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise BackendError(f"{text!r} is not a number of seconds") from exc
    if not value.is_finite() or value < 0:
        raise BackendError(f"{text!r}: seconds must be a finite, non-negative number")
    if value > 10**6:
        raise BackendError(f"{text!r} seconds: a step of an attempt capped at 10 minutes cannot take that long")
    if value * 1000 != int(value * 1000):
        raise BackendError(f"{text!r}: seconds have at most 3 decimals (whole milliseconds)")
    return int(value * 1000)


def _steps(args: argparse.Namespace) -> tuple[MeasureStep, ...] | None:
    """The plan given on the command line, or None when none is."""
    if args.step and args.change:
        raise BackendError("give the plan either as --step options or as --change options, not both")
    if args.change:
        return one_step_per_change(_changes(args.change), expected_ms=_milliseconds(args.step_s))
    if not args.step:
        return None
    steps = []
    for seconds, *pairs in args.step:
        if not pairs:
            raise BackendError(f"--step {seconds}: a step needs at least one KEY=VALUE change")
        steps.append(MeasureStep(changes=_changes(pairs), expected_ms=_milliseconds(seconds)))
    return tuple(steps)


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
        "fault": None if measure.fault is None else f"{measure.fault.ref} ({measure.fault.service})",
        "steps": len(measure.steps),
        "planned": seconds_text(planned_ms(measure.steps)),
        "deadline": measure.deadline.isoformat(timespec="seconds"),
        "reason": measure.reason,
    }


def run_measure_command(args: argparse.Namespace, config: BackendConfig) -> None:
    store = MeasureStore(config.database)
    try:
        if args.measure_command in ("send", "replan"):
            if config.signing_key is None:
                raise BackendError(
                    f"measure {args.measure_command}: the backend config has no [keys] signing_key to sign orders with"
                )
            scheduler = MeasureScheduler(
                store,
                signing_key=load_signing_key(config.signing_key),
                clock=SystemClock(),
                vehicle_mode=lambda _vin: None,
                online=lambda _vin: None,
            )
            steps = _steps(args)
            if args.measure_command == "replan":
                if (steps is None) == (not args.same_plan):
                    raise BackendError("measure replan: give the new steps (--step/--change) or --same-plan")
                measure = scheduler.replan(args.id, steps=steps, max_attempts=args.max_attempts)
                emit([_row(measure)], args.json)
                return
            if steps is None:
                raise BackendError("measure send: give the plan's steps (--step SECONDS KEY=VALUE ... or --change)")
            if store.get(args.id) is not None:
                raise BackendError(f"measure {args.id} exists already; measure ids are unique")
            measure = scheduler.send(
                vin=validate_vin(args.vin, where="VIN argument"),
                measure_id=args.id,
                fault=Fault(ref=args.fault_ref, service=args.fault_service),
                steps=steps,
                allowed_states=tuple(VehicleMode(s) for s in args.state),
                category=MeasureCategory(args.category),
                impairs=tuple(args.impairs),
                deadline=timedelta(hours=args.deadline_hours),
                max_attempts=args.max_attempts,
            )
            emit([_row(measure)], args.json)
        elif args.measure_command == "status":
            emit([_row(measure) for measure in store.all(args.vin)], args.json)
        else:
            if store.get(args.id) is None:
                raise BackendError(f"no measure {args.id}")
            emit(
                [
                    {
                        "attempt": attempt.attempt,
                        "status": attempt.status,
                        "code": attempt.code,
                        "reason": attempt.reason,
                        "sent": attempt.sent.isoformat(timespec="seconds"),
                        "ended": None if attempt.ended is None else attempt.ended.isoformat(timespec="seconds"),
                        "impaired_s": attempt.impaired_s,
                    }
                    for attempt in store.history(args.id)
                ],
                args.json,
            )
    finally:
        store.close()
