"""`tcu-hil fleet`: a fleet of simulated TCUs spread over several processes, against one Mosquitto and
a backend with several ingest workers, with the no-loss audit across all of them.

    tcu-hil fleet --vehicles 1000 --processes 2 --seconds 60

The coordinator builds the bench (keys, configs, enrolment), starts Mosquitto and the backend
(`backend-stub run --ingest-workers N`), then one fleet process per core (`hil.fleet_worker`), each with
its share of the vehicles. Every process measures the same window (they meet at a barrier once their
vehicles are connected); the coordinator measures the backend's and the broker's CPU over it. After
the window the vehicles stop producing and drain; the audit (`hil.fleet_audit`) then checks that
every record each vehicle queued is in the backend's database.

Each process raises its open-file limit to the hard limit (a vehicle holds ~5 descriptors: its socket,
its queue's database and WAL, the personal and state files as they are written); Mosquitto, started by
this process, inherits it. Mosquitto's own limits: `max_connections` is unlimited by default, and the
bench's `max_queued_messages 1000000` is far above what one vehicle or the backend ever has queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from backend_stub.config import load_backend_config
from hil.backend_process import BackendProcess
from hil.broker import MosquittoBroker
from hil.fleet_audit import FleetAudit, audit_fleet
from hil.fleet_worker import WorkerPlan, WorkerReport, run_worker_process
from hil.layout import BenchLayout, vin_for
from hil.proc_stats import children, cpu_seconds

_LOGGER = logging.getLogger(__name__)
_SUBSCRIBED = "backend ingest subscribed to"  # what each ingest worker logs once it receives
_STARTUP_S = 120.0  # starting the processes, on top of the connect timeout ...
_STARTUP_PER_VEHICLE_S = 0.2  # ... and building each agent (~25 ms idle; 2,500 took over 180 s on a busy machine)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetPlan:
    vehicles: int
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    ingest_workers: int | None = None  # None: as many as fleet processes
    seconds: float = 60.0
    sync: str = "normal"  # the vehicles' queue durability (`[queue] synchronous`)
    drain_window_s: float = 30.0
    connect_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.vehicles < 1 or self.processes < 1 or self.seconds <= 0:
            raise ValueError("a fleet needs at least one vehicle, one process and a window longer than zero")
        if self.processes > self.vehicles:
            raise ValueError(f"{self.processes} processes for {self.vehicles} vehicles: some would run none")

    @property
    def workers(self) -> int:
        return self.processes if self.ingest_workers is None else self.ingest_workers


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetResult:
    date: str
    vehicles: int
    processes: int
    ingest_workers: int
    seconds: float
    connected: int
    records_per_vehicle_s: float
    queued: int
    stored: int
    lost: int
    left_in_queues: int
    drain_s: float
    loop_lag_p50_ms: float  # the worst process's
    loop_lag_p99_ms: float  # the worst process's
    loop_lag_max_ms: float
    cpu_ms_per_vehicle_s: float  # the fleet processes' CPU time per vehicle per second of window
    cpu_ms_per_record: float  # the same per record queued: honest when the vehicles fell behind 1 record/s
    fleet_cpu_percent: float  # of one core, all fleet processes together
    backend_cpu_percent: float  # the backend and its ingest workers
    broker_cpu_percent: float
    rss_mb_per_process: tuple[float, ...]
    kb_per_vehicle: float  # resident memory the agents added, per vehicle
    passed: bool


@contextlib.contextmanager
def raised_open_file_limit() -> Iterator[None]:
    """Up to the hard limit for the block, then back: ~5 descriptors per vehicle; children (Mosquitto,
    the workers) started inside inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def build_bench(root: Path, broker_url: str, plan: FleetPlan) -> tuple[BenchLayout, list[Path]]:
    """Backend keys and config, and one enrolled vehicle config per vehicle, as bench_fleet has them."""
    layout = BenchLayout(root=root, broker_url=broker_url)
    layout.create_backend()
    # A fleet process has no person reading each car's status.json: write it every 30 s, not every second.
    extra = (
        f'\n[queue]\nsynchronous = "{plan.sync}"\n[uplink]\nreconnect_base_s = 0.5\nreconnect_cap_s = 5\n'
        "[vehicle]\nstatus_interval_s = 30\n"
    )
    configs = layout.add_vehicles((vin_for(i) for i in range(plan.vehicles)), telemetry_interval_s=1.0, extra=extra)
    for config in configs:  # one simulated-drive update per second, like the telemetry
        config.write_text(
            config.read_text().replace(
                "[simulation]\nenabled = true", "[simulation]\nenabled = true\nupdate_interval_s = 1.0"
            )
        )
    return layout, configs


