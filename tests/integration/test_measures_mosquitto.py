"""Issue 5 end to end: a remote measure on the parked car, interrupted when the customer unlocks it on
the virtual CAN bus, rolled back, retried by the backend's scheduler and completed — through Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.measure_store import MeasureState, MeasureStore
from hil.devices.slcan_sim import SlcanSimulator
from hil.layout import BenchLayout
from tcu.vehicle.drive_cycle import DriveCycle
from telematics_wire.measure_plan import Fault, one_step_per_change
from telematics_wire.vehicle_mode import VehicleMode
from tests.conftest import VIN, eventually
from tests.integration.conftest import drain_only_config, running_agent, vehicle_config

CHANGES = {
    "navigation.traffic_feed": "rtti-v3",
    "navigation.poi_database": "2026-Q1",
    "navigation.map_region": "EU-2027",
}


async def test_measure_interrupted_by_unlock_is_retried_and_completes(layout: BenchLayout, tmp_path: Path) -> None:
    layout.backend_config.write_text(
        layout.backend_config.read_text() + "\n[measures]\nretry_base_s = 1\nretry_cap_s = 2\n"
    )
    backend = BackendStub(load_backend_config(layout.backend_config, env={}))
    assert backend.measures is not None
    backend_task = asyncio.create_task(backend.run())
    can = SlcanSimulator(cycle=DriveCycle(parked=((0.0, 3600.0),)), link_path=tmp_path / "ttyCAN")
    try:
        await asyncio.wait_for(backend.service.connected.wait(), 10)
        async with can:
            config = drain_only_config(
                vehicle_config(layout, interval_s=0.2, extra=f'\n[sources.can]\nport = "{can.path}"\n')
            )
            async with running_agent(config) as agent:
                can.bus.lock()  # parked and locked, as the customer left it
                await eventually(lambda: agent.state.value("Vehicle.Mode") == "parked", what="parked car")
                await eventually(
                    lambda: agent.state.value("Vehicle.Body.CentralLock.State") == "LOCKED", what="locked car"
                )
                with contextlib.closing(backend.reader()) as backend_store:
                    await eventually(
                        lambda: backend_store.last_value(VIN, "Vehicle.Mode") is not None, what="mode known"
                    )
                await backend.operate(  # on the backend's database thread, which owns its stores
                    backend.measures.send,
                    vin=VIN,
                    measure_id="FIX-4711",
                    fault=Fault(ref="TICKET-4711 no traffic information", service="navigation"),
                    steps=one_step_per_change(CHANGES, expected_ms=400),
                    allowed_states=(VehicleMode.PARKED,),
                    impairs=("6AP",),
                )
                await eventually(lambda: agent.measures.current is not None, what="attempt 1 running")
                can.bus.unlock()  # the customer opens the car mid-measure
                # What the backend committed, on a connection of the test's own.
                with contextlib.closing(MeasureStore(backend.config.database)) as committed:
                    await eventually(lambda: len(committed.history("FIX-4711")) >= 2, what="retry sent")
                    await eventually(lambda: _state(committed) == MeasureState.SUCCEEDED, what="measure succeeded")
                    history = committed.history("FIX-4711")
                assert {k: agent.ecu.values[k] for k in CHANGES} == CHANGES
        assert (history[0].status, history[0].code) == ("rolled_back", "lock_or_unlock")
        assert history[-1].status == "succeeded"
        assert history[-1].impaired_s is not None
        assert 1.0 <= history[-1].impaired_s < 600
    finally:
        backend_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await backend_task


def _state(committed: MeasureStore) -> str | None:
    measure = committed.get("FIX-4711")
    return None if measure is None else measure.state
