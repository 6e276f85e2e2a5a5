"""tcu_link's timed faults on a fake clock: how long each lasts, what comes back, what is refused."""

from __future__ import annotations

import math

import pytest

from hil.fixtures.link import BenchLink
from hil.link_model import CutMode, LinkShape
from hil.netem import NetworkEmulator


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeBroker:
    port = 1883
    url = "mqtt://127.0.0.1:1883"
    protocol = "5"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def kill(self) -> None:
        self.calls.append("kill")


class EmbeddedLike(FakeBroker):
    kill = None  # type: ignore[assignment]  # the embedded broker has no kill


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def link(time: FakeTime, broker: FakeBroker) -> BenchLink:
    # Never started: cut/restore only change its state, which is what is looked at here.
    return BenchLink(NetworkEmulator(upstream_port=1883), broker, sleep=time.sleep, now=lambda: time.now)


async def test_await_holds_a_tunnel_for_its_seconds(link: BenchLink, time: FakeTime) -> None:
    fault = link.tunnel(10)
    assert link.net.cut_mode is None  # nothing happens before it is awaited
    await fault
    assert time.slept == [10.0]
    assert link.net.cut_mode is None
    assert link.stats.cuts == 1


async def test_a_block_shorter_than_the_tunnel_waits_for_the_rest(link: BenchLink, time: FakeTime) -> None:
    async with link.tunnel(seconds=10, mode=CutMode.REFUSE):
        assert link.net.cut_mode is CutMode.REFUSE
        time.now += 4  # the block's own work took 4 s
    assert time.slept == [6.0]
    assert link.net.cut_mode is None


async def test_a_block_longer_than_the_tunnel_keeps_it_until_the_block_ends(link: BenchLink, time: FakeTime) -> None:
    async with link.tunnel(seconds=2):
        time.now += 5
        assert link.net.cut_mode is CutMode.BLACKHOLE
    assert time.slept == []
    assert link.net.cut_mode is None


async def test_without_seconds_a_block_holds_it_and_await_is_refused(link: BenchLink, time: FakeTime) -> None:
    async with link.tunnel():
        assert link.net.cut_mode is CutMode.BLACKHOLE
    assert link.net.cut_mode is None
    with pytest.raises(TypeError, match=r"await tunnel\(...\) needs seconds="):
        await link.tunnel()
    assert link.net.cut_mode is None
    assert time.slept == []


async def test_a_failing_block_ends_the_fault_at_once(link: BenchLink, time: FakeTime) -> None:
    with pytest.raises(RuntimeError, match="the test failed"):
        async with link.tunnel(seconds=10):
            raise RuntimeError("the test failed")
    assert time.slept == []
    assert link.net.cut_mode is None


async def test_a_fault_is_used_once(link: BenchLink) -> None:
    tunnel = link.tunnel(1)
    await tunnel
    with pytest.raises(RuntimeError, match=r"used already; call tunnel\(...\) again"):
        await tunnel


async def test_latency_and_loss_give_back_the_link_as_it_was(link: BenchLink, time: FakeTime) -> None:
    link.net.up = LinkShape(bandwidth_bps=64_000)  # a slow uplink, set by the test beforehand
    async with link.latency(0.3, jitter_s=0.1):
        assert (link.net.up.latency_s, link.net.down.latency_s, link.net.down.jitter_s) == (0.3, 0.3, 0.1)
        assert link.net.up.bandwidth_bps == 64_000  # the rest of the shape is kept
        async with link.loss(0.2):
            assert (link.net.up.loss, link.net.up.latency_s) == (0.2, 0.3)
        assert link.net.up.loss == 0.0
    assert link.net.up == LinkShape(bandwidth_bps=64_000)
    assert link.net.down == LinkShape()


async def test_a_broker_outage_stops_and_starts_the_broker(link: BenchLink, broker: FakeBroker, time: FakeTime) -> None:
    await link.broker_outage(3)
    await link.broker_outage(1, kill=True)
    assert broker.calls == ["stop", "start", "kill", "start"]
    assert time.slept == [3.0, 1.0]


def test_kill_needs_a_broker_that_can_be_killed(time: FakeTime) -> None:
    link = BenchLink(NetworkEmulator(upstream_port=1883), EmbeddedLike(), sleep=time.sleep)
    with pytest.raises(TypeError, match="EmbeddedLike cannot be killed: kill=True needs Mosquitto"):
        link.broker_outage(1, kill=True)


@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf, True, "10"])
def test_durations_that_are_no_durations_are_refused(link: BenchLink, seconds: object) -> None:
    with pytest.raises(ValueError, match=r"tunnel: seconds: must be a finite number >= 0 \(or None\), got"):
        link.tunnel(seconds)  # type: ignore[arg-type]


def test_link_shapes_are_checked_when_the_fault_is_made(link: BenchLink) -> None:
    with pytest.raises(ValueError, match=r"LinkShape.loss: a probability from 0 to 1, got 1.5"):
        link.loss(1.5)
    with pytest.raises(ValueError, match="latency: latency_s: must be a finite number >= 0"):
        link.latency(math.nan)
    with pytest.raises(ValueError, match="loss: loss: must be a finite number >= 0"):
        link.loss(True)
