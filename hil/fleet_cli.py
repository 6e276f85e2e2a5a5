"""`tcu-hil fleet`: the command line of `hil.fleet` (its parser and the run, printed or as JSON)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from hil.fleet import FleetPlan, raised_open_file_limit, run_fleet, summary_lines


def add_fleet_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = commands.add_parser(
        "fleet", help="simulated TCUs over several processes, backend with several ingest workers, no-loss audit"
    )
    fleet.add_argument("--vehicles", type=int, default=1000)
    fleet.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="fleet processes (default: cores)")
    fleet.add_argument("--ingest-workers", type=int, help="backend ingest processes (default: --processes)")
    fleet.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    fleet.add_argument("--sync", choices=("full", "normal"), default="normal", help="the vehicles' queue fsync")
    fleet.add_argument("--drain-window", type=float, default=30.0, help="seconds for the queues to empty after it")
    fleet.add_argument("--workdir", type=Path, help="bench folder, kept (default: a temporary one, removed)")
    fleet.add_argument("--json", action="store_true", help="print the result as JSON")


def run_fleet_command(args: argparse.Namespace) -> int:
    plan = FleetPlan(
        vehicles=args.vehicles,
        processes=args.processes,
        ingest_workers=args.ingest_workers,
        seconds=args.seconds,
        sync=args.sync,
        drain_window_s=args.drain_window,
    )
    root = args.workdir or Path(tempfile.mkdtemp(prefix="tcu-fleet-"))
    try:
        with raised_open_file_limit():
            result = asyncio.run(run_fleet(root, plan))
    finally:
        if args.workdir is None:  # keys and every vehicle's data: gone with the run nobody asked to keep
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print("\n".join(summary_lines([result])))
    return 0 if result.passed else 1
