"""`tcu-hil`: the bench runner. `tcu-hil demo` is the whole pure-software bench in one command."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

from hil.chaos import ChaosRun
from hil.chaos_schedule import ChaosConfig
from hil.demo import SIGTERM_EXIT, demo_workdir, run_demo, until_sigterm
from hil.devices.replay import ReplayDevice
from hil.fleet_cli import add_fleet_parser, run_fleet_command
from hil.live_view import LiveView
from hil.report import write_report
from hil.runner import ScenarioRunner, run_scenario
from hil.scenario import Step, library, load_scenario, parse_step
from hil.small_disk import SmallDiskUnavailableError
from tcu.cli_errors import os_error_sentence
from tcu.errors import ConfigError
from tcu.runner import configure_logging
from tcu.virtual_time import MAX_SCALE


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
    demo.add_argument(
        "--cardata",
        action="store_true",
        help="the backend also serves CarData to third parties: API, auto-approved sign-in, streaming (Mosquitto)",
    )

    commands.add_parser("list", help="the scenarios shipped with tcu-hil")
    add_fleet_parser(commands)
    run = commands.add_parser("run", help="run a scenario: a name from `tcu-hil list` or a TOML file")
    run.add_argument("scenario")
    run.add_argument("--workdir", type=Path, help="bench folder (default: a new temporary one)")
    run.add_argument("--report", type=Path, help="report folder (default: WORKDIR/report)")
    run.add_argument("--broker", choices=("auto", "mosquitto", "embedded"), default="auto")
    run.add_argument(
        "--time-scale",
        type=_time_scale,
        help="virtual seconds per real second for the whole bench (default: the scenario's; 1 with --port,"
        " since real adapters answer in real time)",
    )
    run.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="bench mode: a real adapter (obd, can, gnss, modem) instead of the virtual device; repeatable",
    )
    run.add_argument(
        "--dbc",
        type=Path,
        action="append",
        default=[],
        help="the agent's CAN database (DBC, KCD, ARXML, SYM) instead of the fictional car; repeatable",
    )
    run.add_argument(
        "--mapping", type=Path, help="the agent's CAN → VSS mapping (format: tcu/vehicle/mapping/can.toml)"
    )
    run.add_argument(
        "--step",
        action="append",
        default=[],
        metavar="'at=10 do=tunnel for_s=5'",
        help="add a step (fault injection from the command line); repeatable",
    )
    replay = commands.add_parser(
        "replay", help="a recorded drive (candump .log, Vector .asc/.blf) as a virtual SLCAN adapter on a pty"
    )
    replay.add_argument("recording", type=Path)
    replay.add_argument("--speed", type=float, default=1.0, help="times the recorded speed (default 1.0)")
    replay.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    replay.add_argument("--channel", help="only this channel of a multi-channel recording (e.g. 0, can1)")
    replay.add_argument("--link", type=Path, help="also reachable at this path (a symlink), e.g. /tmp/ttyREPLAY")
    chaos = commands.add_parser(
        "chaos", help="seeded SIGKILLs, a SIGSTOPped broker and a full 2 MB disk; audits every sequence number"
    )
    chaos.add_argument("--seed", type=int, action="append", help="repeatable (default: 1)")
    chaos.add_argument("--seconds", type=float, help="the fault window of each run (default 40)")
    chaos.add_argument("--interval", type=float, help="telemetry interval in seconds (default 0.02)")
    chaos.add_argument("--max-records", type=int, help="the agent's queue bound (default 300)")
    chaos.add_argument("--disk-kib", type=int, help="size of the data directory's filesystem (default 2048)")
    chaos.add_argument("--workdir", type=Path, help="bench folder (default: a new temporary one)")
    return parser


def _chaos(args: argparse.Namespace) -> int:
    """Each seed in turn; the report of each, and 1 if any run lost, duplicated or misreported a record."""
    workdir = demo_workdir(args.workdir)
    failed = []
    for seed in args.seed or [1]:
        chosen = {
            "seconds": args.seconds,
            "telemetry_interval_s": args.interval,
            "max_records": args.max_records,
            "disk_bytes": None if args.disk_kib is None else args.disk_kib * 1024,
        }
        settings = ChaosConfig(seed=seed, **{key: value for key, value in chosen.items() if value is not None})
        run = ChaosRun(settings, workdir / f"seed-{seed}", on_line=print)
        try:
            report = asyncio.run(run.run())
        except SmallDiskUnavailableError as exc:
            print(f"tcu-hil: chaos needs a real small filesystem: {exc}", file=sys.stderr)
            return 2
        print(report.describe(), flush=True)
        if not report.ok:
            failed.append(seed)
    if failed:
        print(f"FAILED seed(s): {', '.join(map(str, failed))}; logs in {workdir}", file=sys.stderr)
    return 1 if failed else 0


def _replay(args: argparse.Namespace) -> int:
    """Serve the recording until it ends (or Ctrl-C); the summary line last."""

    async def serve() -> str:
        device = ReplayDevice(
            args.recording,
            speed=args.speed,
            loop=args.loop,
            channel=args.channel,
            link_path=None if args.link is None else str(args.link),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with device:
            how = "looped until Ctrl-C" if args.loop else "once"
            print(f"replaying {args.recording} at speed {args.speed:g}, {how}, on {device.path}", flush=True)
            print(f'point the agent at it:  [sources.can]  port = "{device.path}"', flush=True)
            waits = {asyncio.ensure_future(device.finished.wait()), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            summary = device.summary()
            if not stop.is_set():  # the end: the host reads the last frames before the pty goes away
                await asyncio.sleep(1.0)
            return summary

    print(asyncio.run(serve()), flush=True)
    return 0


def _value(text: str) -> object:
    """A TOML scalar (10, 0.3, true, "x"), or else the bare word as a string: do=tunnel works."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _step(text: str, *, duration_s: float) -> Step:
    """'at=10 do=tunnel for_s=5' → a Step, checked as a `[[step]]` table is."""
    fields: dict[str, object] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError(f"--step {text!r}: {token!r} is not key=value")
        fields[key] = _value(value)
    return parse_step(fields, duration_s=duration_s, where=f"--step {text!r}")


