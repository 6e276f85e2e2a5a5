"""The benchmark suite in one command, printing one table:

    python -m bench              # about five minutes on the 2-core machine; needs mosquitto
    python -m bench --quick      # a smaller fleet and shorter windows, about two minutes
    python -m bench --json results.json

Each figure comes from the same code as its own script (bench/bench_*.py), which gives more detail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import bench_ecall, bench_ecall_slow_disk, bench_fleet, bench_msd, bench_sources, bench_uplink
from hil.broker import MosquittoBroker
from hil.layout import DEMO_VIN, BenchLayout
from telematics_wire.msd import MsdCodec


@dataclass(frozen=True, slots=True)
class Row:
    measure: str
    value: str
    goal: str


async def agent_rss_mb(seconds: float) -> float:
    """Resident memory of one `tcu run` process on the simulated drive, after `seconds`."""
    with tempfile.TemporaryDirectory(prefix="tcu-bench-rss-") as tmp:
        broker = MosquittoBroker(Path(tmp) / "mosquitto")
        layout = BenchLayout(root=Path(tmp), broker_url=broker.url)
        layout.create_backend()
        config = layout.add_vehicle(DEMO_VIN, telemetry_interval_s=1.0)
        async with broker:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tcu.cli",
                "--log-level",
                "error",
                "run",
                "--config",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
            )
            try:
                await asyncio.sleep(seconds)
                status = await asyncio.to_thread(Path(f"/proc/{process.pid}/status").read_text)
                rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            finally:
                process.terminate()
                await process.wait()
    return rss_kb / 1024


def run_suite(quick: bool) -> list[Row]:
    rows: list[Row] = []
    seconds = 1.0 if quick else 2.0

    uplink = asyncio.run(bench_uplink.main_async(argparse.Namespace(records=5_000 if quick else 10_000)))
    rows += [
        Row(
            "telemetry sealed + queued (batches of 100)",
            f"{uplink['sealed_queued_per_s_batch100']:,.0f} records/s",
            ">= 5,000",
        ),
        Row("end to end through Mosquitto", f"{uplink['end_to_end_per_s']:,.0f} records/s", ">= 1,000"),
        Row("backlog of 3,600 records drained", f"{uplink['backlog_3600_drain_s']:.1f} s", "< 10 s"),
    ]

    data, frames = bench_sources.bus_bytes(10.0)
    frames_per_s, _signals_per_s = bench_sources.slcan_rate(data, frames, seconds)
    rows.append(Row("SLCAN frames decoded to VSS signals", f"{frames_per_s:,.0f} frames/s", ">= 20,000"))
    delays = sorted(d * 1000 for d in asyncio.run(bench_sources.latency(500 if quick else 2000)))
    rows.append(Row("pty frame → vehicle state latency p99", f"{delays[int(len(delays) * 0.99) - 1]:.2f} ms", "< 5 ms"))

    latencies = sorted(x * 1000 for x in asyncio.run(bench_ecall.measure(50 if quick else 200)))
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)) - 1)]
    rows.append(
        Row("crash → MSD at the PSAP p50 / p99", f"{statistics.median(latencies):.2f} / {p99:.2f} ms", "p99 < 50 ms")
    )
    with tempfile.TemporaryDirectory(prefix="tcu-bench-slow-disk-") as tmp:
        slow_disk = asyncio.run(bench_ecall_slow_disk.measure(50 if quick else 200, fsync_s=0.5, directory=Path(tmp)))
    dial_p50, dial_p99, _ = bench_ecall_slow_disk.percentiles(slow_disk.dial_s)
    rows.append(Row("crash → dial, commits +500 ms, p50 / p99", f"{dial_p50:.2f} / {dial_p99:.2f} ms", "p99 < 50 ms"))
    rate = bench_msd.round_trips_per_second(MsdCodec(), 2, seconds)
    rows.append(Row("MSD encode + decode", f"{rate:,.0f} /s", "—"))

    rows.append(Row("agent RSS (simulated drive, 1 process)", f"{asyncio.run(agent_rss_mb(8.0)):.0f} MB", "—"))

    vehicles = 300 if quick else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        with tempfile.TemporaryDirectory(prefix="tcu-bench-fleet-") as tmp:
            fleet = asyncio.run(bench_fleet.run_fleet(Path(tmp), vehicles, 20.0 if quick else 30.0, "normal", 30.0))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    verdict = "no loss" if fleet.passed else f"FAILED: lost {fleet.lost}"
    rows.append(
        Row(
            f"fleet: {vehicles} TCUs in one process, 1 record/s each",
            f"{fleet.records_per_vehicle_s:.3f} rec/s each, {verdict}",
            ">= 1,000 TCUs, no loss",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = run_suite(args.quick)
    width = max(len(r.measure) for r in rows)
    print(f"\n{'measure':{width}}  {'result':38}  goal")
    for row in rows:
        print(f"{row.measure:{width}}  {row.value:38}  {row.goal}")
    if args.json:
        with contextlib.suppress(OSError):
            args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
