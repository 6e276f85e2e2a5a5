"""NetworkEmulator: the TCP proxy that shapes, loses and cuts the agent's link, against an echo server and Mosquitto.

Timing assertions only ever bound from below ("at least the latency"): a slow CI machine can make
things later, never earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backend_stub.store import BackendStore
from hil.broker import MosquittoBroker
from hil.layout import BenchLayout
from hil.link_model import CutMode, LinkShape, TokenBucket, transit_delay
from hil.netem import NetworkEmulator
from tcu.app import Agent
from tcu.config import load_agent_config
from tests.conftest import VIN, eventually
from tests.integration import conftest as integration
from tests.integration.conftest import vehicle_config

layout = integration.layout  # the bench and backend fixtures, shared with tests/integration
backend = integration.backend
backend_store = integration.backend_store  # what the backend committed, on a connection of the test's own

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ScriptedRandom(random.Random):
    """`random()` answers from a script, then 0.99 (not lost) once the script runs out."""

    def __init__(self, script: list[float]) -> None:
        super().__init__(0)
        self._script = iter(script)

    def random(self) -> float:
        return next(self._script, 0.99)


class EchoServer:
    """Sends back what it receives; counts connections and keeps every byte."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()
            self._handlers.discard(task)

    async def __aenter__(self) -> EchoServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    async with EchoServer() as server:
        yield server


@contextlib.asynccontextmanager
async def dial(port: int) -> AsyncIterator[Stream]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def round_trip(stream: Stream, data: bytes) -> float:
    loop = asyncio.get_running_loop()
    reader, writer = stream
    started = loop.time()
    writer.write(data)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(data)), 10) == data
    return loop.time() - started


async def assert_closed_by_peer(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(1), 5) == b""


async def assert_silent(reader: asyncio.StreamReader, for_s: float) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), for_s)


# -- the pure parts: delay model and pacing ----------------------------------------------------------


def test_retransmission_spikes_double_and_too_many_losses_cut() -> None:
    shape = LinkShape(latency_s=0.1, loss=0.5, rto_s=0.2, max_retransmits=3)
    assert transit_delay(shape, ScriptedRandom([0.9])) == (0.1, 0)
    delay, losses = transit_delay(shape, ScriptedRandom([0.1, 0.2, 0.9]))
    assert losses == 2
    assert delay == pytest.approx(0.1 + 0.2 + 0.4)
    assert transit_delay(shape, ScriptedRandom([0.0] * 10))[1] == 4  # > max_retransmits: cut
    assert transit_delay(LinkShape(loss=1.0, max_retransmits=0), ScriptedRandom([]))[1] == 1


def test_transit_delay_is_reproducible_and_latency_is_a_floor() -> None:
    shape = LinkShape(latency_s=0.05, jitter_s=0.02, loss=0.3, rto_s=0.2)
    first = [transit_delay(shape, rng) for rng in [random.Random(7)] for _ in range(200)]
    second = [transit_delay(shape, rng) for rng in [random.Random(7)] for _ in range(200)]
    assert first == second
    assert all(delay >= 0.05 for delay, _ in first)
    assert any(losses for _, losses in first)


def test_token_bucket_paces_beyond_the_burst() -> None:
    bucket = TokenBucket(rate_bps=8000, burst_bytes=1000)  # 1000 bytes a second
    assert bucket.wait_s(1000, now=0.0) == 0.0
    assert bucket.wait_s(500, now=0.0) == pytest.approx(0.5)
    assert bucket.wait_s(100, now=1.0) == 0.0  # refilled by 1000, capped at the burst
    assert bucket.tokens == pytest.approx(400)


@pytest.mark.parametrize(
    "kwargs",
    [{"latency_s": -1}, {"jitter_s": -0.1}, {"loss": 1.5}, {"bandwidth_bps": 0}, {"max_retransmits": -1}],
)
def test_link_shape_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="LinkShape"):
        LinkShape(**kwargs)  # type: ignore[arg-type]


# -- the proxy against a TCP echo server -------------------------------------------------------------


async def test_forwards_both_ways_and_counts(echo: EchoServer) -> None:
    async with NetworkEmulator(upstream_port=echo.port) as net:
        async with dial(net.port) as stream:
            await round_trip(stream, b"hello")
            assert net.open_connections == 1
        await eventually(lambda: net.open_connections == 0, what="connection closed")
    assert (net.stats.connections, net.stats.bytes_up, net.stats.bytes_down) == (1, 5, 5)
    assert bytes(echo.received) == b"hello"


