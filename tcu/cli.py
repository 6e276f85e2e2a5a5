"""`tcu`: the agent's command line. Parses, loads config, sets up logging, calls asyncio."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tcu.app import Agent
from tcu.cli_errors import os_error_sentence
from tcu.clock import SystemClock
from tcu.config import load_agent_config
from tcu.device_ports import port_problems
from tcu.errors import ConfigError, TcuError
from tcu.runner import configure_logging, run_service
from tcu.service_unit import SYSTEM_UNIT_DIR, UNIT_NAME, UnitOptions, install_unit, render_unit
from tcu.services.personal import DriverProfile, PersonalStore
from tcu.status import read_status
from tcu.systemd import Notifier
from tcu.uplink.queue_store import OutboxStats
from tcu.virtual_time import virtual_or_real_clock
from telematics_wire.catalogue import Category
from telematics_wire.errors import WireError
from telematics_wire.keys import write_box_keypair
from telematics_wire.records import Record, RecordKind, to_millis


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tcu", description="Telematics control unit agent")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the agent")
    run.add_argument("--config", type=Path, required=True, help="agent TOML file")
    # A HIL bench's virtual time (tcu.virtual_time), handed over by its runner; never set in a car, so
    # hidden, and a command-line flag rather than an environment variable that could linger in a unit.
    run.add_argument("--virtual-time", help=argparse.SUPPRESS)

    keygen = commands.add_parser("keygen", help="create the vehicle's X25519 key pair (0600 private file)")
    keygen.add_argument("--dir", type=Path, required=True)
    keygen.add_argument("--name", default="vehicle")

    queue = commands.add_parser("queue", help="show the durable queue's state")
    queue.add_argument("--config", type=Path, required=True)
    queue.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="the running agent's status (from its status.json)")
    status.add_argument("--config", type=Path, required=True)

    check = commands.add_parser("check-config", help="validate a config file and its keys, then exit")
    check.add_argument("--config", type=Path, required=True)

    privacy = commands.add_parser("privacy", help="show or change what the customer allows to be transmitted")
    privacy.add_argument("--config", type=Path, required=True)
    privacy.add_argument("category", nargs="?", choices=[c.value for c in Category])
    privacy.add_argument("setting", nargs="?", choices=("allow", "block"))

    profile = commands.add_parser("profile", help="driver profiles held in the vehicle (at most three)")
    profile.add_argument("--config", type=Path, required=True)
    profile.add_argument("action", choices=("list", "add"))
    profile.add_argument("name", nargs="?")
    profile.add_argument("--seat", type=int, default=0)
    profile.add_argument("--climate", type=float, default=21.0)

    owner = commands.add_parser("owner-change", help="wipe personal data for a new owner; keeps technical data")
    owner.add_argument("--config", type=Path, required=True)

    account = commands.add_parser("account", help="the paired ConnectedDrive account and a security code on display")
    account.add_argument("--config", type=Path, required=True)
    account.add_argument("--json", action="store_true")

    service = commands.add_parser("service", help="install the agent as a systemd service")
    service.add_argument("action", choices=("install", "print"))
    service.add_argument("--config", type=Path, required=True, help="absolute path of the agent TOML file")
    service.add_argument("--user", default="tcu")
    service.add_argument("--python", type=Path, default=Path(sys.executable), help="the venv's python")
    service.add_argument("--unit-dir", type=Path, default=SYSTEM_UNIT_DIR)

    ecall = commands.add_parser("ecall", help="eCall tools").add_subparsers(dest="ecall_command", required=True)
    msd = ecall.add_parser("msd", help="encode an MSD described in JSON; prints its UPER hex")
    msd.add_argument("--json", dest="json_file", required=True, help="JSON file, or - for standard input")
    msd.add_argument("--version", type=int, choices=(2, 3), default=2, help="MSD format version")
    msd.add_argument("--explicit-propulsion", action="store_true", help="send FALSE propulsion flags too")
    decode = ecall.add_parser("decode", help="decode an MSD given in hex; prints JSON")
    decode.add_argument("hex")
    return parser


def _queue_stats(config_path: Path, as_json: bool) -> None:
    stats = asyncio.run(_read_queue_stats(Agent(load_agent_config(config_path), clock=SystemClock())))
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


async def _read_queue_stats(agent: Agent) -> OutboxStats:
    async with agent.outbox:
        return agent.outbox.stats()


def _privacy(args: argparse.Namespace) -> None:
    store = PersonalStore(load_agent_config(args.config).personal_path)
    data = store.load()
    if args.category is not None:
        if args.setting is None:
            raise ConfigError("privacy: give allow or block after the category")
        data = data.with_consent(Category(args.category), args.setting == "allow")
        asyncio.run(store.save(data))
    for category in Category:
        print(f"{category.value:15} {'allowed' if data.allows(category) else 'blocked'}")


def _profile(args: argparse.Namespace) -> None:
    store = PersonalStore(load_agent_config(args.config).personal_path)
    data = store.load()
    if args.action == "add":
        if not args.name:
            raise ConfigError("profile add: give the profile's name")
        # Refused without a paired ConnectedDrive account, beyond three profiles (privacy part B).
        data = data.with_profile(DriverProfile(name=args.name, seat_position=args.seat, climate_c=args.climate))
        asyncio.run(store.save(data))
    for profile in data.profiles:
        print(f"{profile.name}: seat {profile.seat_position}, climate {profile.climate_c} °C")


def _account(args: argparse.Namespace) -> None:
    """What the car's display shows: paired accounts, and the security code while it is valid."""
    data = PersonalStore(load_agent_config(args.config).personal_path).load()
    code = data.security_code
    if code is not None and code.expires_ms <= to_millis(SystemClock().now()):
        code = None
    shown = {
        "paired_accounts": list(data.paired_accounts),
        "security_code": None if code is None else {"code": code.code, "account": code.account},
        "driver_profiles": len(data.profiles),
    }
    if args.json:
        print(json.dumps(shown))
        return
    print(f"paired accounts: {', '.join(data.paired_accounts) or 'none'}")
    if code is not None:
        print(f"security code for account {code.account}: {code.code} (enter it in the portal)")


