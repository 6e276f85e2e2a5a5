"""The benchmark suite in one command: every line against its baseline, measured in the same run.

    python -m bench --quick                      # 205 s on the busy 2-core machine (load ~10); needs mosquitto
    python -m bench                              # longer: more records, a 1,000-TCU fleet
    python -m bench --json bench/history.json    # append the run; print each row's change and regressions
    python -m bench --update-readme --machine-note "2-core machine, 6 agents busy"

Ours and its baseline run interleaved (ours, baseline, ours, baseline, ...: three rounds each) and each
row prints min and median; the ratio is median against median, oriented so that above 1 ours is better
(`bench.comparison`). The goals are the issue's, as ratios where it names one (`bench.suite_rows`); a
row without a baseline (the backlog, the pty latency, the fleet) has a goal on its own figure. Each
figure comes from the same code as its own script (bench/bench_*.py, bench/baseline_*.py), which gives
more detail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from bench import (
    baseline_paho,
    bench_ecall_slow_disk,
    bench_fleet,
    bench_memory,
    bench_msd,
    bench_ng_ecall,
    bench_sources,
    bench_uplink,
    history,
    readme_table,
)
from bench.baseline_asn1tools import asn1tools_round_trips_per_s
from bench.baseline_cantools import python_can_cantools_frames_per_s
from bench.baseline_sqlite import bare_insert_per_s
from bench.comparison import ROUNDS, Better, Contender, Figures, interleave
from bench.suite_rows import Goal, Row
from hil.fleet import FleetResult, raised_open_file_limit
from hil.layout import DEMO_VIN, BenchLayout
from telematics_wire.envelope import seal_record, vehicle_box
from telematics_wire.msd import MsdCodec

_LOGGER = logging.getLogger(__name__)

README = Path(__file__).resolve().parent.parent / "README.md"
BEFORE_ISSUE_15 = "98837c0"  # the last commit of issue 14: the import-time goal is half of its figure


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each measure does: `--quick` keeps the whole suite to about three minutes (205 s at load ~10)."""

    rounds: int
    records: int  # sealed + queued
    end_to_end_records: int
    seconds: float  # per CPU-bound throughput round (SLCAN, MSD)
    latency_samples: int  # pty frames per round
    ecall_runs: int  # crashes per round
    rss_seconds: float
    fleet_vehicles: int
    fleet_seconds: float

    @classmethod
    def for_run(cls, quick: bool, rounds: int) -> Sizes:
        if quick:
            return cls(rounds, 5_000, 1_500, 0.5, 300, 40, 4.0, 200, 15.0)
        return cls(rounds, 20_000, 10_000, 2.0, 1_000, 200, 8.0, 1_000, 30.0)


def _in_thread(function: Callable[..., float], *args: Any, **kwargs: Any) -> Contender:
    """A blocking measure as a contender: run off the loop (a baseline may run its own event loop)."""

    async def run() -> float:
        return await asyncio.to_thread(function, *args, **kwargs)

    return run


async def _versus(ours: Contender, baselines: Sequence[Contender], rounds: int) -> tuple[Figures, list[Figures]]:
    """Ours and its baselines interleaved, round by round, ours first."""
    samples = await interleave([ours, *baselines], rounds)
    return Figures.of(samples[0]), [Figures.of(values) for values in samples[1:]]


def envelope_bytes() -> int:
    """The size of a real sealed telemetry envelope (20 signals, with a queue epoch): the baselines' payload."""
    box = vehicle_box(PrivateKey.generate(), PrivateKey.generate().public_key)
    sizes = [
        len(seal_record(box, DEMO_VIN, index + 1, bench_uplink.telemetry_record(index), epoch=bytes(16)))
        for index in range(100)
    ]
    return round(statistics.mean(sizes))


@contextlib.asynccontextmanager
async def _uplink_bench() -> AsyncIterator[tuple[str, BenchLayout, Path]]:
    with tempfile.TemporaryDirectory(prefix="tcu-bench-uplink-") as tmp:
        async with bench_uplink.bench(Path(tmp)) as (broker, layout):
            scratch = Path(tmp) / "baselines"
            scratch.mkdir()
            yield broker.url, layout, scratch


