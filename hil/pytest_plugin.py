"""pytest fixtures for bench teams: a broker, a backend, agents configured per test, the network between.

Installed as the pytest plugin `tcu_hil` (entry point `pytest11`), so in a project that has
`tcu-sim` installed a test needs nothing else — no conftest, no `asyncio_mode`:

    @pytest.mark.tcu_agent(sources="virtual")
    async def test_a_tunnel_loses_nothing(tcu_agent, tcu_link, assert_no_loss):
        async with tcu_link.tunnel(seconds=10):
            pass
        await assert_no_loss(tcu_agent.config.vin)

Fixtures (function scope):

- `tcu_agent`    a running agent (`hil.fixtures.agents.BenchAgent`: an `Agent` with `.vehicle`, `.modem`),
                 configured by `@pytest.mark.tcu_agent(...)` with the fields of `AgentSpec`:
                 `vin`, `sources` ("simulated" drive by default, "virtual" = the `tcu_virtual_vehicle`
                 devices, or `{"can": port, ...}`), `dbc`, `mapping`, `legal_ecall`, `link`
                 (through `tcu_link`, the default, or straight to the broker), `telemetry_interval_s`,
                 `extra` (more TOML). A conftest may override `tcu_agent_config` (returns an `AgentSpec`)
                 to set them for a whole folder; the marker wins over it.
- `tcu_agent_factory`  more agents, or one configured inside the test:
                 `await tcu_agent_factory(vin=..., sources="virtual", legal_ecall=True)`; "virtual" here
                 gives the car devices of its own (pass `sources=tcu_virtual_vehicle` to share); all
                 are stopped at the end; `await tcu_agent_factory.stop(agent)` stops one earlier.
- `tcu_link`     the emulated network between agents and broker (`hil.fixtures.link.BenchLink`):
                 `tunnel(seconds)`, `latency(latency_s, seconds)`, `loss(probability, seconds)`,
                 `broker_outage(seconds, kill=False)`; each `await`ed or held with `async with`; `.net`
                 is the `NetworkEmulator` itself.
- `assert_no_loss`  `await assert_no_loss(vin, timeout=30)`: every sequence number the car had issued is
                 stored once at the backend or named by a queue_overflow event; waits for what is still
                 in flight, then fails naming the lost seqs (`hil.fixtures.no_loss`; `check_no_loss` is
                 the same check on any store, at once). A VIN no agent of the test ran, or a car that
                 issued nothing, fails too: nothing to check (`allow_empty=True` if that is expected).
- `tcu_virtual_vehicle`  ELM327, SLCAN and NMEA devices on ptys following one drive (`.obd`, `.can`,
                 `.gnss`, `.ports`); `.can.bus.crash()`, `.unlock()`, ...
- `tcu_backend`  a running BackendStub (`.store`, `.ingest`, `.psap`, `.wait_for(predicate)`)
- `tcu_bench`    a BenchLayout in a temporary folder wired to the broker, backend keys made, a PSAP stub
- `tcu_broker`   a real Mosquitto on a free loopback port when installed, else the embedded broker
                 (set TCU_HIL_BROKER=mosquitto to insist on Mosquitto)

asyncio: async tests that use these fixtures are marked `asyncio` by the plugin itself, and its async
fixtures are pytest-asyncio fixtures, so they run whatever the project's `asyncio_mode` (strict or auto).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio

from hil.audit import SeqAudit
from hil.broker import Broker, choose_broker, free_port
from hil.fixtures.agents import AgentFactory, AgentSpec, BenchAgent, VirtualVehicle, virtual_vehicle
from hil.fixtures.backend import RunningBackend, bench_backend
from hil.fixtures.link import BenchLink
from hil.fixtures.no_loss import check_no_loss
from hil.layout import BenchLayout
from hil.netem import NetworkEmulator

__all__ = ["AgentSpec", "BenchAgent", "BenchLink", "RunningBackend", "VirtualVehicle", "check_no_loss"]

FIXTURES = frozenset(
    {
        "tcu_agent",
        "tcu_agent_config",
        "tcu_agent_factory",
        "tcu_link",
        "assert_no_loss",
        "tcu_virtual_vehicle",
        "tcu_backend",
        "tcu_bench",
        "tcu_broker",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tcu_agent(**spec): configure the tcu_agent fixture (hil.fixtures.agents.AgentSpec)"
    )


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Generator[None, Any, None]:
    """Mark async tests using our fixtures `asyncio` before pytest-asyncio looks (its wrapper encloses
    this one: `trylast`), so they run in strict mode too; `pytest_collection_modifyitems` is too late."""
    outcome = yield
    result = outcome.get_result()
    for item in result if isinstance(result, list) else [result]:
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(item.obj)
            and FIXTURES.intersection(item.fixturenames)
            and item.get_closest_marker("asyncio") is None
        ):
            item.add_marker(pytest.mark.asyncio)


@pytest_asyncio.fixture(loop_scope="function")
async def tcu_virtual_vehicle(tmp_path: Path) -> AsyncIterator[VirtualVehicle]:
    async with virtual_vehicle(tmp_path / "vehicle") as vehicle:
        yield vehicle


@pytest_asyncio.fixture(loop_scope="function")
async def tcu_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    prefer: Literal["auto", "mosquitto", "embedded"] = "auto"
    if os.environ.get("TCU_HIL_BROKER") in ("mosquitto", "embedded"):
        prefer = os.environ["TCU_HIL_BROKER"]  # type: ignore[assignment]
    broker = choose_broker(tmp_path / "broker", prefer)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
def tcu_bench(tmp_path: Path, tcu_broker: Broker) -> BenchLayout:
    layout = BenchLayout(root=tmp_path / "bench", broker_url=tcu_broker.url, protocol=tcu_broker.protocol)
    layout.create_backend()
    # The 112 network's PSAP, for cars with legal eCall; the operator clears down after 5 s of voice.
    layout.write_backend_config(replace(layout.backend(), psap_port=free_port(), psap_voice_s=5.0))
    return layout


@pytest_asyncio.fixture(loop_scope="function")
async def tcu_backend(tcu_bench: BenchLayout) -> AsyncIterator[RunningBackend]:
    async with bench_backend(tcu_bench.backend_config, name="tcu-hil-backend") as backend:
        yield backend


@pytest_asyncio.fixture(loop_scope="function")
async def tcu_link(tcu_broker: Broker) -> AsyncIterator[BenchLink]:
    async with NetworkEmulator(upstream_port=tcu_broker.port) as net:
        yield BenchLink(net, tcu_broker)


@pytest_asyncio.fixture(loop_scope="function")
async def tcu_agent_factory(
    tmp_path: Path, tcu_bench: BenchLayout, tcu_backend: RunningBackend, tcu_link: BenchLink
) -> AsyncIterator[AgentFactory]:
    factory = AgentFactory(bench=tcu_bench, backend=tcu_backend.stub, link=tcu_link, folder=tmp_path / "vehicles")
    try:
        yield factory
    finally:
        await factory.aclose()


@pytest.fixture
def tcu_agent_config() -> AgentSpec:
    """Override in a conftest to configure `tcu_agent` for a folder; `@pytest.mark.tcu_agent` wins."""
    return AgentSpec()


@pytest.fixture
def _tcu_agent_spec(request: pytest.FixtureRequest, tcu_agent_config: AgentSpec) -> AgentSpec:
    """The marker over the config, with sources="virtual" bound to the `tcu_virtual_vehicle` fixture.

    A sync fixture on purpose: it may set up that async fixture here, which an async fixture could
    not (pytest-asyncio would have to run the loop from inside itself)."""
    spec = tcu_agent_config
    marker = request.node.get_closest_marker("tcu_agent")
    if marker is not None:
        if marker.args:
            pytest.fail(f"@pytest.mark.tcu_agent takes keywords only, got {marker.args!r}", pytrace=False)
        known = {f.name for f in fields(AgentSpec)}
        if unknown := sorted(set(marker.kwargs) - known):
            pytest.fail(f"@pytest.mark.tcu_agent: unknown {unknown}; known: {sorted(known)}", pytrace=False)
        try:
            spec = replace(spec, **marker.kwargs)
        except (TypeError, ValueError) as exc:
            pytest.fail(f"@pytest.mark.tcu_agent: {exc}", pytrace=False)
    if spec.sources == "virtual":
        spec = replace(spec, sources=request.getfixturevalue("tcu_virtual_vehicle"))
    return spec


@pytest_asyncio.fixture(loop_scope="function")
async def tcu_agent(tcu_agent_factory: AgentFactory, _tcu_agent_spec: AgentSpec) -> BenchAgent:
    return await tcu_agent_factory(_tcu_agent_spec)


@pytest.fixture
def assert_no_loss(tcu_agent_factory: AgentFactory) -> Callable[..., Awaitable[SeqAudit]]:
    """`await assert_no_loss(vin, timeout=30.0)` → the `SeqAudit`; AssertionError naming the lost seqs."""

    async def check(vin: str, *, timeout: float = 30.0, allow_empty: bool = False) -> SeqAudit:  # noqa: ASYNC109
        return await tcu_agent_factory.assert_no_loss(vin, timeout=timeout, allow_empty=allow_empty)

    return check