def _owner_change(config_path: Path) -> None:
    """AGB 7.2: the car's personal data goes; the report tells the backend to unlink the account."""
    agent = Agent(load_agent_config(config_path))
    report = asyncio.run(agent.personal.owner_change())
    asyncio.run(_queue_once(agent, Record(kind=RecordKind.EVENT, created=agent.clock.now(), body=report)))
    print(json.dumps(report, indent=2))


async def _queue_once(agent: Agent, record: Record) -> None:
    async with agent.outbox:  # a running agent sends it from the shared queue
        await agent.outbox.put(record)


def _service(args: argparse.Namespace) -> None:
    config = load_agent_config(args.config)  # refuse to install a service that could not start
    options = UnitOptions(config=args.config.resolve(), user=args.user, python=args.python, data_dir=config.data_dir)
    if args.action == "print":
        print(render_unit(options), end="")
        return
    path = install_unit(options, args.unit_dir)
    print(f"wrote {path}\nnext: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")


def _check_config(config_path: Path) -> None:
    """Everything `tcu run` would refuse, plus the device ports: the legal eCall's modem must exist."""
    config = load_agent_config(config_path)
    agent = Agent(config)
    problems = port_problems(config)
    for problem in problems:
        if not problem.fatal:
            print(f"tcu: warning: {problem.sentence(config_path)}", file=sys.stderr)
    fatal = [problem for problem in problems if problem.fatal]
    if fatal:
        raise ConfigError(fatal[0].sentence(config_path))
    print(f"{config_path}: OK")
    print(_mapping_tables(agent), end="")


def _table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        f"\n{title}",
        *("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)),
    ]
    return "\n".join(lines) + "\n"


def _mapping_tables(agent: Agent) -> str:
    """The resolved signal mappings, as `tcu check-config` shows them."""
    out = ""
    decoder = agent.sources.can_decoder
    if decoder is not None:
        rows = [
            (
                e.source,
                e.target.path,
                e.datatype,
                e.conversion,
                e.values or "-",
                e.origin.removeprefix("CAN mapping ").split(" '")[0],
            )
            for e in sorted(decoder.entries, key=lambda e: e.target.path)
        ]
        header = ("source signal", "VSS path", "type", "conversion", "values", "from")
        out += _table(f"CAN mapping (source {decoder.source!r}):", header, rows)
    obd = agent.sources.obd_mapping
    if obd is not None:
        pids = [(m.request, m.path, f"{m.interval_s:g} s", m.describe()) for m in obd.pids]
        out += _table(f"OBD mapping (source {obd.source!r}):", ("request", "VSS path", "every", "formula"), pids)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        if args.command == "run":
            clock = virtual_or_real_clock(args.virtual_time)
            agent = Agent(load_agent_config(args.config), notifier=Notifier(), clock=clock)
            run_service(agent.run(), clock=clock)
        elif args.command == "keygen":
            private, public = write_box_keypair(args.dir, args.name)
            print(f"wrote {private} (private, 0600) and {public}")
        elif args.command == "queue":
            _queue_stats(args.config, args.json)
        elif args.command == "status":
            config = load_agent_config(args.config)
            current = read_status(config.status_path)
            if current is None:
                raise ConfigError(f"no status at {config.status_path}: is the agent running?")
            print(json.dumps(current, indent=2))
        elif args.command == "check-config":
            _check_config(args.config)
        elif args.command == "service":
            _service(args)
        elif args.command == "privacy":
            _privacy(args)
        elif args.command == "profile":
            _profile(args)
        elif args.command == "owner-change":
            _owner_change(args.config)
        elif args.command == "account":
            _account(args)
        elif args.command == "ecall" and args.ecall_command == "msd":
            from tcu.ecall.msd_cli import msd_command  # noqa: PLC0415 - `tcu run` needs no MSD tools

            print(msd_command(args.json_file, version=args.version, explicit_propulsion=args.explicit_propulsion))
        elif args.command == "ecall":
            from tcu.ecall.msd_cli import decode_command  # noqa: PLC0415 - `tcu run` needs no MSD tools

            print(decode_command(args.hex))
    except (TcuError, WireError) as exc:
        print(f"tcu: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path a person gave that the file system refuses: a sentence, not a traceback
        print(f"tcu: error: {os_error_sentence(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
