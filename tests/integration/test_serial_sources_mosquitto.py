"""Issue 3 end to end: virtual ELM327, SLCAN and NMEA devices on ptys feed an agent configured only
through [sources.*], and their values reach the backend stub through a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

from backend_stub.store import BackendStore
from hil.devices.elm327_sim import Elm327Simulator, Elm327Timing
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.slcan_sim import Door, SlcanSimulator
from hil.layout import BenchLayout
from tests.conftest import VIN, eventually
from tests.integration.conftest import drain_only_config, running_agent, vehicle_config


def _last(store: BackendStore) -> dict[str, object]:
    return {v.path: v.value for v in store.last_values(VIN)}


async def test_virtual_devices_feed_the_agent_and_the_backend(
    layout: BenchLayout, backend_store: BackendStore, tmp_path: Path
) -> None:
    obd = Elm327Simulator(timing=Elm327Timing.instant(), link_path=tmp_path / "ttyOBD")
    can = SlcanSimulator(link_path=tmp_path / "ttyCAN")
    gnss = NmeaSimulator(link_path=tmp_path / "ttyGNSS", interval_s=0.2)
    async with obd, can, gnss:
        sources = (
            f'\n[sources.obd]\nport = "{obd.path}"\n'
            f'\n[sources.can]\nport = "{can.path}"\n'
            f'\n[sources.gnss]\nport = "{gnss.path}"\nbaudrate = 9600\n'
        )
        config = drain_only_config(vehicle_config(layout, interval_s=0.2, extra=sources))  # no simulated source
        async with running_agent(config) as agent:
            wanted = {
                "Vehicle.Powertrain.CombustionEngine.Speed": "obd",
                "Vehicle.Speed": "can",
                "Vehicle.Mode": "can",  # (the odometer comes from OBD and CAN alike: last writer wins)
                "Vehicle.CurrentLocation.Latitude": "gnss",
                "Vehicle.CurrentLocation.Longitude": "gnss",
            }
            await eventually(lambda: set(wanted) <= set(_last(backend_store)), what="values from all three devices")
            for path, source in wanted.items():
                signal = agent.state.get(path)
                assert signal is not None
                assert signal.source == source, path
            latitude = _last(backend_store)["Vehicle.CurrentLocation.Latitude"]
            assert isinstance(latitude, float)
            assert 48.0 < latitude < 48.3  # the drive-cycle route through Munich
            can.bus.open_door(Door.FRONT_LEFT)
            await eventually(
                lambda: _last(backend_store).get("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen") is True, what="door open"
            )
