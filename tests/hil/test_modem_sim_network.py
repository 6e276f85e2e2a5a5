"""The modem simulator's network offer (issue 17): LTE with IMS emergency, 2G/3G, or both, as 3GPP TS 27.007
reports it (`AT+CNEM`, `+CNEMS1`, `+CREG`/`+CEREG`), and the CS eCall refused where 2G/3G is switched off.

The last tests speak through the agent's own `ModemClient` (S2's `AT+CNEM` parser), so the simulator and the
agent are held to one reading of the standard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from backend_stub.psap import PsapStub
from hil.devices.modem_sim import Coverage, ModemSimulator, ModemTiming, Network
from tcu.backoff import Backoff
from tcu.sources.modem import RegistrationStatus
from tcu.sources.modem_client import ModemClient, ModemClientConfig, ModemEvent, ModemStatus
from tests.conftest import eventually
from tests.hil.test_modem_sim import rig


async def test_a_legacy_network_reports_no_ims_emergency_and_carries_the_cs_ecall(tmp_path: Path) -> None:
    async with rig(tmp_path) as (psap, _, at):  # legacy_only is the default: today's bench unchanged
        assert await at.ask("AT+CNEM=1") == ["OK"]
        assert await at.ask("AT+CNEM?") == ["+CNEM: 1,0,0", "OK"]
        assert await at.ask("AT+CREG?") == ["+CREG: 0,1", "OK"]
        assert await at.ask("AT+CEREG?") == ["+CEREG: 0,0", "OK"]
        assert await at.ask("AT+CECALL=3") == ["OK"]
        await at.urc("+CECALLIND: 1")
        assert psap.call().kind == "automatic"
        await psap.clear_down()
        await at.urc("NO CARRIER")


async def test_lte_only_offers_ims_emergency_and_refuses_the_cs_ecall_for_want_of_2g3g(tmp_path: Path) -> None:
    async with rig(tmp_path, network=Network.LTE_ONLY) as (psap, sim, at):
        assert await at.ask("AT+CNEM?") == ["+CNEM: 0,0,1", "OK"]  # reporting off, the S1 support all the same
        assert await at.ask("AT+CREG?") == ["+CREG: 0,0", "OK"]  # not in the CS domain
        assert await at.ask("AT+CEREG?") == ["+CEREG: 0,1", "OK"]
        assert await at.ask("AT+CSQ") == ["+CSQ: 20,99", "OK"]  # the LTE cell is heard
        await at.ask("AT+CMEE=1")
        assert await at.ask("AT+CECALL=3") == ["+CME ERROR: 30"]
        assert not sim.in_call
        assert psap.calls == []


async def test_both_offers_ims_emergency_and_still_carries_the_cs_ecall(tmp_path: Path) -> None:
    async with rig(tmp_path, network=Network.BOTH) as (psap, _, at):
        assert await at.ask("AT+CNEM?") == ["+CNEM: 0,0,1", "OK"]
        assert await at.ask("AT+CREG?") == ["+CREG: 0,1", "OK"]
        assert await at.ask("AT+CECALL=3") == ["OK"]  # the CS fall-back of an NG attempt that failed
        await at.urc("+CECALLIND: 1")
        await psap.clear_down()
        await at.urc("NO CARRIER")


async def test_cnems1_reports_a_change_of_the_offer_only_when_enabled(tmp_path: Path) -> None:
    async with rig(tmp_path, network=Network.BOTH) as (_, sim, at):
        await sim.set_network(Network.LEGACY_ONLY)  # reporting off: nothing unsolicited
        assert await at.ask("AT+CNEM?") == ["+CNEM: 0,0,0", "OK"]
        assert await at.ask("AT+CNEM=1") == ["OK"]
        await sim.set_network(Network.LTE_ONLY)
        await at.urc("+CNEMS1: 1")
        await sim.set_coverage(Coverage.NO_SERVICE)  # no cell: no emergency bearer either
        await at.urc("+CNEMS1: 0")
        await sim.reset()  # power-on settings: reporting off again
        await at.urc("RDY")
        await at.ask("ATE0")
        await sim.set_coverage(Coverage.REGISTERED)
        assert await at.ask("AT+CNEM?") == ["+CNEM: 0,0,1", "OK"]
        assert at.urcs == []


@contextlib.asynccontextmanager
async def agent_modem(tmp_path: Path, network: Network) -> AsyncIterator[tuple[ModemSimulator, list[ModemEvent]]]:
    async with PsapStub() as psap:
        sim = ModemSimulator(
            psap_address=psap.address, timing=ModemTiming.instant(), link_path=tmp_path / "ttyMODEM", network=network
        )
        async with sim:
            events: list[ModemEvent] = []
            config = ModemClientConfig(
                port=sim.path,
                command_timeout_s=0.5,
                poll_interval_s=30.0,
                backoff=Backoff(base_s=0.05, cap_s=0.2),
                report_ims_emergency=True,
            )
            client = ModemClient(config, on_event=events.append)
            async with asyncio.TaskGroup() as tasks:
                task = tasks.create_task(client.run(), name="modem-client")
                try:
                    await eventually(lambda: client.ready, what="modem initialised")
                    yield sim, events
                finally:
                    task.cancel()


def _last_status(events: list[ModemEvent]) -> ModemStatus:
    return [event for event in events if isinstance(event, ModemStatus)][-1]


async def test_the_agents_modem_client_reads_each_offer_as_the_transport_choice_needs_it(tmp_path: Path) -> None:
    """What `choose_transport` is given: IMS emergency from `+CNEM`, 2G/3G from the CS registration."""
    offers = {}
    for network in Network:
        async with agent_modem(tmp_path, network) as (sim, events):
            assert "AT+CNEM=1" in sim.requests
            status = _last_status(events)
            offers[network] = (status.ims_emergency, status.registration is RegistrationStatus.HOME)
    assert offers == {
        Network.LEGACY_ONLY: (False, True),
        Network.LTE_ONLY: (True, False),
        Network.BOTH: (True, True),
    }


async def test_the_agent_hears_ims_emergency_come_and_go_by_urc(tmp_path: Path) -> None:
    async with agent_modem(tmp_path, Network.BOTH) as (sim, events):
        assert _last_status(events).ims_emergency
        await sim.set_network(Network.LEGACY_ONLY)
        await eventually(lambda: not _last_status(events).ims_emergency, what="+CNEMS1: 0 heard")
        await sim.set_network(Network.LTE_ONLY)
        await eventually(lambda: _last_status(events).ims_emergency, what="+CNEMS1: 1 heard")
