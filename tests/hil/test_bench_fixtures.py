"""The tcu_hil fixtures composed as a bench team composes them: an agent configured by a marker or a
factory, through the emulated link, with a tunnel, a broker outage, legal eCall, its own DBC, and the
no-loss assertion — which must also fail, naming the seqs, when the backend lacks one."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest

from backend_stub.store import BackendStore
from hil.audit import SeqAudit
from hil.broker import Broker
from hil.fixtures.agents import AgentFactory, AgentSpec, BenchAgent
from hil.layout import BenchLayout
from hil.pytest_plugin import BenchLink, RunningBackend, VirtualVehicle
from tests.hil.test_own_vehicle_bench import own_files

NoLoss = Callable[..., Awaitable[SeqAudit]]
OTHER_VIN = "WVWZZZ1JZXW000002"


def stored(vin: str, at_least: int = 1) -> Callable[[BackendStore], bool]:
    return lambda store: len(store.seqs(vin)) >= at_least


@pytest.fixture
async def delivering(tcu_agent: BenchAgent, tcu_backend: RunningBackend) -> BenchAgent:
    """`tcu_agent` (as its marker configures it) once the backend has stored a record of it."""
    await tcu_backend.wait_for(stored(tcu_agent.config.vin))
    return tcu_agent


@pytest.fixture
async def six_stored(tcu_agent_factory: AgentFactory, tcu_backend: RunningBackend) -> BenchAgent:
    """A car of the factory, running, whose first six records the backend has stored."""
    agent = await tcu_agent_factory()
    await tcu_backend.wait_for(stored(agent.config.vin, 6))
    return agent


@pytest.mark.tcu_agent(vin=OTHER_VIN, sources="virtual", telemetry_interval_s=0.1)
async def test_the_marker_configures_the_agent_and_shares_the_virtual_vehicle(
    tcu_agent: BenchAgent, tcu_virtual_vehicle: VirtualVehicle, tcu_backend: RunningBackend, tcu_link: BenchLink
) -> None:
    assert tcu_agent.config.vin == OTHER_VIN
    assert tcu_agent.vehicle is tcu_virtual_vehicle  # the test drives the agent's own car
    assert not tcu_agent.config.simulation.enabled
    assert tcu_agent.config.broker.url == tcu_link.url  # through the emulated network by default
    paths = {"Vehicle.Powertrain.CombustionEngine.Speed", "Vehicle.Mode", "Vehicle.CurrentLocation.Latitude"}
    await tcu_backend.wait_for(lambda store: {v.path for v in store.last_values(OTHER_VIN)} >= paths)
    locked = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"
    assert tcu_agent.state.value(locked) is not True
    tcu_virtual_vehicle.can.bus.lock()
    await tcu_backend.wait_for(lambda _: tcu_agent.state.value(locked) is True)


@pytest.mark.tcu_agent(link=False)
async def test_link_false_goes_straight_to_the_broker(
    delivering: BenchAgent, tcu_broker: Broker, tcu_link: BenchLink
) -> None:
    assert delivering.config.broker.url == tcu_broker.url
    assert delivering.config.simulation.enabled  # the default source: the simulated drive
    assert tcu_link.stats.connections == 0  # its records reached the backend all the same


async def test_a_tunnel_holds_records_and_loses_none(
    delivering: BenchAgent, tcu_link: BenchLink, assert_no_loss: NoLoss
) -> None:
    async with tcu_link.tunnel():
        await asyncio.sleep(1.5)
        held = delivering.outbox.stats().depth  # made in the tunnel, not acknowledged
    assert tcu_link.stats.cuts == 1
    assert held >= 3
    issued = delivering.issued_through
    audit = await assert_no_loss(delivering.config.vin)
    assert audit.stored >= issued  # the tunnel's records are judged, and all arrived


async def test_a_broker_outage_loses_nothing(
    delivering: BenchAgent, tcu_link: BenchLink, tcu_backend: RunningBackend, assert_no_loss: NoLoss
) -> None:
    connects = delivering.session.stats.connects
    await tcu_link.broker_outage(1)
    await tcu_backend.wait_for(lambda _: delivering.session.stats.connects > connects)
    await assert_no_loss(delivering.config.vin)


@pytest.mark.tcu_agent(sources="virtual", legal_ecall=True)
async def test_legal_ecall_calls_the_backends_psap(
    tcu_agent: BenchAgent, tcu_virtual_vehicle: VirtualVehicle, tcu_backend: RunningBackend
) -> None:
    assert tcu_agent.config.legal_ecall
    assert tcu_agent.modem is not None
    assert tcu_backend.psap is not None
    await tcu_backend.wait_for(lambda _: tcu_agent.state.value("Vehicle.CurrentLocation.Latitude") is not None)
    tcu_virtual_vehicle.can.bus.crash()
    psap = tcu_backend.psap
    await tcu_backend.wait_for(lambda _: psap.msds, timeout=30)
    assert psap.msds[0].msd is not None
    assert psap.msds[0].msd.vin == tcu_agent.config.vin


async def test_own_dbc_and_mapping_reach_the_can_source(
    tmp_path: Path, tcu_agent_factory: AgentFactory, tcu_backend: RunningBackend
) -> None:
    dbc, mapping = own_files(tmp_path / "car")
    agent = await tcu_agent_factory(sources="virtual", dbc=[dbc], mapping=mapping)
    decoder = agent.sources.can_decoder
    assert decoder is not None
    assert [entry.source for entry in decoder.entries] == ["Terminal.VehicleMode"]
    await tcu_backend.wait_for(lambda store: any(v.path == "Vehicle.Mode" for v in store.last_values(agent.config.vin)))


async def test_the_factory_runs_two_cars_and_restarts_one_with_its_keys(
    tcu_agent_factory: AgentFactory, tcu_backend: RunningBackend, assert_no_loss: NoLoss
) -> None:
    first = await tcu_agent_factory()
    second = await tcu_agent_factory(vin=OTHER_VIN, sources="virtual")
    assert second.vehicle is not None  # devices of its own
    with pytest.raises(ValueError, match="running already"):
        await tcu_agent_factory(vin=OTHER_VIN)
    for agent in (first, second):
        await tcu_backend.wait_for(stored(agent.config.vin, 3))
    await tcu_agent_factory.stop(second)
    again = await tcu_agent_factory(vin=OTHER_VIN)  # same keys, same queue: its numbers go on
    await tcu_backend.wait_for(lambda store: max(store.seqs(OTHER_VIN)) > again.issued_through - 2)
    for vin in (first.config.vin, OTHER_VIN):
        await assert_no_loss(vin)


def _doctor(bench: BenchLayout, sql: str, *args: object) -> None:
    """Change the backend's database behind its back: what a lossy backend would hold."""
    with closing(sqlite3.connect(bench.root / "backend.sqlite3")) as db, db:
        db.execute(sql, args)


