"""pytest fixtures for bench teams: a broker, a bench folder, a backend stub and a running agent.

Installed as the pytest plugin `tcu_hil` (entry point `pytest11`), so in a project that has
`tcu-sim` installed, a test needs nothing else:

    async def test_speed_reaches_the_backend(tcu_agent, tcu_backend):
        await tcu_backend.wait_for(lambda store: store.last_values(tcu_agent.config.vin))

Fixtures (function scope):

- `tcu_broker`   a real Mosquitto on a free loopback port when installed, else the embedded broker
                 (set TCU_HIL_BROKER=mosquitto to insist on Mosquitto)
- `tcu_bench`    a BenchLayout in a temporary folder wired to that broker, backend keys made
- `tcu_backend`  a running BackendStub (`.store`, `.ingest`, `.wait_for(predicate)`)
- `tcu_agent`    a running Agent for one vehicle on the simulated drive (`.state`, `.outbox`, `.session`)
- `tcu_virtual_vehicle`  ELM327, SLCAN and NMEA devices on ptys following one drive (`.obd`, `.can`,
                 `.gnss`, `.ports` for a `[sources.*]` config); `.can.bus.crash()`, `.unlock()`, ...

Tests using them must be async (pytest-asyncio in auto mode, or marked `@pytest.mark.asyncio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.store import BackendStore
from hil.broker import Broker, choose_broker
from hil.devices.elm327_sim import Elm327Simulator, Elm327Timing
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.slcan_sim import SlcanSimulator
from hil.layout import DEMO_VIN, BenchLayout
from tcu.app import Agent
from tcu.config import load_agent_config
from tcu.vehicle.drive_cycle import DriveCycle

FAST_UPLINK = "\n[uplink]\nreconnect_base_s = 0.05\nreconnect_cap_s = 1.0\nack_timeout_s = 5\n"


class RunningBackend:
    """A backend stub running in the test's event loop."""

    def __init__(self, stub: BackendStub) -> None:
        self.stub = stub
        self.store = stub.store
        self.ingest = stub.ingest

    async def wait_for(self, predicate: Callable[[BackendStore], Any], timeout: float = 20.0) -> Any:  # noqa: ASYNC109
        """Poll the backend's store until `predicate(store)` is truthy; returns that value."""
        async with asyncio.timeout(timeout):
            while not (result := predicate(self.store)):  # noqa: ASYNC110 - the store is written by another task
                await asyncio.sleep(0.02)
        return result


@dataclass
class VirtualVehicle:
    obd: Elm327Simulator
    can: SlcanSimulator
    gnss: NmeaSimulator

    @property
    def ports(self) -> dict[str, str]:
        return {"obd": self.obd.path, "can": self.can.path, "gnss": self.gnss.path}

    def sources_toml(self, *, dbc: Sequence[Path] = (), mapping: Path | None = None) -> str:
        """The `[sources.*]` sections an agent config needs to read this vehicle.

        `dbc` and `mapping` go to `[sources.can]`, as in an agent config: your own vehicle's CAN database
        and mapping (e.g. with the CAN port fed by a recording) instead of the fictional car.
        """
        can = f"dbc = {json.dumps([str(p.resolve()) for p in dbc])}\n" if dbc else ""
        if mapping is not None:
            can += f"mapping = {json.dumps(str(mapping.resolve()))}\n"
        return "".join(
            f'\n[sources.{name}]\nport = "{path}"\n' + (can if name == "can" else "")
            for name, path in self.ports.items()
        )


@pytest_asyncio.fixture
async def tcu_virtual_vehicle(tmp_path: Path) -> AsyncIterator[VirtualVehicle]:
    cycle = DriveCycle()
    async with (
        Elm327Simulator(cycle=cycle, timing=Elm327Timing.instant(), link_path=str(tmp_path / "ttyOBD")) as obd,
        SlcanSimulator(cycle=cycle, link_path=str(tmp_path / "ttyCAN")) as can,
        NmeaSimulator(cycle=cycle, link_path=str(tmp_path / "ttyGNSS")) as gnss,
    ):
        yield VirtualVehicle(obd=obd, can=can, gnss=gnss)


@pytest_asyncio.fixture
async def tcu_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    prefer: Literal["auto", "mosquitto", "embedded"] = "auto"
    if os.environ.get("TCU_HIL_BROKER") in ("mosquitto", "embedded"):
        prefer = os.environ["TCU_HIL_BROKER"]  # type: ignore[assignment]
    broker = choose_broker(tmp_path / "broker", prefer)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
def tcu_bench(tmp_path: Path, tcu_broker: Broker) -> BenchLayout:
    layout = BenchLayout(root=tmp_path / "bench", broker_url=tcu_broker.url, protocol=tcu_broker.protocol)
    layout.create_backend()
    return layout


@pytest_asyncio.fixture
async def tcu_backend(tcu_bench: BenchLayout) -> AsyncIterator[RunningBackend]:
    stub = BackendStub(load_backend_config(tcu_bench.backend_config, env={}))
    task = asyncio.create_task(stub.run(), name="tcu-hil-backend")
    await asyncio.wait_for(stub.service.connected.wait(), 10)
    try:
        yield RunningBackend(stub)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest_asyncio.fixture
async def tcu_agent(tcu_bench: BenchLayout, tcu_backend: RunningBackend) -> AsyncIterator[Agent]:
    config = tcu_bench.add_vehicle(DEMO_VIN, telemetry_interval_s=0.2, extra=FAST_UPLINK)
    agent = Agent(load_agent_config(config, env={}))
    task = asyncio.create_task(agent.run(), name="tcu-hil-agent")
    await agent.ready.wait()
    await asyncio.wait_for(agent.session.wait_connected(), 10)
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
