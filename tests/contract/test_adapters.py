"""Contract tests of the serial sources: against the virtual devices in CI, against real adapters on a
bench when environment variables name their ports:

    TCU_HIL_OBD_PORT=/dev/ttyUSB0 TCU_HIL_CAN_PORT=/dev/ttyACM0 TCU_HIL_GNSS_PORT=/dev/ttyACM1 \\
        python -m pytest tests/contract -v

The assertions are what any working adapter must give, never values only the simulator produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hil.devices.elm327_sim import Elm327Simulator, Elm327Timing
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.pty_device import PtyDevice
from hil.devices.slcan_sim import SlcanSimulator
from tcu.clock import SystemClock
from tcu.sources.elm327_client import Elm327Client, Elm327ClientConfig
from tcu.sources.nmea_reader import NmeaConfig, NmeaReader
from tcu.sources.slcan_reader import SlcanConfig, SlcanReader
from tcu.vehicle.state import Quality, VehicleState
from tests.conftest import eventually

VIRTUAL: dict[str, type[PtyDevice]] = {"OBD": Elm327Simulator, "CAN": SlcanSimulator, "GNSS": NmeaSimulator}


@contextlib.asynccontextmanager
async def port(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """The real adapter's port when TCU_HIL_<KIND>_PORT names one, else a virtual device's."""
    real = os.environ.get(f"TCU_HIL_{kind}_PORT")
    if real:
        yield real
        return
    options: dict[str, object] = {"link_path": str(tmp_path / f"tty{kind}")}
    if kind == "OBD":
        options["timing"] = Elm327Timing.instant()
    async with VIRTUAL[kind](**options) as device:  # type: ignore[arg-type]
        yield device.path


@contextlib.asynccontextmanager
async def running(coroutine: object) -> AsyncIterator[None]:
    task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_obd_adapter_initialises_and_reports_engine_data(tmp_path: Path) -> None:
    state = VehicleState()
    async with port("OBD", tmp_path) as path:
        client = Elm327Client(Elm327ClientConfig(port=path), state=state, clock=SystemClock())
        async with running(client.run()):
            await eventually(lambda: client.info is not None, what="adapter initialised", within=30)
            await eventually(lambda: state.get("Vehicle.Speed") is not None, what="a speed reading", within=30)
            info = client.info
    assert info is not None  # the adapter said who it is and which protocol it found
    speed = state.get("Vehicle.Speed")
    assert speed is not None
    assert speed.source == "obd"
    assert 0 <= float(speed.value) <= 300


async def test_can_adapter_delivers_decoded_frames(tmp_path: Path) -> None:
    state = VehicleState()
    async with port("CAN", tmp_path) as path:
        reader = SlcanReader(SlcanConfig(port=path), state=state, clock=SystemClock())
        async with running(reader.run()):
            await eventually(lambda: reader.stats.messages >= 10, what="ten frames", within=30)
    assert reader.stats.signals > 0
    assert any(s.source == "can" and s.quality is Quality.GOOD for s in state.snapshot().values())


async def test_gnss_receiver_gives_a_plausible_fix(tmp_path: Path) -> None:
    state = VehicleState()
    async with port("GNSS", tmp_path) as path:
        reader = NmeaReader(NmeaConfig(port=path), state=state, clock=SystemClock())
        async with running(reader.run()):
            await eventually(
                lambda: state.get("Vehicle.CurrentLocation.Latitude") is not None, what="a position", within=60
            )
    latitude, longitude = (
        state.value("Vehicle.CurrentLocation.Latitude"),
        state.value("Vehicle.CurrentLocation.Longitude"),
    )
    assert isinstance(latitude, float)
    assert isinstance(longitude, float)
    assert -90 <= latitude <= 90
    assert -180 <= longitude <= 180


@pytest.mark.skipif(not os.environ.get("TCU_HIL_OBD_PORT"), reason="set TCU_HIL_OBD_PORT to read a real car's VIN")
async def test_real_car_reports_its_vin() -> None:
    client = Elm327Client(
        Elm327ClientConfig(port=os.environ["TCU_HIL_OBD_PORT"]), state=VehicleState(), clock=SystemClock()
    )
    async with running(client.run()):
        await eventually(lambda: client.info is not None, what="adapter initialised", within=30)
        vin = await client.read_vin()
    assert len(vin) == 17