def _time_scale(text: str) -> float:
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < scale <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"{text}: expected a number above 0 and at most {MAX_SCALE:g}")
    return scale


def _run(args: argparse.Namespace) -> int:
    path = Path(args.scenario)
    if path.suffix != ".toml" and args.scenario not in library() and not path.is_file():
        raise ConfigError(
            f"no scenario {args.scenario!r} in the library ({', '.join(library())}) nor a file of that name"
        )
    scenario = load_scenario(path if path.suffix == ".toml" else library().get(args.scenario, path))
    extra = tuple(_step(text, duration_s=scenario.duration_s) for text in args.step)
    scenario = replace(
        scenario,
        steps=tuple(sorted(scenario.steps + extra, key=lambda s: s.at)),
        # Real adapters answer in real time: their timeouts must not be scaled unless asked for.
        time_scale=args.time_scale or (1.0 if args.port else scenario.time_scale),
    )
    workdir = demo_workdir(args.workdir)
    view = LiveView(scenario.name, scenario.duration_s)
    real_ports = dict(item.split("=", 1) for item in args.port if "=" in item)
    unnamed = set(real_ports) - {"obd", "can", "gnss", "modem"}
    if unnamed or len(real_ports) != len(args.port):
        raise ConfigError(f"--port: expected NAME=PATH with NAME one of obd, can, gnss, modem; got {args.port}")
    runner = ScenarioRunner(
        scenario,
        workdir,
        broker_choice=args.broker,
        on_sample=view.on_sample,
        on_event=view.on_event,
        real_ports=real_ports,
        can_dbc=args.dbc,
        can_mapping=args.mapping,
    )
    timeline = run_scenario(runner)
    try:
        report = write_report(timeline, args.report or workdir / "report")
    except ImportError as exc:  # matplotlib comes with the hil extra
        raise ConfigError(f"cannot draw the report ({exc}): pip install 'tcu-sim[hil]'") from exc
    view.finish(timeline, report)
    if not timeline.expectations:
        print("FAILED: the scenario checked nothing (add [[expect]] entries)", file=sys.stderr)
        return 1
    return 0 if timeline.passed else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"tcu-hil: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a --workdir that is a file: a sentence, not a traceback
        print(f"tcu-hil: error: {os_error_sentence(exc)}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "list":
        for name, path in library().items():
            print(f"{name:22} {load_scenario(path).description}")
        return 0
    if args.command == "run":
        return _run(args)
    if args.command == "chaos":
        return _chaos(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "fleet":
        return run_fleet_command(args)
    if args.command == "demo":
        workdir = demo_workdir(args.workdir)
        if (workdir / "keys").exists():  # a bench keeps its keys: a second run there would replace them
            raise ConfigError(f"{workdir} holds an earlier bench (keys/): remove it or choose another --workdir")
        try:
            result = asyncio.run(
                until_sigterm(
                    run_demo(
                        workdir,
                        duration_s=args.duration or None,
                        broker_choice=args.broker,
                        telemetry_interval_s=args.interval,
                        cardata=args.cardata,
                    )
                )
            )
        except KeyboardInterrupt:
            return 130
        except asyncio.CancelledError:  # SIGTERM (until_sigterm): the broker is stopped already
            return SIGTERM_EXIT
        finally:
            if args.workdir is None:  # a bench folder nobody asked to keep (it holds keys): gone with the demo
                shutil.rmtree(workdir, ignore_errors=True)
        return 0 if result.ok else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