async def test_assert_no_loss_names_a_seq_the_backend_lost(
    six_stored: BenchAgent, tcu_agent_factory: AgentFactory, tcu_bench: BenchLayout, assert_no_loss: NoLoss
) -> None:
    vin = six_stored.config.vin
    # The honest store passes; checked while the car runs, so what it had issued is delivered (a record
    # issued in the moment before a stop would stay in its queue, and be reported lost, rightly).
    await assert_no_loss(vin)
    await tcu_agent_factory.stop(six_stored)
    last, _ = tcu_agent_factory.issued(vin)  # stored, or issued just before the stop: lost either way
    assert last is not None
    _doctor(tcu_bench, "DELETE FROM records WHERE vin=? AND seq IN (3, ?)", vin, last)
    with pytest.raises(AssertionError, match=rf"LOST 2 seq\(s\), in no overflow event: 3, {last}\b"):
        await assert_no_loss(vin, timeout=0.3)  # the tail too: the agent had issued `last`


async def test_assert_no_loss_names_a_record_stored_twice(
    six_stored: BenchAgent, tcu_agent_factory: AgentFactory, tcu_bench: BenchLayout, assert_no_loss: NoLoss
) -> None:
    vin = six_stored.config.vin
    await tcu_agent_factory.stop(six_stored)
    _doctor(
        tcu_bench,
        "UPDATE records SET kind=(SELECT kind FROM records WHERE vin=?1 AND seq=2), "
        "created_ms=(SELECT created_ms FROM records WHERE vin=?1 AND seq=2), "
        "body=(SELECT body FROM records WHERE vin=?1 AND seq=2) WHERE vin=?1 AND seq=5",
        vin,
    )
    with pytest.raises(AssertionError, match=r"STORED TWICE 1 record\(s\) under other seqs: \[2, 5\]"):
        await assert_no_loss(vin, timeout=0.3)


async def test_assert_no_loss_refuses_an_agent_for_a_vin(tcu_agent: BenchAgent, assert_no_loss: NoLoss) -> None:
    with pytest.raises(TypeError, match=r"a VIN string, got BenchAgent \(use agent.config.vin\)"):
        await assert_no_loss(tcu_agent)


def test_agent_spec_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="sources: 'obd'; expected one of"):
        AgentSpec(sources="obd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"legal_ecall \(its crash trigger\) needs a CAN source"):
        AgentSpec(legal_ecall=True)
    with pytest.raises(ValueError, match="dbc/mapping needs a CAN source"):
        AgentSpec(sources={"obd": "/dev/ttyUSB0"}, mapping=Path("car.toml"))
    with pytest.raises(TypeError, match=r"a list of files, got the single 'car.dbc'"):
        AgentSpec(sources="virtual", dbc="car.dbc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="link: True or False, got 1"):
        AgentSpec(link=1)  # type: ignore[arg-type]
    assert AgentSpec(sources={"can": "/dev/ttyACM0"}, legal_ecall=True).has_can