async def uplink_rows(sizes: Sizes) -> list[Row]:
    payload = envelope_bytes()
    rows: list[Row] = []
    async with _uplink_bench() as (broker_url, layout, scratch):
        ours, (bare,) = await _versus(
            lambda: bench_uplink.measure_sealed_queued(layout, sizes.records, 100),
            [_in_thread(bare_insert_per_s, scratch, sizes.records, 100, payload)],
            sizes.rounds,
        )
        rows.append(
            Row(
                key="sealed_queued",
                measure=f"telemetry sealed + queued, FULL, batches of 100 ({payload} B envelopes)",
                unit="records/s",
                better=Better.HIGHER,
                ours=ours,
                baseline_name=f"bare SQLite INSERT of {payload} B blobs, WAL + FULL, batches of 100",
                baseline=bare,
                goal=Goal.ratio(0.5),
            )
        )
        count = sizes.end_to_end_records
        ours, (plain, into_sqlite) = await _versus(
            lambda: bench_uplink.measure_end_to_end(layout, count, 50),
            [
                _in_thread(baseline_paho.plain_paho_per_s, broker_url, count, payload),
                _in_thread(baseline_paho.paho_into_sqlite_per_s, broker_url, scratch, count, payload),
            ],
            sizes.rounds,
        )
        measure = "records end to end through Mosquitto into the backend's database"
        rows += [
            Row(
                key="end_to_end_vs_paho",
                measure=measure,
                unit="records/s",
                better=Better.HIGHER,
                ours=ours,
                baseline_name=f"plain paho QoS 1 publisher → subscriber, {payload} B, same broker",
                baseline=plain,
                goal=Goal.ratio(0.5),
            ),
            Row(
                key="end_to_end_vs_paho_sqlite",
                measure=measure,
                unit="records/s",
                better=Better.HIGHER,
                ours=ours,
                baseline_name="paho subscriber committing each batch into SQLite (WAL + FULL)",
                baseline=into_sqlite,
            ),
        ]
        drain, _ = await _versus(lambda: bench_uplink.measure_backlog_drain(layout, 3600), [], sizes.rounds)
        rows.append(
            Row(
                key="backlog_drain",
                measure="backlog of 3,600 queued records drained",
                unit="s",
                better=Better.LOWER,
                ours=drain,
                baseline_name="none",
                goal=Goal.bound(10.0),
            )
        )
    return rows


def _slcan_frames_per_s(data: bytes, frames: int, seconds: float) -> float:
    return bench_sources.slcan_rate(data, frames, seconds)[0]


