"""Issue 7 end to end: a legal-eCall vehicle whose telematics contract has been cancelled, suspended for
payment default and whose customer blocked every data category, crashes on the virtual CAN bus — and the
PSAP stub still decodes an MSD with the right VIN and position."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.psap import read_psap_msds
from hil.broker import free_port
from hil.devices.modem_sim import ModemSimulator
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.slcan_sim import SlcanSimulator
from hil.layout import BenchLayout
from tcu.cli import main as tcu_cli
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.vehicle.geo import distance_m
from telematics_wire.catalogue import Category
from telematics_wire.sim_state import SimState
from tests.conftest import VIN, eventually
from tests.integration.conftest import drain_only_config, legal_ecall, running_agent, vehicle_config


@pytest.fixture
async def backend_with_psap(layout: BenchLayout) -> BackendStub:
    layout.write_backend_config(replace(layout.backend(), psap_port=free_port()))
    return BackendStub(load_backend_config(layout.backend_config, env={}))


async def test_crash_reaches_the_psap_whatever_was_switched_off(
    layout: BenchLayout, backend_with_psap: BackendStub, tmp_path: Path
) -> None:
    backend = backend_with_psap
    assert backend.psap is not None
    assert backend.issuer is not None
    backend_task = asyncio.create_task(backend.run())
    cycle = DriveCycle()
    start = asyncio.get_running_loop().time()

    def elapsed() -> float:
        return asyncio.get_running_loop().time() - start

    can = SlcanSimulator(cycle=cycle, elapsed=elapsed, link_path=tmp_path / "ttyCAN")
    gnss = NmeaSimulator(cycle=cycle, elapsed=elapsed, start_utc=datetime.now(UTC), link_path=tmp_path / "ttyGNSS")
    try:
        await asyncio.wait_for(backend.service.connected.wait(), 10)
        await backend.psap.wait_listening()  # it starts beside the ingest, not behind it
        async with (
            can,
            gnss,
            ModemSimulator(psap_address=backend.psap.address, link_path=tmp_path / "ttyMODEM") as modem,
        ):
            layout.set_legal_ecall(VIN, True)
            sources = f'\n[sources.can]\nport = "{can.path}"\n[sources.gnss]\nport = "{gnss.path}"\n'
            config = drain_only_config(
                vehicle_config(layout, interval_s=0.5, extra=sources, ecall=legal_ecall(modem.path))
            )
            async with running_agent(config) as agent:
                # Every way a contract or a person could switch things off:
                issuer = backend.issuer
                await backend.operate(issuer.book, VIN, "6AE")  # on the backend's database thread
                await backend.operate(issuer.book, VIN, "6AC")
                await backend.operate(issuer.book, VIN, "STORE-CONNECTED", "1y")  # paid, for the payment default
                booked = {"6AE", "6AC", "STORE-CONNECTED"}
                await eventually(lambda: agent.services.entitlements.running == booked, what="booked")
                await backend.operate(issuer.cancel, VIN, "6AE")
                await backend.operate(issuer.cancel, VIN, "6AC")
                await backend.operate(issuer.suspend, VIN)
                await backend.operate(issuer.deactivate_sim, VIN)  # the dealer: 6AE and 6AC end, the SIM stays for 112
                for category in Category:
                    # The driver's command line is its own process in a car; here a thread, off the test's loop.
                    argv = ["privacy", "--config", str(config), category.value, "block"]
                    assert await asyncio.to_thread(tcu_cli, argv) == 0
                await eventually(lambda: agent.services.entitlements.version >= 7, what="all files applied")
                entitlements = agent.services.entitlements
                # A cancellation runs out after six weeks' notice (AGB 6.2); the payment default suspends the paid
                # services and the intelligent call (AGB 5.5 c), never the legal eCall nor the SIM under it.
                assert "6AC" not in entitlements.running
                assert entitlements.legal_ecall
                assert agent.sim.state is SimState.TELEMATICS_DEACTIVATED  # eCall-only: never fully off
                await eventually(lambda: agent.state.value("Vehicle.CurrentLocation.Latitude") is not None, what="fix")
                crash_at = elapsed()
                crash_wall_ms = datetime.now(UTC).timestamp() * 1000
                can.bus.crash()
                await eventually(lambda: bool(backend.psap and backend.psap.msds), what="MSD at the PSAP", within=30)
        [msd] = [row for row in read_psap_msds(backend.config.database) if row["kind"] == "automatic"]
        assert msd["vin"] == VIN
        # Until the PSAP has the MSD, telematics keeps off the radio: nothing made after the crash got through.
        with contextlib.closing(backend.reader()) as backend_store:
            early = [
                r
                for r in backend_store.records(VIN)
                if r.created.timestamp() * 1000 > crash_wall_ms and r.received.timestamp() * 1000 < msd["received_ms"]
            ]
        assert early == [], [(r.seq, r.body.get("type")) for r in early]
        where = cycle.at(crash_at)
        assert distance_m((where.latitude, where.longitude), (msd["latitude_deg"], msd["longitude_deg"])) < 200
        assert msd["position_trusted"]
    finally:
        backend_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await backend_task
