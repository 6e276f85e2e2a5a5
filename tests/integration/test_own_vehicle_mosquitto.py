"""Bring your own vehicle, end to end: two real-world DBC files none of our code was written for
(opendbc's VW MQB and Hyundai C-CAN, `tests/data/dbc/`) drive the agent through a real Mosquitto.

The car's ECUs are played on a python-can virtual bus from the DBC itself; every expected value is what
cantools decodes from the very frame sent, converted into the VSS unit. The VW car is a legal-eCall
vehicle whose 3-bit crash intensity triggers an eCall whose MSD reaches the PSAP stub.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import can
import pytest

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.psap import read_psap_msds
from backend_stub.store import BackendStore
from hil.broker import free_port
from hil.devices.modem_sim import ModemSimulator
from hil.layout import BenchLayout
from tcu.vehicle.can_database import load_can_database
from tests.conftest import VIN, eventually
from tests.integration.conftest import drain_only_config, legal_ecall, running_agent, vehicle_config

DATA = Path(__file__).parents[1] / "data" / "dbc"
pytestmark = pytest.mark.mosquitto


class Ecus:
    """The car's side of the bus: the latest payload of each message, sent every 20 ms."""

    def __init__(self, dbc: Path, channel: str) -> None:
        self.database = load_can_database([dbc])
        self._bus = can.Bus(interface="virtual", channel=channel)
        self._payloads: dict[str, bytes] = {}

    def set(self, message_name: str, **values: float) -> dict[str, Any]:
        """Send `message_name` with these signals (the others 0); returns what the DBC decodes from it."""
        message = self.database.get_message_by_name(message_name)
        data = {signal.name: 0 for signal in message.signals} | values
        payload = message.encode(data, strict=False)
        self._payloads[message_name] = payload
        return dict(message.decode(payload, decode_choices=False))

    async def run(self) -> None:
        while True:
            for name, payload in self._payloads.items():
                message = self.database.get_message_by_name(name)
                self._bus.send(can.Message(arbitration_id=message.frame_id, data=payload, is_extended_id=False))
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._bus.shutdown()


@contextlib.asynccontextmanager
async def ecus(dbc: Path, channel: str) -> AsyncIterator[Ecus]:
    car = Ecus(dbc, channel)
    task = asyncio.create_task(car.run(), name="ecus")
    try:
        yield car
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        car.close()


def _sources(channel: str, name: str) -> str:
    return (
        f'\n[sources.can]\ninterface = "virtual"\nchannel = "{channel}"\n'
        f'dbc = "{DATA / (name + ".dbc")}"\nmapping = "{DATA / (name + ".toml")}"\n'
    )


def _last(store: BackendStore) -> dict[str, Any]:
    return {v.path: v.value for v in store.last_values(VIN)}


async def _expect(store: BackendStore, expected: Mapping[str, Any]) -> None:
    def arrived() -> bool:
        last = _last(store)
        return all(last.get(path) == value for path, value in expected.items())

    await eventually(arrived, what=f"{dict(expected)} at the backend (has {_last(store)})")


async def test_a_hyundai_dbc_drives_the_agent_to_the_backend(
    layout: BenchLayout, backend_store: BackendStore, tmp_path: Path
) -> None:
    channel = f"hyundai-{tmp_path.name}"
    config = drain_only_config(vehicle_config(layout, interval_s=0.1, extra=_sources(channel, "hyundai_2015_ccan")))
    async with ecus(DATA / "hyundai_2015_ccan.dbc", channel) as car, running_agent(config):
        speed = car.set("CLU11", CF_Clu_Vanz=87.5)["CF_Clu_Vanz"]
        odometer = car.set("CLU12", CF_Clu_Odometer=123456.7)["CF_Clu_Odometer"]
        car.set("CGW1", CF_Gway_Ign1=1, CF_Gway_AstDrSw=1, CF_Gway_DrvKeyLockSw=0)
        car.set("CGW2", CF_Gway_RLDrSw=0, CF_Gway_RRDrSw=1)
        await _expect(
            backend_store,
            {
                "Vehicle.Speed": speed,  # km/h on the bus and in VSS
                "Vehicle.TraveledDistance": round(odometer, 1),  # the DBC's 0.1 km resolution, no float noise
                "Vehicle.LowVoltageSystemState": "ON",
                "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen": True,
                "Vehicle.Cabin.Door.Row2.DriverSide.IsOpen": False,
                "Vehicle.Cabin.Door.Row2.PassengerSide.IsOpen": True,
                "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": False,
            },
        )
        car.set("CGW1", CF_Gway_Ign1=0, CF_Gway_AstDrSw=0, CF_Gway_DrvKeyLockSw=1)  # parked and locked
        await _expect(
            backend_store,
            {
                "Vehicle.LowVoltageSystemState": "OFF",
                "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen": False,
                "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": True,
            },
        )


async def test_a_vw_dbc_drives_the_agent_and_its_crash_intensity_makes_the_ecall(
    layout: BenchLayout, tmp_path: Path
) -> None:
    layout.write_backend_config(replace(layout.backend(), psap_port=free_port()))
    backend = BackendStub(load_backend_config(layout.backend_config, env={}))
    assert backend.psap is not None
    backend_task = asyncio.create_task(backend.run())
    backend_store = backend.reader()
    channel = f"vw-{tmp_path.name}"
    trigger = '[[ecall.trigger]]\nkind = "crash"\nsignal = "Airbag_01.AB_Crash_Int"\nat_least = 1\n'
    try:
        await asyncio.wait_for(backend.service.connected.wait(), 10)
        await backend.psap.wait_listening()  # it starts beside the ingest, not behind it
        async with ModemSimulator(psap_address=backend.psap.address, link_path=tmp_path / "ttyMODEM") as modem:
            layout.set_legal_ecall(VIN, True)
            config = drain_only_config(
                vehicle_config(
                    layout,
                    interval_s=0.1,
                    extra=_sources(channel, "vw_mqb") + trigger,
                    ecall=legal_ecall(modem.path),
                )
            )
            async with ecus(DATA / "vw_mqb.dbc", channel) as car, running_agent(config):
                speed = car.set("ESP_21", ESP_v_Signal=62.37)["ESP_v_Signal"]
                odometer = car.set("Kombi_02", KBI_Kilometerstand=48213)["KBI_Kilometerstand"]
                car.set("Klemmen_Status_01", ZAS_Kl_15=1)
                car.set("Gateway_72", ZV_FT_offen=1, ZV_BT_offen=0)
                car.set("Airbag_01", AB_Crash_Int=0)
                await _expect(
                    backend_store,
                    {
                        "Vehicle.Speed": round(speed, 2),
                        "Vehicle.TraveledDistance": odometer,
                        "Vehicle.LowVoltageSystemState": "ON",
                        "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": True,
                        "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen": False,
                    },
                )
                assert not backend.psap.msds
                car.set("Airbag_01", AB_Crash_Int=3)  # a multi-bit crash intensity, not a True flag
                await eventually(lambda: bool(backend.psap and backend.psap.msds), what="MSD at the PSAP", within=30)
        [msd] = [row for row in read_psap_msds(backend.config.database) if row["kind"] == "automatic"]
        assert msd["vin"] == VIN
    finally:
        backend_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await backend_task
        backend_store.close()
