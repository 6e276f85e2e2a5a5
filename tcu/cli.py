"""`tcu`: the agent's command line. Parses, loads config, sets up logging, calls asyncio."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tcu.app import Agent
from tcu.clock import SystemClock
from tcu.config import load_agent_config
from tcu.ecall.msd_cli import decode_command, msd_command
from tcu.errors import TcuError
from tcu.keys import write_box_keypair
from tcu.runner import configure_logging, run_service


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tcu", description="Telematics control unit agent")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the agent")
    run.add_argument("--config", type=Path, required=True, help="agent TOML file")

    keygen = commands.add_parser("keygen", help="create the vehicle's X25519 key pair (0600 private file)")
    keygen.add_argument("--dir", type=Path, required=True)
    keygen.add_argument("--name", default="vehicle")

    queue = commands.add_parser("queue", help="show the durable queue's state")
    queue.add_argument("--config", type=Path, required=True)
    queue.add_argument("--json", action="store_true")

    check = commands.add_parser("check-config", help="validate a config file and its keys, then exit")
    check.add_argument("--config", type=Path, required=True)

    ecall = commands.add_parser("ecall", help="eCall tools").add_subparsers(dest="ecall_command", required=True)
    msd = ecall.add_parser("msd", help="encode an MSD described in JSON; prints its UPER hex")
    msd.add_argument("--json", dest="json_file", required=True, help="JSON file, or - for standard input")
    msd.add_argument("--version", type=int, choices=(2, 3), default=2, help="MSD format version")
    msd.add_argument("--explicit-propulsion", action="store_true", help="send FALSE propulsion flags too")
    decode = ecall.add_parser("decode", help="decode an MSD given in hex; prints JSON")
    decode.add_argument("hex")
    return parser


def _queue_stats(config_path: Path, as_json: bool) -> None:
    agent = Agent(load_agent_config(config_path), clock=SystemClock())
    with agent.outbox:
        stats = agent.outbox.stats()
    if as_json:
        print(
            json.dumps(
                {
                    "depth": stats.depth,
                    "by_priority": stats.depth_by_priority,
                    "next_seq": stats.next_seq,
                    "dropped_total": stats.dropped_total,
                }
            )
        )
    else:
        print(f"queued records: {stats.depth} {stats.depth_by_priority}")
        print(f"next sequence number: {stats.next_seq}; dropped telemetry so far: {stats.dropped_total}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        if args.command == "run":
            agent = Agent(load_agent_config(args.config))
            run_service(agent.run())
        elif args.command == "keygen":
            private, public = write_box_keypair(args.dir, args.name)
            print(f"wrote {private} (private, 0600) and {public}")
        elif args.command == "queue":
            _queue_stats(args.config, args.json)
        elif args.command == "check-config":
            Agent(load_agent_config(args.config))
            print(f"{args.config}: OK")
        elif args.command == "ecall" and args.ecall_command == "msd":
            print(msd_command(args.json_file, version=args.version, explicit_propulsion=args.explicit_propulsion))
        elif args.command == "ecall":
            print(decode_command(args.hex))
    except TcuError as exc:
        print(f"tcu: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
