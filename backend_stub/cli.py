"""`backend-stub`: run the backend, manage keys and vehicles, and query what vehicles sent.

This module wires the command line: the top-level parser, `run` and `keygen`, and the hand-over to
each family of commands (enroll_cli, query_cli, provision_cli, measure_cli, invoice_cli,
account_cli, cardata_cli), which add their own parsers and carry them out. Every refusal ends as one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

from backend_stub.account_cli import COMMANDS as ACCOUNT_COMMANDS
from backend_stub.account_cli import add_account_parsers, run_account_command
from backend_stub.app import BackendStub
from backend_stub.cardata_cli import COMMAND as CARDATA_COMMAND
from backend_stub.cardata_cli import add_cardata_parser, run_cardata_command
from backend_stub.config import BackendConfig, load_backend_config
from backend_stub.enroll_cli import add_enroll_parser, run_enroll
from backend_stub.errors import BackendConfigError, BackendError
from backend_stub.ingest_worker import run_standalone
from backend_stub.invoice_cli import add_invoice_parser, run_invoice_command
from backend_stub.measure_cli import add_measure_parser, run_measure_command
from backend_stub.provision_cli import add_provision_parser, run_provision_command
from backend_stub.query_cli import COMMANDS as QUERY_COMMANDS
from backend_stub.query_cli import add_query_parsers, run_query_command
from tcu.cli_errors import database_error_sentence, os_error_sentence
from tcu.errors import TcuError
from tcu.runner import configure_logging, run_service
from telematics_wire.errors import WireError
from telematics_wire.keys import write_box_keypair, write_signing_keypair


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backend-stub", description="The backend a TCU talks to")
    parser.add_argument("--log-level", default="info")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="ingest vehicle data from the broker")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument(
        "--ingest-workers", type=int, help="ingest processes on a shared subscription (default: [ingest] workers, 1)"
    )
    worker = commands.add_parser(
        "ingest-worker", help="one more ingest worker, on any host: needs the PostgreSQL record store ([store] url)"
    )
    worker.add_argument("--config", type=Path, required=True)
    worker.add_argument("--name", help="the worker's MQTT client name, unique per worker (default: the host name)")
    keygen = commands.add_parser("keygen", help="create the backend's X25519 and Ed25519 key pairs")
    keygen.add_argument("--dir", type=Path, required=True)
    add_enroll_parser(commands)
    add_query_parsers(commands)
    add_provision_parser(commands)
    add_measure_parser(commands)
    add_invoice_parser(commands)
    add_account_parsers(commands)
    add_cardata_parser(commands)
    return parser


def _run_command(args: argparse.Namespace, config: BackendConfig) -> None:
    if args.command == "run":
        if args.ingest_workers is not None:
            if args.ingest_workers < 1:
                raise BackendConfigError(f"--ingest-workers must be at least 1, got {args.ingest_workers}")
            config = replace(config, ingest_workers=args.ingest_workers)
        run_service(BackendStub(config, log_level=args.log_level).run())
    elif args.command == "ingest-worker":
        run_standalone(config, args.name)
    elif args.command == "enroll":
        run_enroll(args, config)
    elif args.command in QUERY_COMMANDS:
        run_query_command(args, config)
    elif args.command == "provision":
        run_provision_command(args, config)
    elif args.command == "measure":
        run_measure_command(args, config)
    elif args.command == "invoice":
        run_invoice_command(args, config)
    elif args.command in ACCOUNT_COMMANDS:
        run_account_command(args, config)
    elif args.command == CARDATA_COMMAND:
        run_cardata_command(args, config)


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
        _run_command(args, config)
    except (TcuError, WireError, BackendError) as exc:
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