async def can_rows(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    for key, label, (data, frames), worst, goal in (
        ("slcan_bus_mix", "simulated bus mix", bench_sources.bus_bytes(10.0), False, 1.0),
        (
            "slcan_worst_case",
            "worst case: 12-signal frames, every payload new",
            bench_sources.body_bytes(20_000, varying=True),
            True,
            0.5,
        ),
    ):
        ours, (base,) = await _versus(
            _in_thread(_slcan_frames_per_s, data, frames, sizes.seconds),
            [_in_thread(python_can_cantools_frames_per_s, data, sizes.seconds, worst_case=worst)],
            sizes.rounds,
        )
        rows.append(
            Row(
                key=key,
                measure=f"SLCAN frames → typed VSS signals, {label}",
                unit="frames/s",
                better=Better.HIGHER,
                ours=ours,
                baseline_name="python-can's SLCAN line parsing + cantools decode_message, same frames, no mapping",
                baseline=base,
                goal=Goal.ratio(goal),
            )
        )

    async def pty_p99() -> float:
        delays = sorted(d * 1000 for d in await bench_sources.latency(sizes.latency_samples))
        return delays[int(len(delays) * 0.99) - 1]

    latency, _ = await _versus(pty_p99, [], sizes.rounds)
    rows.append(
        Row(
            key="pty_latency_p99",
            measure="frame written on the pty → value in the vehicle state, p99",
            unit="ms",
            better=Better.LOWER,
            ours=latency,
            baseline_name="none",
            goal=Goal.bound(5.0),
        )
    )
    return rows


async def msd_rows(sizes: Sizes) -> list[Row]:
    codec = MsdCodec()
    ours, (base,) = await _versus(
        _in_thread(bench_msd.round_trips_per_second, codec, 2, sizes.seconds),
        [_in_thread(asn1tools_round_trips_per_s, 2, sizes.seconds)],
        sizes.rounds,
    )
    return [
        Row(
            key="msd_round_trip",
            measure="MSD (v2) encode + decode",
            unit="/s",
            better=Better.HIGHER,
            ours=ours,
            baseline_name="asn1tools on the same module, same MSD",
            baseline=base,
            goal=Goal.ratio(1.0),
        )
    ]


async def ecall_rows(sizes: Sizes) -> list[Row]:
    """Crash → MSD at the PSAP (decoded there, its AL-ACK sent at once), reports stored as the agent does."""

    def p99_msd(fsync_s: float) -> Contender:
        async def run() -> float:
            with tempfile.TemporaryDirectory(prefix="tcu-bench-slow-disk-") as tmp:
                result = await bench_ecall_slow_disk.measure(sizes.ecall_runs, fsync_s=fsync_s, directory=Path(tmp))
            return bench_ecall_slow_disk.percentiles(result.msd_s)[1]

        return run

    slow, (untouched, harsher) = await _versus(p99_msd(0.05), [p99_msd(0.0), p99_msd(0.5)], sizes.rounds)
    baseline_name = "the same with the disk untouched"
    ng, (cs,) = await _versus(
        bench_ng_ecall.p99_contender("ng", sizes.ecall_runs),
        [bench_ng_ecall.p99_contender("cs", sizes.ecall_runs)],
        sizes.rounds,
    )
    return [
        Row(
            key="ecall_slow_disk_50ms",
            measure="crash → MSD acknowledged at the PSAP, p99, fsync +50 ms (reports stored as app.py does)",
            unit="ms",
            better=Better.LOWER,
            ours=slow,
            baseline_name=baseline_name,
            baseline=untouched,
            goal=Goal.bound(bench_ecall_slow_disk.GOAL_MS),
        ),
        Row(
            key="ecall_slow_disk_500ms",
            measure="the same, every queue commit +500 ms",
            unit="ms",
            better=Better.LOWER,
            ours=harsher,
            baseline_name=baseline_name,
            baseline=untouched,
            goal=Goal.bound(bench_ecall_slow_disk.GOAL_MS),
        ),
        Row(
            key="ng_ecall_msd_ack",
            measure="crash → MSD acknowledged at the PSAP, p99, NG eCall (SIP over loopback UDP, no radio delays)",
            unit="ms",
            better=Better.LOWER,
            ours=ng,
            baseline_name="the circuit-switched eCall (in-band modem, pty + TCP), same service",
            baseline=cs,
            goal=Goal.bound(bench_ng_ecall.GOAL_MS),
        ),
    ]


def _tree_at(commit: str, directory: Path) -> Path:
    """The agent's packages as they were at `commit`, extracted into `directory` (read-only for the repo)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "tcu", "telematics_wire"],
        check=True,
        capture_output=True,
        cwd=README.parent,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory


async def memory_rows(sizes: Sizes) -> list[Row]:
    """The agent's RSS without devices and with all of them, against a bare interpreter importing the four
    libraries the agent cannot do without; its import time against the same agent before this issue
    (the goal: halved) and against those libraries (`bench_memory`)."""

    async def rss(devices: str) -> float:
        return await bench_memory.agent_rss_mb(sizes.rss_seconds, devices=devices)

    async def imported(statement: str, figure: str, tree: Path | None = None) -> float:
        cost = await asyncio.to_thread(bench_memory.import_cost, statement, tree=tree)
        return cost.rss_mb if figure == "rss" else cost.seconds * 1000

    bare_libraries = bench_memory.BASELINE_IMPORT
    without_devices, everything, bare = (
        Figures.of(values)
        for values in await interleave(
            [lambda: rss("none"), lambda: rss("all"), lambda: imported(bare_libraries, "rss")], sizes.rounds
        )
    )
    with tempfile.TemporaryDirectory(prefix="tcu-bench-before-") as tmp:
        before = _tree_at(BEFORE_ISSUE_15, Path(tmp))
        agent_import, before_import, bare_import = (
            Figures.of(values)
            for values in await interleave(
                [
                    lambda: imported(bench_memory.AGENT_IMPORT, "seconds"),
                    lambda: imported(bench_memory.AGENT_IMPORT, "seconds", before),
                    lambda: imported(bare_libraries, "seconds"),
                ],
                sizes.rounds,
            )
        )
    libraries = f"`{bare_libraries}` in a fresh interpreter"
    import_measure = f"import time, `{bench_memory.AGENT_IMPORT}`"
    return [
        Row(
            key="agent_rss_without_devices",
            measure="agent RSS, `tcu run` simulated drive, no device (no CAN)",
            unit="MB",
            better=Better.LOWER,
            ours=without_devices,
            baseline_name=libraries,
            baseline=bare,
            goal=Goal.bound(35.0),
        ),
        Row(
            key="agent_rss_everything",
            measure="agent RSS, `tcu run` with everything: CAN, OBD, GNSS, legal eCall",
            unit="MB",
            better=Better.LOWER,
            ours=everything,
            baseline_name=libraries,
            baseline=bare,
            goal=Goal.bound(50.0),
        ),
        Row(
            key="agent_import_time_vs_before",
            measure=import_measure,
            unit="ms",
            better=Better.LOWER,
            ours=agent_import,
            baseline_name=f"the same at {BEFORE_ISSUE_15} (before issue 15)",
            baseline=before_import,
            goal=Goal.ratio(2.0),
        ),
        Row(
            key="agent_import_time_vs_libraries",
            measure=import_measure,
            unit="ms",
            better=Better.LOWER,
            ours=agent_import,
            baseline_name=libraries,
            baseline=bare_import,
        ),
    ]


async def fleet_rows(sizes: Sizes) -> list[Row]:
    """One round only: a fleet run is the longest measure, and it has no baseline to interleave with. The
    fleet in one process through `hil.fleet`, whose CPU figure is the fleet process's over the measured
    window alone (start-up and drain left out), with the backend and an ingest worker beside it."""
    vehicles = sizes.fleet_vehicles
    with raised_open_file_limit(), tempfile.TemporaryDirectory(prefix="tcu-bench-fleet-") as tmp:
        fleet = await bench_fleet.run_fleet_processes(
            Path(tmp), vehicles, 1, sizes.fleet_seconds, sync="normal", drain_window_s=30.0
        )
    return [
        Row(
            key="fleet_cpu_per_vehicle_s",
            measure=f"fleet: {vehicles} TCUs in one process, 1 record/s each, CPU per vehicle-second",
            unit="ms",
            better=Better.LOWER,
            ours=Figures.of([fleet.cpu_ms_per_vehicle_s]),
            detail=(
                f"{fleet.cpu_ms_per_record:.2f} ms per record, {fleet.records_per_vehicle_s:.2f} records/s each, "
                f"event loop p99 {fleet.loop_lag_p99_ms:,.0f} ms late, {fleet.lost} lost"
            ),
            baseline_name="none",
            goal=Goal.bound(0.3),
            failure=_fleet_failure(fleet),
        )
    ]


def _fleet_failure(fleet: FleetResult) -> str:
    """Why the fleet run failed its no-loss audit, or nothing."""
    reasons = []
    if fleet.lost:
        reasons.append(f"{fleet.lost} records lost")
    if fleet.connected < fleet.vehicles:
        reasons.append(f"{fleet.connected}/{fleet.vehicles} connected")
    if fleet.records_per_vehicle_s < 0.95:
        reasons.append(f"{fleet.records_per_vehicle_s:.2f} records/s each, not 1")
    if not reasons and not fleet.passed:
        reasons.append("not drained within the window")
    return ", ".join(reasons)


SECTIONS = (
    ("uplink", uplink_rows),
    ("CAN", can_rows),
    ("MSD", msd_rows),
    ("eCall", ecall_rows),
    ("memory", memory_rows),
    ("fleet", fleet_rows),
)


async def run_suite(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    for name, section in SECTIONS:
        started = time.perf_counter()
        rows += await section(sizes)
        print(f"[bench] {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True, cwd=README.parent).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def run_info(quick: bool, note: str | None) -> history.RunInfo:
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0]
    return history.RunInfo(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        commit=_commit(),
        quick=quick,
        python=platform.python_version(),
        cpus=cpus,
        load_average=round(load, 2),
        note=note or f"{cpus}-core machine shared with other agents at work, load average {load:.1f} at the start",
    )


def print_table(rows: Sequence[Row]) -> None:
    cells = [row.cells() for row in rows]
    columns = list(cells[0])
    widths = {column: max(len(column), *(len(cell[column]) for cell in cells)) for column in columns}
    print("\n" + "  ".join(f"{column:{widths[column]}}" for column in columns))
    for cell in cells:
        print("  ".join(f"{cell[column]:{widths[column]}}" for column in columns))


def report_history(path: Path, run: history.Entry) -> bool:
    """Compare with the previous comparable run in `path`, append this one; True when a row regressed."""
    earlier = history.load(path)
    previous = history.previous_comparable(earlier, run)
    changes = {change.key: change for change in history.compare(run, previous)}
    if previous is None:
        print(f"\nhistory {path}: no earlier {'quick' if run['quick'] else 'full'} run on {run['cpus']} CPUs")
    else:
        print(f"\nagainst the run of {previous['date']} ({previous['commit'][:10]}), {path}:")
        for row in run["rows"]:
            change = changes.get(row["key"])
            print("  " + (change.text() if change else f"{row['measure']}: not in the earlier run"))
    history.append(path, run)
    return any(change.regression for change in changes.values())


def update_readme(rows: Sequence[Row], info: history.RunInfo) -> None:
    README.write_text(readme_table.replace_block(README.read_text(), readme_table.markdown_table(rows, info)))
    print(f"README table rewritten from the run of {info.date} ({README})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows and a 200-TCU fleet (about 3 min)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds per row (3)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="append the run to this history file")
    parser.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a ratio dropped > 10 %%")
    parser.add_argument("--update-readme", action="store_true", help="rewrite README.md's table from this run")
    parser.add_argument("--machine-note", help='the caveat with the table, e.g. "2-core machine, 6 agents busy"')
    parser.add_argument(
        "--readme-from", type=Path, metavar="FILE", help="rewrite README.md's table from the last run in FILE; no run"
    )
    args = parser.parse_args()
    if args.readme_from:
        info, rows = history.run_from_entry(history.load(args.readme_from)[-1])
        update_readme(rows, info)
        return
    logging.basicConfig(level=logging.ERROR)  # per-transition and queue-full warnings would flood the terminal
    if args.update_readme:  # a README without its markers fails before minutes of measuring, not after
        readme_table.replace_block(README.read_text(), "")
    info = run_info(args.quick, args.machine_note)
    started = time.perf_counter()
    rows = asyncio.run(run_suite(Sizes.for_run(args.quick, args.rounds)))
    print_table(rows)
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.0f} s; {info.note}")
    regressed = False
    if args.json:
        regressed = report_history(args.json, history.entry(info, rows))
    if args.update_readme:
        update_readme(rows, info)
    if regressed and args.fail_on_regression:
        sys.exit(1)


if __name__ == "__main__":
    main()
