"""The intelligent emergency call (6AC) through the real path: a crash on the virtual CAN bus of a legal-eCall
vehicle with 6AC booked → the modem simulator dials the call centre's number (ATD) on a pty → the backend's
call-centre stub answers the voice call, and the MSD with the additional data arrives as a sealed record
through Mosquitto, where the call centre shows it (and `backend-stub call-centre-cases` reads it back).
The PSAP gets no call while the call centre works."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend_stub.app import BackendStub
from backend_stub.call_centre import read_call_centre_cases
from backend_stub.cli import main as backend_cli
from backend_stub.config import load_backend_config
from hil.broker import free_port
from hil.devices.modem_sim import ModemSimulator
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.slcan_sim import SlcanSimulator
from hil.layout import BenchLayout
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.vehicle.geo import distance_m
from tests.conftest import VIN, eventually
from tests.integration.conftest import drain_only_config, legal_ecall, running_agent, vehicle_config

NUMBER = "+498912345678"


@pytest.fixture
async def backend(layout: BenchLayout) -> BackendStub:
    layout.write_backend_config(replace(layout.backend(), psap_port=free_port(), call_centre_port=free_port()))
    return BackendStub(load_backend_config(layout.backend_config, env={}))


async def test_a_crash_reaches_the_call_centre_by_voice_and_its_data_through_mosquitto(
    layout: BenchLayout, backend: BackendStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.psap is not None
    assert backend.call_centre is not None
    assert backend.issuer is not None
    centre = backend.call_centre
    backend_task = asyncio.create_task(backend.run())
    cycle = DriveCycle()
    start = asyncio.get_running_loop().time()

    def elapsed() -> float:
        return asyncio.get_running_loop().time() - start

    can = SlcanSimulator(cycle=cycle, elapsed=elapsed, link_path=tmp_path / "ttyCAN")
    gnss = NmeaSimulator(cycle=cycle, elapsed=elapsed, start_utc=datetime.now(UTC), link_path=tmp_path / "ttyGNSS")
    try:
        await asyncio.wait_for(backend.service.connected.wait(), 10)
        await eventually(lambda: centre.listening, what="call centre listening")
        await backend.psap.wait_listening()  # it starts beside the ingest, not behind it
        modem = ModemSimulator(
            psap_address=backend.psap.address, link_path=tmp_path / "ttyMODEM", numbers={NUMBER: centre.address}
        )
        async with can, gnss, modem:
            layout.set_legal_ecall(VIN, True)
            sources = f'\n[sources.can]\nport = "{can.path}"\n[sources.gnss]\nport = "{gnss.path}"\n'
            ecall = legal_ecall(
                modem.path,
                call_centre_number=NUMBER,
                vehicle_model="BMW 320d Touring",
                vehicle_colour="Mineralgrau",
            )
            config = drain_only_config(vehicle_config(layout, interval_s=0.5, extra=sources, ecall=ecall))
            async with running_agent(config) as agent:
                await backend.operate(backend.issuer.book, VIN, "6AE")  # on the backend's database thread
                await backend.operate(backend.issuer.book, VIN, "6AC")
                await eventually(lambda: agent.services.entitlements.intelligent_ecall, what="6AC running")
                await eventually(lambda: agent.state.value("Vehicle.CurrentLocation.Latitude") is not None, what="fix")
                crash_at = elapsed()
                can.bus.crash()
                case = await centre.wait_for_case(within_s=30)
                await centre.wait_for(lambda: any(c.at("answered") for c in centre.calls), what="voice call")
                assert f"ATD{NUMBER};" in modem.requests
        assert case.vin == VIN
        assert case.problems == ()
        assert (case.call_type, case.severity, case.fallback_to_112) == ("automatic", "airbag_deployed", True)
        assert (case.model, case.colour) == ("BMW 320d Touring", "Mineralgrau")
        assert case.msd is not None
        assert case.msd.vin == VIN
        assert case.msd.automatic_activation
        assert case.msd.position_can_be_trusted
        where = cycle.at(crash_at)
        assert distance_m((where.latitude, where.longitude), (case.msd.latitude_deg, case.msd.longitude_deg)) < 200
        assert backend.psap.calls == [], "the call centre answered: no 112 eCall"
        # The record is in the backend's store, where the CLI reads it back.
        with contextlib.closing(backend.reader()) as backend_store:
            [stored] = read_call_centre_cases(backend_store, VIN)
        assert stored.msd == case.msd
        assert backend_cli(["call-centre-cases", "--config", str(layout.backend_config), "--vin", VIN]) == 0
        assert f"vin={VIN}" in capsys.readouterr().out
    finally:
        backend_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await backend_task
