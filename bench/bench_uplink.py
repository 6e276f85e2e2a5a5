"""Uplink benchmark: sealed+queued records/s, end-to-end records/s through Mosquitto, backlog drain,
and single-record puts from 1, 10 and 100 concurrent producers, synchronous on the loop (the store
as the agent used it before issue 14) against the writer thread with group commit (the agent now).

    python -m bench.bench_uplink            # needs mosquitto (apt-get install mosquitto)

Goals (issue 2): >= 5,000 records/s sealed+queued on one core, >= 1,000 records/s end to end,
3,600 queued records drained in < 10 s. Issue 14: the writer thread no slower than the synchronous
store at one producer, faster with many. The queue runs with synchronous=FULL (power-cut safe).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from bench import baseline_paho
from bench.baseline_sqlite import bare_insert_per_s
from bench.comparison import Better, Figures, interleave, ratio
from hil.broker import MosquittoBroker
from hil.layout import DEMO_VIN, BenchLayout
from tcu.app import Agent
from tcu.clock import SystemClock
from tcu.config import load_agent_config
from tcu.sources.simulated import sample_signals
from tcu.uplink.queue_store import QueueStore
from tcu.vehicle.drive_cycle import DriveCycle
from telematics_wire.envelope import seal_record, vehicle_box
from telematics_wire.keys import load_private_key, load_public_key
from telematics_wire.records import Record, RecordKind, to_millis

PRODUCERS = (1, 10, 100)


def telemetry_record(index: int) -> Record:
    """A realistic snapshot: the ten signals of the simulated vehicle (730 bytes sealed)."""
    now = datetime.now(UTC)
    signals = sample_signals(DriveCycle().at(float(index)))
    return Record(
        kind=RecordKind.TELEMETRY,
        created=now,
        body={"signals": {path: {"v": value, "t": to_millis(now)} for path, value in signals.items()}},
    )


@contextlib.asynccontextmanager
async def bench(root: Path) -> AsyncIterator[tuple[MosquittoBroker, BenchLayout]]:
    broker = MosquittoBroker(root / "mosquitto")
    layout = BenchLayout(root=root, broker_url=broker.url)
    layout.create_backend()
    layout.add_vehicle(DEMO_VIN, simulation=False, telemetry_interval_s=3600)
    async with broker:
        yield broker, layout


async def _run(app: Agent | BackendStub) -> asyncio.Task[None]:
    return asyncio.create_task(app.run())


async def _wait(condition: Callable[[], bool], within: float = 120.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling SQLite counts
            await asyncio.sleep(0.005)


async def measure_sealed_queued(layout: BenchLayout, count: int, batch: int) -> float:
    agent = Agent(load_agent_config(layout.agent_config(DEMO_VIN), env={}))
    records = [telemetry_record(i) for i in range(count)]
    async with agent.outbox:
        start = time.perf_counter()
        for offset in range(0, count, batch):
            await agent.outbox.put_many(records[offset : offset + batch])
        elapsed = time.perf_counter() - start
        await agent.outbox.acknowledge(range(1, agent.outbox.stats().next_seq))
    return count / elapsed


async def compare_sealed_queued(layout: BenchLayout, count: int) -> dict[str, float]:
    """`measure_sealed_queued` (batches of 100) against bare SQLite INSERTs of blobs of the sealed size,
    WAL + FULL, same batches (`baseline_sqlite`), interleaved: min and median of each, the ratio of medians."""
    size = sealed_telemetry_size(layout)
    with tempfile.TemporaryDirectory(prefix="tcu-bench-sqlite-") as tmp:

        async def sqlite() -> float:
            return bare_insert_per_s(Path(tmp), count, 100, size)

        samples = await interleave([lambda: measure_sealed_queued(layout, count, 100), sqlite])
    ours, baseline = (Figures.of(values) for values in samples)
    return {
        "sealed_queued_payload_bytes": float(size),
        "sealed_queued_ours_min_per_s": ours.min,
        "sealed_queued_sqlite_min_per_s": baseline.min,
        "sealed_queued_sqlite_median_per_s": baseline.median,
        "sealed_queued_ratio_sqlite": ratio(ours, baseline, Better.HIGHER),
        "sealed_queued_per_s_batch100": ours.median,
    }


def _shares(records: list[Record], producers: int) -> list[list[Record]]:
    return [records[index::producers] for index in range(producers)]


async def measure_put_sync(layout: BenchLayout, count: int, producers: int) -> float:
    """Single-record puts on the loop, as before the writer thread: each blocks the loop for its commit."""
    config = load_agent_config(layout.agent_config(DEMO_VIN), env={})
    keys = config.keys
    box = vehicle_box(load_private_key(keys.vehicle_private_key), load_public_key(keys.backend_public_key))
    store = QueueStore(
        config.queue_path,
        sealer=lambda seq, record, epoch: seal_record(box, config.vin, seq, record, epoch=epoch),
        clock=SystemClock(),
        config=config.queue,
        max_envelope_bytes=config.uplink.max_payload_bytes,
    ).open()

    async def produce(share: list[Record]) -> None:
        for record in share:
            store.put(record)
            await asyncio.sleep(0)  # a producer's other work; the loop was blocked during the put

    records = [telemetry_record(i) for i in range(count)]
    start = time.perf_counter()
    await asyncio.gather(*(produce(share) for share in _shares(records, producers)))
    elapsed = time.perf_counter() - start
    store.acknowledge(range(1, store.stats().next_seq))
    store.close()
    return count / elapsed


async def measure_put_writer(layout: BenchLayout, count: int, producers: int) -> tuple[float, float]:
    """Single-record puts through the agent's writer thread; (records/s, records per commit)."""
    agent = Agent(load_agent_config(layout.agent_config(DEMO_VIN), env={}))

    async def produce(share: list[Record]) -> None:
        for record in share:
            await agent.outbox.put(record)

    records = [telemetry_record(i) for i in range(count)]
    async with agent.outbox:
        start = time.perf_counter()
        await asyncio.gather(*(produce(share) for share in _shares(records, producers)))
        elapsed = time.perf_counter() - start
        commits = agent.outbox.commits
        await agent.outbox.acknowledge(range(1, agent.outbox.stats().next_seq))
    return count / elapsed, count / max(commits, 1)


