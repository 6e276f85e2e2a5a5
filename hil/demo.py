"""The pure-software bench in one command: broker, backend stub and an agent on a simulated drive,
with a live line per second and a closing check that the backend holds every record exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO, TypeVar

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from hil.broker import Broker, MosquittoBroker, choose_broker, mosquitto_path
from hil.cardata_bench import CardataBench, pair_owner
from hil.layout import DEMO_VIN, BenchLayout
from tcu.app import Agent
from tcu.config import load_agent_config
from tcu.errors import ConfigError

CARDATA_ENV = "cardata.env"  # in the workdir: the CarData bench's URLs, for `source` (the README does)
SIGTERM_EXIT = 128 + signal.SIGTERM
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    queued: int
    stored: int
    gaps: list[list[int]]

    @property
    def ok(self) -> bool:
        return self.stored > 0 and not self.gaps and self.queued == 0


def _live_line(elapsed: float, agent: Agent, backend: BackendStub) -> str:
    stats = agent.outbox.stats()
    link = "up" if agent.session.stats.connected else "DOWN"
    speed = agent.state.value("Vehicle.Speed")
    odometer = agent.state.value("Vehicle.TraveledDistance")
    lat = agent.state.value("Vehicle.CurrentLocation.Latitude")
    lon = agent.state.value("Vehicle.CurrentLocation.Longitude")
    return (
        f"t={elapsed:5.0f}s link={link:4} queued={stats.depth:4d} next_seq={stats.next_seq:5d} "
        f"acked={agent.session.stats.acknowledged:5d} backend_stored={backend.ingest.stats.stored:5d} | "
        f"speed={speed} km/h odo={odometer} km pos={lat},{lon}"
    )


def _broker(
    workdir: Path, choice: Literal["auto", "mosquitto", "embedded"], *, cardata: bool
) -> tuple[Broker, CardataBench | None]:
    if not cardata:
        return choose_broker(workdir, choice), None
    if choice == "embedded" or mosquitto_path() is None:
        raise ConfigError("--cardata streams through Mosquitto's dynamic-security listener: install mosquitto")
    third_parties = CardataBench.create(workdir)
    return MosquittoBroker(workdir / "mosquitto", streaming=third_parties.listener), third_parties


async def run_demo(
    workdir: Path,
    *,
    duration_s: float | None,
    broker_choice: Literal["auto", "mosquitto", "embedded"] = "auto",
    telemetry_interval_s: float = 1.0,
    cardata: bool = False,
    out: TextIO = sys.stdout,
) -> DemoResult:
    """`cardata`: the backend also serves CarData (`hil.cardata_bench`) — needs Mosquitto and its plugin;
    its URLs also go to `workdir/cardata.env` once the owner is paired."""
    workdir = _prepared(workdir)
    broker, third_parties = _broker(workdir, broker_choice, cardata=cardata)
    layout = BenchLayout(root=workdir, broker_url=broker.url, protocol=broker.protocol)
    layout.create_backend()
    if third_parties is not None:
        layout.write_backend_config(third_parties.configure(layout.backend()))
    layout.add_vehicle(DEMO_VIN, telemetry_interval_s=telemetry_interval_s)
    print(f"bench in {workdir}; broker {type(broker).__name__} on {broker.url} (MQTT {broker.protocol})", file=out)
    await broker.start()
    try:
        backend = BackendStub(load_backend_config(layout.backend_config))
        agent = Agent(load_agent_config(layout.agent_config(DEMO_VIN)))
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.TaskGroup() as tasks:
            backend_task = tasks.create_task(backend.run(), name="backend-stub")
            agent_task = tasks.create_task(agent.run(), name="agent")
            await agent.ready.wait()
            if third_parties is not None:
                await pair_owner(backend, layout, DEMO_VIN, third_parties.owner)
                _write_cardata_env(workdir, third_parties, layout)
                print(third_parties.describe(layout, DEMO_VIN), file=out, flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration_s):
                    while True:
                        await asyncio.sleep(1.0)
                        print(_live_line(loop.time() - start, agent, backend), file=out, flush=True)
            # Stop producing, let the queue drain, then stop everything.
            agent.telemetry.enabled = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    while agent.outbox.stats().depth:  # noqa: ASYNC110 - polling a SQLite count
                        await asyncio.sleep(0.1)
            queued = agent.outbox.stats().depth
            agent_task.cancel()
            await asyncio.sleep(0.3)  # the last acks reach the backend's store
            # A connection of our own: the backend's belongs to its database thread, where a batch may be open.
            with contextlib.closing(backend.reader()) as records:
                stored_seqs = records.seqs(DEMO_VIN)
                gaps = records.gaps(DEMO_VIN)
            backend_task.cancel()
    finally:
        await broker.stop()
    result = DemoResult(queued=queued, stored=len(stored_seqs), gaps=gaps)
    verdict = "OK" if result.ok else "FAILED"
    print(
        f"{verdict}: backend stored {result.stored} records, {result.queued} left queued, gaps {result.gaps}", file=out
    )
    return result


def _prepared(workdir: Path) -> Path:
    # Absolute before anything is written: the broker and the backend run with paths from these files,
    # and a relative one resolved elsewhere left the backend's clients unable to connect (a silent hang).
    workdir = workdir.absolute()
    (workdir / CARDATA_ENV).unlink(missing_ok=True)  # a previous run's ports are not this one's
    return workdir


def _write_cardata_env(workdir: Path, bench: CardataBench, layout: BenchLayout) -> None:
    """API, MQTT_PORT, CA and CONFIG as shell assignments; renamed into place, so a reader waiting for
    the file never sees half of it."""
    lines = {
        "API": bench.url,
        "MQTT_PORT": str(bench.listener.port),
        "CA": str(bench.listener.tls.ca_file),
        "CONFIG": str(layout.backend_config),
        "VIN": DEMO_VIN,
    }
    partial = workdir / f".{CARDATA_ENV}.partial"
    partial.write_text("".join(f"{name}='{value}'\n" for name, value in lines.items()), encoding="utf-8")
    partial.replace(workdir / CARDATA_ENV)


async def until_sigterm(work: Awaitable[_T]) -> _T:
    """`work`, which SIGTERM cancels as Ctrl-C does: its TaskGroup ends and its `finally` stops the
    broker (left to the default action, SIGTERM killed the demo and left Mosquitto running)."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None  # called from a coroutine
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def demo_workdir(path: Path | None) -> Path:
    return path.resolve() if path is not None else Path(tempfile.mkdtemp(prefix="tcu-bench-"))
