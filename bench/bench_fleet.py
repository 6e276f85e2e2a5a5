"""Fleet scale: how many simulated TCUs one process runs against one Mosquitto, 1 record/s each, no loss.

    python -m bench.bench_fleet --vehicles 250 500 1000 --seconds 60
    python -m bench.bench_fleet --vehicles 1000 5000 --processes 2   # over processes (`tcu-hil fleet`)

Each vehicle is a complete agent (simulated drive, telemetry every second, durable SQLite queue,
its own MQTT connection, services and remote-measure engines); all of them share one process and one
event loop. The backend stub runs in its own process, Mosquitto in its own. A run passes when the
vehicles kept to 1 record/s (>= 0.95 achieved in the measured window) and, after they stop
producing, every record each vehicle queued is in the backend's database within the drain window.
Goal (issue 6): >= 1,000 vehicles on the 2-core machine.

With `--processes N` (N > 1) the vehicles are spread over N processes and the backend runs N ingest
workers on a shared subscription (`hil.fleet`, the same run as `tcu-hil fleet`); goal (issue 15): 5,000
vehicles on 2 cores with event-loop lag p99 < 100 ms, nothing lost, <= 0.3 ms CPU per vehicle-second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hil import fleet
from hil.broker import MosquittoBroker
from hil.layout import BenchLayout, vin_for
from tcu.app import Agent
from tcu.config import load_agent_config


@dataclass
class FleetResult:
    vehicles: int
    seconds: float
    connected: int
    records_per_vehicle_s: float
    produced: int
    stored: int
    lost: int
    drain_s: float
    loop_lag_p50_ms: float
    loop_lag_p99_ms: float
    cpu_percent: float
    rss_mb: float
    passed: bool


async def _loop_lag(samples: list[float], period: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(period)
        samples.append((loop.time() - start - period) * 1000)


def _stored_per_vehicle(database: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        return dict(db.execute("SELECT vin, count(*) FROM records GROUP BY vin").fetchall())


async def run_fleet(root: Path, vehicles: int, seconds: float, sync: str, drain_window_s: float) -> FleetResult:
    broker = MosquittoBroker(root / "mosquitto")
    layout = BenchLayout(root=root, broker_url=broker.url)
    layout.create_backend()
    # A fleet process has no person reading each car's status.json: write it every 30 s, not every second.
    extra = (
        f'\n[queue]\nsynchronous = "{sync}"\n[uplink]\nreconnect_base_s = 0.5\nreconnect_cap_s = 5\n'
        "[vehicle]\nstatus_interval_s = 30\n"
    )
    configs = layout.add_vehicles((vin_for(i) for i in range(vehicles)), telemetry_interval_s=1.0, extra=extra)
    for config in configs:  # one simulated-drive update per second, like the telemetry
        config.write_text(
            config.read_text().replace(
                "[simulation]\nenabled = true", "[simulation]\nenabled = true\nupdate_interval_s = 1.0"
            )
        )
    async with broker:
        backend = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "backend_stub.cli",
            "--log-level",
            "error",
            "run",
            "--config",
            str(layout.backend_config),
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            agents = [Agent(load_agent_config(c, env={})) for c in configs]
            lags: list[float] = []
            usage_before = resource.getrusage(resource.RUSAGE_SELF)
            wall_before = time.perf_counter()
            async with asyncio.TaskGroup() as tasks:
                runners = [tasks.create_task(a.run(), name=f"agent-{i}") for i, a in enumerate(agents)]
                lag_task = tasks.create_task(_loop_lag(lags), name="loop-lag")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(60):
                        await asyncio.gather(*(a.session.wait_connected() for a in agents))
                connected = sum(a.session.stats.connected for a in agents)
                lags.clear()
                window_start = {a.config.vin: a.outbox.stats().next_seq for a in agents}
                await asyncio.sleep(seconds)
                in_window = sum(a.outbox.stats().next_seq - window_start[a.config.vin] for a in agents)
                for agent in agents:
                    agent.telemetry.enabled = False
                drain_start = time.perf_counter()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(drain_window_s):
                        while any(a.outbox.stats().depth for a in agents):  # noqa: ASYNC110
                            await asyncio.sleep(0.2)
                drain_s = time.perf_counter() - drain_start
                await asyncio.sleep(1.0)  # the backend commits its last batch
                produced = {a.config.vin: a.outbox.stats().next_seq - 1 for a in agents}
                usage_after = resource.getrusage(resource.RUSAGE_SELF)
                wall = time.perf_counter() - wall_before
                for task in [*runners, lag_task]:
                    task.cancel()
        finally:
            backend.terminate()
            await backend.wait()
    stored = _stored_per_vehicle(root / "backend.sqlite3")
    lost = sum(max(produced[vin] - stored.get(vin, 0), 0) for vin in produced)
    cpu = (usage_after.ru_utime + usage_after.ru_stime - usage_before.ru_utime - usage_before.ru_stime) / wall * 100
    quantiles = statistics.quantiles(lags, n=100) if len(lags) >= 2 else [0.0] * 99
    return FleetResult(
        vehicles=vehicles,
        seconds=seconds,
        connected=connected,
        records_per_vehicle_s=round(in_window / vehicles / seconds, 3),
        produced=sum(produced.values()),
        stored=sum(stored.values()),
        lost=lost,
        drain_s=round(drain_s, 2),
        loop_lag_p50_ms=round(quantiles[49], 1),
        loop_lag_p99_ms=round(quantiles[98], 1),
        cpu_percent=round(cpu, 1),
        rss_mb=round(usage_after.ru_maxrss / 1024, 1),
        passed=lost == 0
        and connected == vehicles
        and drain_s < drain_window_s
        and in_window / vehicles / seconds >= 0.95,
    )


async def run_fleet_processes(
    root: Path, vehicles: int, processes: int, seconds: float, *, sync: str, drain_window_s: float
) -> fleet.FleetResult:
    """The fleet over `processes` processes and as many backend ingest workers (`hil.fleet`)."""
    plan = fleet.FleetPlan(
        vehicles=vehicles, processes=processes, seconds=seconds, sync=sync, drain_window_s=drain_window_s
    )
    return await fleet.run_fleet(root, plan)


def _main_processes(args: argparse.Namespace) -> None:
    results = []
    for count in args.vehicles:
        with tempfile.TemporaryDirectory(prefix="tcu-fleet-") as tmp:
            result = asyncio.run(
                run_fleet_processes(
                    Path(tmp), count, args.processes, args.seconds, sync=args.sync, drain_window_s=args.drain_window
                )
            )
        results.append(result)
        print(json.dumps(asdict(result)), flush=True)
    print("\n" + "\n".join(fleet.summary_lines(results)))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sync", choices=("full", "normal"), default="normal")
    parser.add_argument("--drain-window", type=float, default=30.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--processes", type=int, default=1, help="fleet processes (> 1: hil.fleet, N ingest workers)")
    args = parser.parse_args()
    with fleet.raised_open_file_limit():
        if args.processes > 1:
            _main_processes(args)
        else:
            _main_one_process(args)


def _main_one_process(args: argparse.Namespace) -> None:
    results = []
    for count in args.vehicles:
        with tempfile.TemporaryDirectory(prefix="tcu-fleet-") as tmp:
            result = asyncio.run(run_fleet(Path(tmp), count, args.seconds, args.sync, args.drain_window))
        results.append(result)
        print(json.dumps(asdict(result)), flush=True)
    print(
        f"\n{'vehicles':>8} {'produced':>9} {'stored':>9} {'lost':>5} {'drain s':>8} {'lag p99 ms':>10} "
        f"{'CPU %':>6} {'ms CPU/v/s':>10} {'RSS MB':>7}  result"
    )
    for r in results:
        print(
            f"{r.vehicles:8d} {r.produced:9d} {r.stored:9d} {r.lost:5d} {r.drain_s:8.1f} {r.loop_lag_p99_ms:10.1f} "
            f"{r.cpu_percent:6.1f} {r.cpu_percent * 10 / r.vehicles:10.3f} {r.rss_mb:7.1f}  "
            f"{'PASS' if r.passed else 'FAIL'}"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