async def measure_end_to_end(layout: BenchLayout, count: int, batch: int) -> float:
    backend = BackendStub(load_backend_config(layout.backend_config, env={}))
    agent = Agent(load_agent_config(layout.agent_config(DEMO_VIN), env={}))
    tasks = [await _run(backend), await _run(agent)]
    await agent.ready.wait()
    await backend.service.connected.wait()
    await agent.session.wait_connected()
    before = backend.ingest.stats.stored
    records = [telemetry_record(i) for i in range(count)]
    start = time.perf_counter()
    for offset in range(0, count, batch):
        await agent.outbox.put_many(records[offset : offset + batch])
        agent.session.notify()
    await _wait(lambda: backend.ingest.stats.stored - before >= count and agent.outbox.stats().depth == 0)
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return count / elapsed


def sealed_telemetry_size(layout: BenchLayout) -> int:
    """Bytes of one sealed telemetry envelope as the agent queues it (with a queue epoch): the baselines'
    payload size."""
    config = load_agent_config(layout.agent_config(DEMO_VIN), env={})
    keys = config.keys
    box = vehicle_box(load_private_key(keys.vehicle_private_key), load_public_key(keys.backend_public_key))
    return len(seal_record(box, config.vin, 1, telemetry_record(0), epoch=os.urandom(16)))