async def test_latency_is_at_least_what_each_direction_adds(echo: EchoServer) -> None:
    async with NetworkEmulator(upstream_port=echo.port, rng=random.Random(1)) as net, dial(net.port) as stream:
        assert net.url == f"mqtt://127.0.0.1:{net.port}"
        net.up = LinkShape(latency_s=0.08, jitter_s=0.02)
        net.down = LinkShape(latency_s=0.04)
        assert await round_trip(stream, b"ping") >= 0.12
        net.up = net.down = LinkShape()  # changed at run time, on the same connection
        net.latency_s = 0.075  # both directions at once
        assert (net.up.latency_s, net.down.latency_s, net.latency_s) == (0.075, 0.075, 0.075)
        assert await round_trip(stream, b"pong") >= 0.15


def test_flat_controls_set_both_directions_and_keep_the_rest() -> None:
    net = NetworkEmulator(upstream_port=1)
    net.up = LinkShape(latency_s=0.3)
    net.loss = 0.1
    net.jitter_s = 0.02
    net.bandwidth_bps = 1e6
    assert net.up == LinkShape(latency_s=0.3, loss=0.1, jitter_s=0.02, bandwidth_bps=1e6)
    assert net.down == LinkShape(loss=0.1, jitter_s=0.02, bandwidth_bps=1e6)
    with pytest.raises(ValueError, match="loss"):
        net.loss = 2.0


async def test_jitter_never_reorders_bytes(echo: EchoServer) -> None:
    async with (
        NetworkEmulator(upstream_port=echo.port, rng=random.Random(3)) as net,
        dial(net.port) as (reader, writer),
    ):
        net.up = net.down = LinkShape(latency_s=0.002, jitter_s=0.03)
        expected = b"".join(b"%04d;" % n for n in range(60))
        for n in range(60):
            writer.write(b"%04d;" % n)
            await writer.drain()
            await asyncio.sleep(0.001)  # separate chunks, each with its own jitter
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 10) == expected


async def test_bandwidth_paces_the_bytes(echo: EchoServer) -> None:
    async with NetworkEmulator(upstream_port=echo.port) as net, dial(net.port) as stream:
        net.up = LinkShape(bandwidth_bps=80_000, burst_bytes=1000)  # 10 kB/s
        assert await round_trip(stream, bytes(6000)) >= (6000 - 1000) / 10_000


async def test_refuse_cut_closes_connections_and_refuses_new_ones(echo: EchoServer) -> None:
    async with NetworkEmulator(upstream_port=echo.port) as net:
        port = net.port
        async with dial(port) as stream:
            await round_trip(stream, b"before")
            net.cut(CutMode.REFUSE)
            assert net.cut_mode == "refuse"
            await assert_closed_by_peer(stream[0])
            await eventually(lambda: net.open_connections == 0, what="connections closed")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        net.restore()
        assert net.port == port
        assert net.cut_mode is None
        async with dial(port) as stream:
            await round_trip(stream, b"after")
    assert (net.stats.cuts, net.stats.dropped, echo.connections) == (1, 1, 2)


async def test_blackhole_cut_holds_everything_until_restore(echo: EchoServer) -> None:
    async with NetworkEmulator(upstream_port=echo.port) as net, dial(net.port) as old:
        await round_trip(old, b"before")
        net.cut(CutMode.BLACKHOLE)
        old[1].write(b"held")
        await assert_silent(old[0], 0.3)  # not answered, not closed
        async with dial(net.port) as new, dial(net.port) as gone:
            new[1].write(b"new")
            gone[1].write(b"never")
            gone[1].transport.abort()  # this client gives up inside the black hole
            await assert_silent(new[0], 0.2)
            assert echo.connections == 1  # accepted by the proxy, not passed on
            net.restore()
            assert await asyncio.wait_for(old[0].readexactly(4), 5) == b"held"
            assert await asyncio.wait_for(new[0].readexactly(3), 5) == b"new"
            await round_trip(new, b"again")
        await round_trip(old, b"after")
        assert echo.connections == 2  # the client that gave up never reached the target
        assert b"never" not in echo.received
    assert (net.stats.cuts, net.stats.dropped) == (1, 0)


async def test_blackhole_after_refuse_accepts_again(echo: EchoServer) -> None:
    async with NetworkEmulator(upstream_port=echo.port) as net:
        net.cut(CutMode.REFUSE)
        net.cut(CutMode.BLACKHOLE)
        async with dial(net.port) as stream:
            stream[1].write(b"x")
            await assert_silent(stream[0], 0.1)
            net.restore()
            assert await asyncio.wait_for(stream[0].readexactly(1), 5) == b"x"
    assert net.stats.cuts == 1


async def test_loss_delays_by_retransmission_timeouts(echo: EchoServer) -> None:
    async with (
        NetworkEmulator(upstream_port=echo.port, rng=ScriptedRandom([0.0, 0.0])) as net,
        dial(net.port) as stream,
    ):
        net.up = LinkShape(loss=0.5, rto_s=0.05, max_retransmits=5)
        assert await round_trip(stream, b"late") >= 0.05 + 0.1
    assert (net.stats.losses, net.stats.loss_cuts) == (2, 0)


