"""Integration fixtures: a bench folder wired to a real Mosquitto, and agents in-process or as processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from hil.broker import MosquittoBroker
from hil.layout import BenchLayout
from tcu.app import Agent
from tcu.config import load_agent_config
from tests.conftest import VIN

FAST_UPLINK = "\n[uplink]\nreconnect_base_s = 0.05\nreconnect_cap_s = 0.5\nack_timeout_s = 5\n"


@pytest.fixture
def layout(tmp_path: Path, mosquitto: MosquittoBroker) -> BenchLayout:
    bench = BenchLayout(root=tmp_path / "bench", broker_url=mosquitto.url)
    bench.create_backend()
    return bench


@pytest.fixture
async def backend(layout: BenchLayout) -> AsyncIterator[BackendStub]:
    stub = BackendStub(load_backend_config(layout.backend_config, env={}))
    task = asyncio.create_task(stub.run(), name="backend-under-test")
    await asyncio.wait_for(stub.service.connected.wait(), 10)
    yield stub
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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


class AgentProcess:
    """`tcu run` as a real process, so it can be killed with SIGKILL at any instant."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tcu.cli",
            "--log-level",
            "warning",
            "run",
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def signal(self, signum: signal.Signals) -> int:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)
        return await self.process.wait()


@pytest.fixture
def agent_processes() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.process is not None and agent.process.returncode is None:
            agent.process.kill()


def vehicle_config(
    layout: BenchLayout, *, interval_s: float = 0.02, extra: str = "", ecall: str = "[ecall]\nlegal_ecall = false\n"
) -> Path:
    return layout.add_vehicle(VIN, telemetry_interval_s=interval_s, extra=FAST_UPLINK + extra, ecall=ecall)


def legal_ecall(modem_path: str) -> str:
    """The [ecall] section of a legal-eCall vehicle whose modem is at `modem_path`."""
    return f'[ecall]\nlegal_ecall = true\nport = "{modem_path}"\n'


def drain_only_config(config: Path) -> Path:
    """The same vehicle with no signal source: it produces nothing and only drains its queue."""
    drain = config.with_name("agent-drain.toml")
    drain.write_text(config.read_text().replace("[simulation]\nenabled = true", "[simulation]\nenabled = false"))
    return drain