async def compare_end_to_end(layout: BenchLayout, broker_url: str, count: int, rounds: int = 3) -> dict[str, float]:
    """Ours end to end against plain paho and paho into SQLite, interleaved `rounds` times through one
    broker: min and median of each, and the ratios of the medians (the machine is shared, so only
    figures measured side by side compare)."""
    size = sealed_telemetry_size(layout)
    with tempfile.TemporaryDirectory(prefix="tcu-bench-paho-") as tmp:

        async def plain() -> float:
            return await asyncio.to_thread(baseline_paho.plain_paho_per_s, broker_url, count, size)

        async def into_sqlite() -> float:
            return await asyncio.to_thread(baseline_paho.paho_into_sqlite_per_s, broker_url, Path(tmp), count, size)

        samples = await interleave([lambda: measure_end_to_end(layout, count, 50), plain, into_sqlite], rounds)
    ours, paho, paho_sqlite = (Figures.of(values) for values in samples)
    results: dict[str, float] = {"end_to_end_payload_bytes": float(size)}
    for name, figures in (("ours", ours), ("paho", paho), ("paho_sqlite", paho_sqlite)):
        results[f"end_to_end_{name}_min_per_s"] = figures.min
        results[f"end_to_end_{name}_median_per_s"] = figures.median
    results["end_to_end_ratio_paho"] = ratio(ours, paho, Better.HIGHER)
    results["end_to_end_ratio_paho_sqlite"] = ratio(ours, paho_sqlite, Better.HIGHER)
    results["end_to_end_per_s"] = ours.median
    return results


async def measure_backlog_drain(layout: BenchLayout, count: int) -> float:
    agent = Agent(load_agent_config(layout.agent_config(DEMO_VIN), env={}))
    async with agent.outbox:  # queued while "offline": the agent is not running yet
        await agent.outbox.put_many([telemetry_record(i) for i in range(count)])
    backend = BackendStub(load_backend_config(layout.backend_config, env={}))
    backend_task = await _run(backend)
    await backend.service.connected.wait()
    before = backend.ingest.stats.stored
    start = time.perf_counter()
    agent_task = await _run(agent)
    await _wait(lambda: backend.ingest.stats.stored - before >= count and agent.outbox.stats().depth == 0)
    elapsed = time.perf_counter() - start
    for task in (agent_task, backend_task):
        task.cancel()
    await asyncio.gather(agent_task, backend_task, return_exceptions=True)
    return elapsed


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tcu-bench-uplink-") as tmp:
        async with bench(Path(tmp)) as (_, layout):
            results = {
                **await compare_sealed_queued(layout, args.records),
                "sealed_queued_per_s_single": await measure_sealed_queued(layout, args.records // 5, 1),
                **await compare_end_to_end(layout, layout.broker_url, args.records),
                "backlog_3600_drain_s": await measure_backlog_drain(layout, 3600),
            }
            for producers in PRODUCERS:
                puts = args.records // 5
                results[f"put_per_s_sync_{producers}"] = await measure_put_sync(layout, puts, producers)
                rate, per_commit = await measure_put_writer(layout, puts, producers)
                results[f"put_per_s_writer_{producers}"] = rate
                results[f"records_per_commit_writer_{producers}"] = per_commit
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    goals = {
        "sealed_queued_per_s_batch100": ">= 5000 (ours, median)",
        "sealed_queued_ratio_sqlite": ">= 0.5 (issue 15; medians)",
        "sealed_queued_per_s_single": "(one commit per record)",
        "end_to_end_per_s": ">= 1000 (ours, median)",
        "end_to_end_ratio_paho": ">= 0.5 (issue 15; medians)",
        "end_to_end_ratio_paho_sqlite": "(medians)",
        "backlog_3600_drain_s": "< 10",
    }
    for producers in PRODUCERS:
        goals[f"put_per_s_sync_{producers}"] = f"(on the loop, {producers} producer(s))"
        goals[f"put_per_s_writer_{producers}"] = f">= sync, {producers} producer(s)"
        goals[f"records_per_commit_writer_{producers}"] = "(group commit)"
    print(f"{'measure':32} {'value':>12}  goal")
    for name, value in results.items():
        shown = f"{value:12.1f}" if value >= 10 else f"{value:12.3f}"  # ratios and seconds need the decimals
        print(f"{name:32} {shown}  {goals.get(name, '')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