async def test_loss_beyond_max_retransmits_cuts_the_connection(echo: EchoServer) -> None:
    async with NetworkEmulator(upstream_port=echo.port) as net:
        net.up = LinkShape(loss=1.0, max_retransmits=0)
        async with dial(net.port) as (reader, writer):
            writer.write(b"lost")
            await assert_closed_by_peer(reader)
        net.up = LinkShape()
        async with dial(net.port) as stream:
            await round_trip(stream, b"fine")
    assert (net.stats.loss_cuts, net.stats.dropped) == (1, 1)
    assert bytes(echo.received) == b"fine"


async def test_stop_closes_every_connection(echo: EchoServer) -> None:
    net = NetworkEmulator(upstream_port=echo.port)
    with pytest.raises(RuntimeError, match="before start"):
        _ = net.port
    await net.start()
    async with dial(net.port) as (reader, _writer):
        net.cut(CutMode.BLACKHOLE)
        await net.stop()
        await assert_closed_by_peer(reader)
    await net.stop()  # idempotent


# -- an agent behind the proxy, through a real Mosquitto ---------------------------------------------


def with_keepalive(config: Path, keepalive_s: int) -> Path:
    config.write_text(config.read_text().replace("[broker]\n", f"[broker]\nkeepalive_s = {keepalive_s}\n", 1))
    return config


@contextlib.asynccontextmanager
async def agent_behind(net: NetworkEmulator, config: Path) -> AsyncIterator[Agent]:
    """`running_agent`, with the broker URL pointed at the proxy."""
    agent = Agent(load_agent_config(config, env={"TCU_BROKER_URL": net.url}))
    task = asyncio.create_task(agent.run(), name="agent-behind-netem")
    await agent.ready.wait()
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drain_exactly_once(agent: Agent, backend_store: BackendStore) -> None:
    agent.telemetry.enabled = False
    await eventually(lambda: agent.outbox.stats().depth == 0, what="queue drained")
    next_seq = agent.outbox.stats().next_seq
    await eventually(lambda: len(backend_store.seqs(VIN)) == next_seq - 1, what="backend caught up")
    assert backend_store.seqs(VIN) == list(range(1, next_seq)), f"gaps: {backend_store.gaps(VIN)}"


async def test_agent_queues_through_a_black_hole_and_delivers_exactly_once(
    layout: BenchLayout, backend_store: BackendStore, mosquitto: MosquittoBroker
) -> None:
    config = with_keepalive(vehicle_config(layout), 2)
    async with NetworkEmulator(upstream_port=mosquitto.port) as net, agent_behind(net, config) as agent:
        assert agent.config.broker.keepalive_s == 2
        await eventually(lambda: len(backend_store.seqs(VIN)) >= 20, what="records flowing")
        net.cut(CutMode.BLACKHOLE)
        await eventually(lambda: not agent.session.stats.connected, within=15, what="keepalive noticed")
        delivered = len(backend_store.seqs(VIN))
        queued = agent.outbox.stats().depth
        await eventually(lambda: agent.outbox.stats().depth >= queued + 25, what="records queued in the tunnel")
        assert len(backend_store.seqs(VIN)) == delivered  # nothing leaks through a black hole
        net.restore()
        await eventually(lambda: agent.session.stats.connects >= 2, what="agent reconnected")
        await drain_exactly_once(agent, backend_store)
    assert net.stats.dropped == 0


async def test_agent_reconnects_after_a_refusing_cut(
    layout: BenchLayout, backend_store: BackendStore, mosquitto: MosquittoBroker
) -> None:
    async with NetworkEmulator(upstream_port=mosquitto.port) as net, agent_behind(net, vehicle_config(layout)) as agent:
        await eventually(lambda: len(backend_store.seqs(VIN)) >= 20, what="records flowing")
        net.cut(CutMode.REFUSE)
        await eventually(lambda: not agent.session.stats.connected, what="agent saw the link go")
        queued = agent.outbox.stats().depth
        await eventually(lambda: agent.outbox.stats().depth >= queued + 25, what="records queued offline")
        net.restore()
        await eventually(lambda: agent.session.stats.connects >= 2, what="agent reconnected")
        await drain_exactly_once(agent, backend_store)
    assert net.stats.dropped >= 1


async def test_agent_behind_200ms_latency_delivers_everything(
    layout: BenchLayout, backend_store: BackendStore, mosquitto: MosquittoBroker
) -> None:
    async with NetworkEmulator(upstream_port=mosquitto.port, rng=random.Random(5)) as net:
        net.up = net.down = LinkShape(latency_s=0.2, jitter_s=0.02)
        async with agent_behind(net, vehicle_config(layout)) as agent:
            await eventually(lambda: len(backend_store.seqs(VIN)) >= 40, what="records through a slow link")
            await drain_exactly_once(agent, backend_store)
        assert net.stats.bytes_up > 0
        assert net.stats.bytes_down > 0
