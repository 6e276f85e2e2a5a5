"""Any CAN interface, end to end: an agent configured with `[sources.can] interface = "virtual"` reads
the simulated vehicle bus from python-can (another Bus on the same virtual channel plays the car's
ECUs), and the values reach the backend stub through a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import can

from backend_stub.store import BackendStore
from hil.devices.slcan_sim import Door, VehicleBus
from hil.layout import BenchLayout
from tests.conftest import VIN, eventually
from tests.integration.conftest import drain_only_config, running_agent, vehicle_config

CRUISE_S = 30.0


@contextlib.asynccontextmanager
async def ecus(channel: str) -> AsyncIterator[VehicleBus]:
    """The car's side of the bus: every DBC message at its cycle time, events at once."""
    bus = VehicleBus()
    sender = can.Bus(interface="virtual", channel=channel)

    async def transmit() -> None:
        start = asyncio.get_running_loop().time()
        while True:
            now = asyncio.get_running_loop().time() - start
            for frame in bus.due(now, CRUISE_S):
                sender.send(can.Message(arbitration_id=frame.can_id, data=frame.data, is_extended_id=frame.extended))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(transmit(), name="ecus")
    try:
        yield bus
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sender.shutdown()


async def test_a_python_can_bus_feeds_the_agent_and_the_backend(
    layout: BenchLayout, backend_store: BackendStore, tmp_path: Path
) -> None:
    channel = f"vehicle-{tmp_path.name}"
    sources = f'\n[sources.can]\ninterface = "virtual"\nchannel = "{channel}"\n'
    config = drain_only_config(vehicle_config(layout, interval_s=0.2, extra=sources))  # no simulated source
    async with ecus(channel) as bus, running_agent(config) as agent:

        def last() -> dict[str, object]:
            return {v.path: v.value for v in backend_store.last_values(VIN)}

        await eventually(lambda: {"Vehicle.Speed", "Vehicle.Mode"} <= set(last()), what="CAN values at the backend")
        speed = agent.state.get("Vehicle.Speed")
        assert speed is not None
        assert speed.source == "can"
        bus.open_door(Door.FRONT_LEFT)
        await eventually(lambda: last().get("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen") is True, what="door open")
