"""The NG eCall's RTP: the shared packet codec (telematics_wire.rtp) is total, and both ends keep 50 packets
a second on a loop that always wakes up late (a loaded machine, a bench on virtual time), where pacing
on relative sleeps lost a frame's worth at each wake-up (S4's HIL finding: 249 sent against 458).

`LateLoop` is an asyncio loop on a clock that moves only when the loop would block, by the wait plus a
fixed lateness: no real time passes, so the counts are exact whatever the machine's load."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_stub.psap_rtp import PsapVoice
from tcu.ecall.ng.rtp import RtpStream
from telematics_wire.rtp import PCMU, PCMU_SILENCE, RtpPacket, RtpSender, frames_due, parse_rtp

LATENESS_S = 0.025  # each wake-up later than a frame: 2.5 ms real on a bench at 10x virtual time


class _LateSelector(selectors.DefaultSelector):
    def __init__(self, lateness_s: float) -> None:
        super().__init__()
        self.now = 1000.0
        self._lateness_s = lateness_s

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self.now += timeout + self._lateness_s  # the wait, and then some
        return ready


class LateLoop(asyncio.SelectorEventLoop):
    def __init__(self, lateness_s: float) -> None:
        self._late_selector = _LateSelector(lateness_s)
        super().__init__(self._late_selector)

    def time(self) -> float:
        return self._late_selector.now


def on_late_loop(test: Callable[[], Coroutine[Any, Any, None]], lateness_s: float = LATENESS_S) -> None:
    with asyncio.Runner(loop_factory=lambda: LateLoop(lateness_s)) as runner:
        runner.run(test())


async def sink() -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    return transport, transport.get_extra_info("sockname")[:2]


@pytest.mark.parametrize("seconds", [1, 10, 60])
def test_the_vehicle_sends_50_packets_a_second_however_late_it_wakes(seconds: int) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        receiver, address = await sink()
        async with RtpStream(host="127.0.0.1") as stream:
            task = asyncio.create_task(stream.run())
            stream.start(address)
            started = loop.time()
            await asyncio.sleep(seconds)
            elapsed = loop.time() - started
            sent = stream.counts.sent
            stream.stop()
            task.cancel()
        receiver.close()
        assert abs(sent - 50 * elapsed) <= 1, (sent, elapsed)

    on_late_loop(run)


def test_the_psap_sends_50_packets_a_second_however_late_it_wakes() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        receiver, address = await sink()
        voice = PsapVoice("127.0.0.1")
        await voice.open()
        tasks: set[asyncio.Task[None]] = set()
        voice.start((str(address[0]), int(address[1])), tasks)
        started = loop.time()
        await asyncio.sleep(10)
        elapsed, sent = loop.time() - started, voice.sent
        await voice.close()
        receiver.close()
        assert abs(sent - 50 * elapsed) <= 1, (sent, elapsed)

    on_late_loop(run)


def test_a_stopped_process_starts_its_schedule_afresh_instead_of_a_burst() -> None:
    async def run() -> None:
        receiver, address = await sink()
        async with RtpStream(host="127.0.0.1") as stream:
            task = asyncio.create_task(stream.run())
            stream.start(address)
            await asyncio.sleep(1)
            assert stream.counts.sent < 60, "the 30 s stall happened before the first wake-up ended"
            stream.stop()
            task.cancel()
        receiver.close()

    on_late_loop(run, lateness_s=30.0)


def test_frames_due_count_from_the_start_on_absolute_deadlines() -> None:
    assert [frames_due(t) for t in (0.0, 0.019, 0.020, 0.039, 0.04, 1.0)] == [1, 1, 2, 2, 3, 51]
    assert frames_due(-5.0) == 1
    assert frames_due(float("nan")) == 1


def test_a_sender_numbers_its_packets_and_marks_the_first() -> None:
    sender = RtpSender()
    first, second = (parse_rtp(sender.next(PCMU_SILENCE)) for _ in range(2))
    assert first is not None
    assert second is not None
    assert (first.marker, second.marker) == (True, False)
    assert second.sequence == (first.sequence + 1) & 0xFFFF
    assert second.timestamp == (first.timestamp + 160) & 0xFFFFFFFF
    assert first.ssrc == second.ssrc == sender.ssrc
    assert (first.payload_type, first.payload, sender.sent) == (PCMU, PCMU_SILENCE, 2)


def test_rtp_packets_round_trip() -> None:
    packet = RtpPacket(
        payload_type=PCMU, sequence=65535, timestamp=2**32 - 1, ssrc=7, payload=PCMU_SILENCE, marker=True
    )
    assert parse_rtp(packet.encode()) == packet
    assert len(packet.encode()) == 12 + 160


@given(st.binary(max_size=300))
def test_any_datagram_is_an_rtp_packet_or_none(data: bytes) -> None:
    packet = parse_rtp(data)
    assert packet is None or len(packet.payload) <= len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80" * 11,  # shorter than the fixed header
        b"\x40" + b"\x00" * 20,  # version 1
        b"\xa0\x00" + b"\x00" * 10 + b"\x00",  # padding count 0
        b"\x8f" + b"\x00" * 30,  # 15 CSRCs claimed, 7 there
        b"\x90" + b"\x00" * 12,  # an extension header cut short
    ],
)
def test_datagrams_that_are_no_rtp(data: bytes) -> None:
    assert parse_rtp(data) is None
