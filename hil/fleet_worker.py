"""One fleet process: its share of the simulated TCUs, each a complete agent, on one event loop.

The coordinator (`hil.fleet`) starts one of these per core. Each builds its agents (simulated drive,
telemetry every second, durable SQLite queue, its own MQTT connection, services and remote-measure
engines), waits until they are connected, meets the other processes at a barrier so that every process
measures the same window, then measures: its own CPU time, its event loop's lag (`hil.loop_lag`) and
the records its vehicles queued. After the window the vehicles stop producing and the process waits
until every queue is empty — each record acknowledged end to end — or the drain window ends, and
reports what each vehicle queued, for the coordinator's no-loss audit against the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from hil.loop_lag import LagSummary, LoopLag
from hil.proc_stats import rss_mb
from tcu.app import Agent
from tcu.config import load_agent_config
from tcu.runner import configure_logging
from tcu.uplink.writer_thread import WriterThread

_LOGGER = logging.getLogger(__name__)
_DRAIN_POLL_S = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerPlan:
    index: int
    configs: tuple[Path, ...]  # one agent config per vehicle
    seconds: float  # the measured window
    connect_timeout_s: float
    drain_window_s: float
    log_level: str = "warning"
    # Vehicles whose queues share one writer thread (0: a thread per queue, as a lone agent has): a thread
    # per queue costs a wake-up and a context switch for nearly every record; one thread for all would
    # serialise every fsync of the process (one thread does ~430 fsyncs/s on this disk, four ~3,700).
    # Measured at 200 vehicles (busy machine): 50 per writer ~0.82x the CPU per vehicle-second of one per
    # queue; 200 on one writer once fell behind the record rate.
    vehicles_per_writer: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReport:
    index: int
    vehicles: int
    connected: int
    queued_in_window: int  # records the vehicles queued during the window (the rate check)
    queued: dict[str, int]  # VIN -> records queued in all (sequence numbers 1..n of a fresh queue)
    left_in_queues: int  # records still unacknowledged when the drain window ended
    drain_s: float
    window_s: float
    cpu_s: float  # this process's CPU time (user + system) during the window
    lag: LagSummary
    rss_mb: float  # at the end of the window
    rss_before_agents_mb: float  # after the imports, before the first agent: the per-vehicle share is the rest


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_share(plan: WorkerPlan, window_start: threading.Barrier) -> WorkerReport:
    """Run `plan`'s agents through connect, the window (starting when every process meets at
    `window_start`) and the drain; cancels them at the end."""
    rss_before = rss_mb()
    writers = _shared_writers(plan)
    try:
        return await _run_agents(plan, window_start, writers, rss_before)
    finally:
        for writer in writers:  # after every agent's queue closed: the tasks have ended
            await writer.stop(lambda: None)


def _shared_writers(plan: WorkerPlan) -> list[WriterThread]:
    if plan.vehicles_per_writer <= 0:
        return []
    count = -(-len(plan.configs) // plan.vehicles_per_writer)
    writers = [WriterThread(f"fleet-{plan.index}-writer-{number}") for number in range(count)]
    for writer in writers:
        writer.start()
    return writers


async def _run_agents(
    plan: WorkerPlan, window_start: threading.Barrier, writers: list[WriterThread], rss_before: float
) -> WorkerReport:
    agents = [
        Agent(load_agent_config(config, env={}), writer=writers[number % len(writers)] if writers else None)
        for number, config in enumerate(plan.configs)
    ]
    lag = LoopLag()
    async with asyncio.TaskGroup() as tasks:
        runners = [tasks.create_task(agent.run(), name=f"agent-{agent.config.vin}") for agent in agents]
        lag_task = tasks.create_task(lag.run(), name="loop-lag")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(plan.connect_timeout_s):
                await asyncio.gather(*(agent.session.wait_connected() for agent in agents))
        connected = sum(agent.session.stats.connected for agent in agents)
        _LOGGER.info("fleet process %d: %d of %d vehicles connected", plan.index, connected, len(agents))
        # The agents are built and connected: what lives now lives until the end. Out of the collector's
        # sight, a full collection no longer walks thousands of agents' objects again and again.
        gc.collect()
        gc.freeze()
        # A thread waits at the barrier: the loop keeps serving the agents meanwhile.
        await asyncio.to_thread(window_start.wait)
        lag.samples_ms.clear()
        first_seq = {agent.config.vin: agent.outbox.stats().next_seq for agent in agents}
        cpu_before, wall_before = _cpu_s(), time.perf_counter()
        await asyncio.sleep(plan.seconds)
        cpu_s, window_s = _cpu_s() - cpu_before, time.perf_counter() - wall_before
        summary, rss = lag.summary(), rss_mb()
        queued_in_window = sum(agent.outbox.stats().next_seq - first_seq[agent.config.vin] for agent in agents)
        for agent in agents:
            agent.telemetry.enabled = False
        drain_start = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(plan.drain_window_s):
                while any(agent.outbox.stats().depth for agent in agents):  # noqa: ASYNC110 - polls many queues
                    await asyncio.sleep(_DRAIN_POLL_S)
        drain_s = time.perf_counter() - drain_start
        _LOGGER.info("fleet process %d: drained in %.1f s", plan.index, drain_s)
        left = sum(agent.outbox.stats().depth for agent in agents)
        queued = {agent.config.vin: agent.outbox.stats().next_seq - 1 for agent in agents}
        for task in [*runners, lag_task]:
            task.cancel()
    return WorkerReport(
        index=plan.index,
        vehicles=len(agents),
        connected=connected,
        queued_in_window=queued_in_window,
        queued=queued,
        left_in_queues=left,
        drain_s=round(drain_s, 2),
        window_s=round(window_s, 2),
        cpu_s=round(cpu_s, 3),
        lag=summary,
        rss_mb=round(rss, 1),
        rss_before_agents_mb=round(rss_before, 1),
    )


def run_worker_process(plan: WorkerPlan, window_start: threading.Barrier, report: Connection) -> None:
    """The process's entry point (multiprocessing, spawn): sends its `WorkerReport` through `report`."""
    configure_logging(plan.log_level)
    try:
        result = asyncio.run(run_share(plan, window_start))
    except BaseException:
        window_start.abort()  # the other processes stop waiting for this one
        raise
    report.send(result)
    report.close()