def _shares(configs: list[Path], processes: int) -> Iterator[tuple[Path, ...]]:
    for index in range(processes):
        yield tuple(configs[index::processes])


class _CpuMeter:
    """CPU time (user + system) of a set of processes, so that a window's share can be taken."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids

    def total_s(self) -> float:
        return sum(cpu_seconds(pid) for pid in self._pids)


def _subscribed(log: Path) -> int:
    return log.read_text(errors="replace").count(_SUBSCRIBED) if log.exists() else 0


async def _wait_for_ingest(log: Path, workers: int, backend: BackendProcess, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while _subscribed(log) < workers:
            if backend.exited is not None:
                raise RuntimeError(f"the backend exited with status {backend.exited}: see {log}")
            await asyncio.sleep(0.2)


async def run_fleet(root: Path, plan: FleetPlan) -> FleetResult:
    broker = MosquittoBroker(root / "mosquitto")
    layout, configs = build_bench(root, broker.url, plan)
    layout.write_backend_config(
        replace(load_backend_config(layout.backend_config, env={}), ingest_workers=plan.workers)
    )
    _LOGGER.info("bench for %d vehicles built in %s", plan.vehicles, root)
    context = multiprocessing.get_context("spawn")
    window_start = context.Barrier(plan.processes + 1)  # the fleet processes and this coordinator
    backend_log = root / "backend.log"
    backend = BackendProcess(layout.backend_config, backend_log)
    async with broker:
        await backend.start()
        try:
            await _wait_for_ingest(backend_log, plan.workers, backend, timeout_s=60.0)
            _LOGGER.info(
                "backend with %d ingest worker(s) subscribed; starting %d fleet processes", plan.workers, plan.processes
            )
            backend_meter = _CpuMeter([backend.pid, *children(backend.pid)])  # with its ingest workers
            broker_meter = _CpuMeter(children(os.getpid(), "mosquitto"))
            reports, window = await _run_processes(
                context, window_start, configs, plan, backend_meter=backend_meter, broker_meter=broker_meter
            )
        finally:
            await backend.stop()
    queued = {vin: count for report in reports for vin, count in report.queued.items()}
    return _result(plan, reports, audit_fleet(root / "backend.sqlite3", queued), window)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Window:
    seconds: float
    backend_cpu_s: float
    broker_cpu_s: float


async def _run_processes(
    context: multiprocessing.context.SpawnContext,
    window_start: threading.Barrier,
    configs: list[Path],
    plan: FleetPlan,
    *,
    backend_meter: _CpuMeter,
    broker_meter: _CpuMeter,
) -> tuple[list[WorkerReport], _Window]:
    started = []
    for index, share in enumerate(_shares(configs, plan.processes)):
        receiver, sender = context.Pipe(duplex=False)
        worker_plan = WorkerPlan(
            index=index,
            configs=share,
            seconds=plan.seconds,
            connect_timeout_s=plan.connect_timeout_s,
            drain_window_s=plan.drain_window_s,
        )
        process = context.Process(
            target=run_worker_process, args=(worker_plan, window_start, sender), name=f"fleet-{index}", daemon=True
        )
        process.start()
        sender.close()
        started.append((process, receiver))
    try:
        per_process = -(-plan.vehicles // plan.processes)
        startup_s = plan.connect_timeout_s + _STARTUP_S + _STARTUP_PER_VEHICLE_S * per_process
        await asyncio.to_thread(window_start.wait, startup_s)
        _LOGGER.info("every fleet process connected its vehicles: the %.0f s window starts", plan.seconds)
        backend_before, broker_before, wall_before = backend_meter.total_s(), broker_meter.total_s(), time.monotonic()
        await asyncio.sleep(plan.seconds)
        window = _Window(
            seconds=time.monotonic() - wall_before,
            backend_cpu_s=backend_meter.total_s() - backend_before,
            broker_cpu_s=broker_meter.total_s() - broker_before,
        )
        _LOGGER.info("window over: the vehicles stop producing and drain")
        # The drain, then the vehicles' shutdown, which takes as long per vehicle as their start (a fixed
        # 60 s left 2,500 vehicles per process unreported, their records audited by nobody).
        deadline = plan.drain_window_s + 60.0 + _STARTUP_PER_VEHICLE_S * per_process
        reports = [await asyncio.to_thread(_receive, receiver, deadline) for _, receiver in started]
    finally:
        for process, receiver in started:
            receiver.close()
            await asyncio.to_thread(process.join, 10.0)
            if process.exitcode is None:
                process.kill()
    return reports, window


def _receive(receiver: multiprocessing.connection.Connection, timeout_s: float) -> WorkerReport:
    if not receiver.poll(timeout_s):
        raise TimeoutError(f"a fleet process sent no report within {timeout_s:.0f} s")
    report: WorkerReport = receiver.recv()
    return report


def _result(plan: FleetPlan, reports: list[WorkerReport], audit: FleetAudit, window: _Window) -> FleetResult:
    vehicles = sum(report.vehicles for report in reports)
    connected = sum(report.connected for report in reports)
    in_window = sum(report.queued_in_window for report in reports)
    rate = in_window / vehicles / window.seconds
    cpu_s = sum(report.cpu_s for report in reports)
    added_mb = sum(report.rss_mb - report.rss_before_agents_mb for report in reports)
    left = sum(report.left_in_queues for report in reports)
    return FleetResult(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        vehicles=vehicles,
        processes=plan.processes,
        ingest_workers=plan.workers,
        seconds=plan.seconds,
        connected=connected,
        records_per_vehicle_s=round(rate, 3),
        queued=audit.queued,
        stored=audit.stored,
        lost=audit.lost,
        left_in_queues=left,
        drain_s=max(report.drain_s for report in reports),
        loop_lag_p50_ms=max(report.lag.p50_ms for report in reports),
        loop_lag_p99_ms=max(report.lag.p99_ms for report in reports),
        loop_lag_max_ms=max(report.lag.max_ms for report in reports),
        cpu_ms_per_vehicle_s=round(cpu_s * 1000 / vehicles / window.seconds, 3),
        cpu_ms_per_record=round(cpu_s * 1000 / max(in_window, 1), 3),
        fleet_cpu_percent=round(cpu_s / window.seconds * 100, 1),
        backend_cpu_percent=round(window.backend_cpu_s / window.seconds * 100, 1),
        broker_cpu_percent=round(window.broker_cpu_s / window.seconds * 100, 1),
        rss_mb_per_process=tuple(report.rss_mb for report in reports),
        kb_per_vehicle=round(added_mb * 1024 / vehicles, 1),
        passed=audit.passed and connected == vehicles and left == 0 and rate >= 0.95,
    )


def summary_lines(results: list[FleetResult]) -> list[str]:
    """A table a person reads: one line per fleet run."""
    lines = [
        f"{'vehicles':>8} {'procs':>5} {'queued':>8} {'stored':>8} {'lost':>5} {'rec/v/s':>7} {'lag p99':>8} "
        f"{'ms CPU/v/s':>10} {'fleet %':>7} {'backend %':>9} {'broker %':>8} {'KB/v':>6}  result"
    ]
    lines += [
        f"{r.vehicles:8d} {r.processes:5d} {r.queued:8d} {r.stored:8d} {r.lost:5d} {r.records_per_vehicle_s:7.3f} "
        f"{r.loop_lag_p99_ms:8.1f} {r.cpu_ms_per_vehicle_s:10.3f} {r.fleet_cpu_percent:7.1f} "
        f"{r.backend_cpu_percent:9.1f} {r.broker_cpu_percent:8.1f} {r.kb_per_vehicle:6.0f}  "
        f"{'PASS' if r.passed else 'FAIL'}"
        for r in results
    ]
    return lines
