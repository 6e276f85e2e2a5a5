"""A legal-eCall agent fixture waits for the backend's PSAP stub to listen instead of failing at setup:
the PSAP opened its archive (and once compiled the MSD modules) before it listened, which raced `tcu_agent`
3 runs in 5.

Every test here slows the PSAP's start down on purpose (`tcu_bench` below), so the race is certain."""

from __future__ import annotations

import asyncio

import pytest

import hil.fixtures.agents
from backend_stub.psap import PsapStub
from hil.fixtures.agents import AgentFactory, BenchAgent
from hil.layout import BenchLayout
from hil.pytest_plugin import RunningBackend

SLOW_START_S = 1.0  # much longer than the backend's MQTT connect that tcu_backend waits for


@pytest.fixture
def tcu_bench(tcu_bench: BenchLayout, monkeypatch: pytest.MonkeyPatch) -> BenchLayout:
    original = PsapStub.start

    async def slow_start(self: PsapStub) -> None:
        await asyncio.sleep(SLOW_START_S)
        await original(self)

    monkeypatch.setattr(PsapStub, "start", slow_start)
    return tcu_bench


@pytest.mark.tcu_agent(sources="virtual", legal_ecall=True)
async def test_a_legal_ecall_agent_waits_for_a_slow_psap(tcu_agent: BenchAgent, tcu_backend: RunningBackend) -> None:
    assert tcu_backend.psap is not None
    assert tcu_backend.psap.listening
    assert tcu_agent.modem is not None
    assert tcu_agent.modem.psap_address == tcu_backend.psap.address


async def test_a_psap_that_never_listens_fails_with_a_reason(
    tcu_agent_factory: AgentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hil.fixtures.agents, "PSAP_READY_S", 0.1)  # shorter than the slow start
    reason = r"PSAP stub is not reachable: the PSAP did not start listening on .* 0\.1 s"
    with pytest.raises(RuntimeError, match=reason):
        await tcu_agent_factory(sources="virtual", legal_ecall=True)


async def test_wait_listening_follows_the_stubs_lifecycle() -> None:
    psap = PsapStub(port=0, database=None)
    with pytest.raises(TimeoutError, match=r"the PSAP did not start listening on 127\.0\.0\.1:0 within 0\.05 s"):
        await psap.wait_listening(within_s=0.05)
    async with psap:
        assert await psap.wait_listening(within_s=5) == psap.address
    with pytest.raises(TimeoutError):  # closed: no longer listening
        await psap.wait_listening(within_s=0.05)
