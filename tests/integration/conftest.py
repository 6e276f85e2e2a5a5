"""Integration fixtures: a bench folder wired to a real Mosquitto, and agents in-process or as processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest

from backend_stub.app import BackendStub
from backend_stub.store import BackendStore
from hil.agent_process import AgentProcess
from hil.broker import MosquittoBroker
from hil.config_toml import TomlValue
from hil.fixtures.backend import running_backend
from hil.layout import NO_ECALL, BenchLayout
from tcu.app import Agent
from tcu.config import QueueConfig, UplinkConfig, load_agent_config
from tests.conftest import VIN

FAST_UPLINK = UplinkConfig(reconnect_base_s=0.05, reconnect_cap_s=0.5, ack_timeout_s=5)


@pytest.fixture
def layout(tmp_path: Path, mosquitto: MosquittoBroker) -> BenchLayout:
    bench = BenchLayout(root=tmp_path / "bench", broker_url=mosquitto.url)
    bench.create_backend()
    return bench


@pytest.fixture
async def backend(layout: BenchLayout) -> AsyncIterator[BackendStub]:
    async with running_backend(layout.backend_config) as stub:
        yield stub


@pytest.fixture
def backend_store(backend: BackendStub) -> Iterator[BackendStore]:
    """What the running `backend` has committed, on a connection of its own (`BackendStub.reader`): its
    own connection belongs to its database thread, where a batch may be half written."""
    with contextlib.closing(backend.reader()) as reader:
        yield reader


@contextlib.asynccontextmanager
async def running_agent(config: Path) -> AsyncIterator[Agent]:
    """An agent in this process, cancelled on exit."""
    agent = Agent(load_agent_config(config, env={}))
    task = asyncio.create_task(agent.run(), name="agent-under-test")
    await agent.ready.wait()
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def agent_processes() -> AsyncIterator[list[AgentProcess]]:
    """Agents a test starts as processes (`tcu run`): any still running at its end are killed."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        await agent.kill()


def vehicle_config(
    layout: BenchLayout,
    *,
    interval_s: float = 0.02,
    extra: str = "",
    ecall: Mapping[str, TomlValue] | str = NO_ECALL,
    queue: QueueConfig | None = None,
) -> Path:
    return layout.add_vehicle(
        VIN, telemetry_interval_s=interval_s, uplink=FAST_UPLINK, queue=queue, extra=extra, ecall=ecall
    )


def legal_ecall(modem_path: str, **more: TomlValue) -> dict[str, TomlValue]:
    """The [ecall] table of a legal-eCall vehicle whose modem is at `modem_path`, with `more` keys."""
    return {"legal_ecall": True, "port": modem_path, **more}


def drain_only_config(config: Path) -> Path:
    """The same vehicle with no signal source: it produces nothing and only drains its queue."""
    drain = config.with_name("agent-drain.toml")
    drain.write_text(config.read_text().replace("[simulation]\nenabled = true", "[simulation]\nenabled = false"))
    return drain
