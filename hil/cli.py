"""`tcu-hil`: the bench runner. `tcu-hil demo` is the whole pure-software bench in one command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from hil.demo import demo_workdir, run_demo
from tcu.runner import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tcu-hil", description="Hardware-in-the-loop bench for the TCU")
    parser.add_argument("--log-level", default="warning")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="broker + backend stub + agent on a simulated drive, live")
    demo.add_argument("--duration", type=float, default=30.0, help="seconds; 0 runs until Ctrl-C")
    demo.add_argument("--workdir", type=Path, help="bench folder (default: a new temporary one)")
    demo.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "embedded"),
        default="auto",
        help="auto: local Mosquitto when installed, embedded amqtt otherwise",
    )
    demo.add_argument("--interval", type=float, default=1.0, help="telemetry interval in seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "demo":
        try:
            result = asyncio.run(
                run_demo(
                    demo_workdir(args.workdir),
                    duration_s=args.duration or None,
                    broker_choice=args.broker,
                    telemetry_interval_s=args.interval,
                )
            )
        except KeyboardInterrupt:
            return 130
        return 0 if result.ok else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
