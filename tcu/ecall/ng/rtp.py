"""The NG eCall's voice: an RTP stream (RFC 3550) of PCMU (payload type 0) both ways, counted.

    stream = RtpStream(host="127.0.0.1", port=0)      # port 0: any free port; the SDP offers `stream.port`
    async with stream:                                # binds the UDP socket
        tasks.create_task(stream.run(), name="rtp")   # sends while a call is up
        stream.start(("127.0.0.1", 40000))            # the 200 OK's SDP: send there every 20 ms
        stream.stop()                                 # the call ended
        stream.counts                                 # RtpCounts(sent, received, rejected) of the last call

The car's audio path is not simulated: we send μ-law silence (0xFF), 160 samples (20 ms at 8 kHz) per
packet, paced on the event loop's clock, so a bench on virtual time sends at its pace. Received packets
are parsed (`parse_rtp`, total: any datagram is an `RtpPacket` or None) and counted, their audio dropped.
Voice starts with the 200 OK and never waits for the MSD (EN 17184: voice and data in parallel).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

_LOGGER = logging.getLogger(__name__)

PCMU = 0  # RFC 3551: G.711 μ-law, 8000 Hz
FRAME_S = 0.020
SAMPLES_PER_FRAME = 160  # 20 ms at 8 kHz, one byte per sample
PCMU_SILENCE = b"\xff" * SAMPLES_PER_FRAME
_HEADER = struct.Struct("!BBHII")
_VERSION = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type < 128:
            raise ValueError(f"RTP payload type {self.payload_type} is not 0 to 127")
        if not (0 <= self.sequence < 1 << 16 and 0 <= self.timestamp < 1 << 32 and 0 <= self.ssrc < 1 << 32):
            raise ValueError("RTP sequence, timestamp or SSRC out of range")

    def encode(self) -> bytes:
        second = (0x80 if self.marker else 0) | self.payload_type
        return _HEADER.pack(_VERSION << 6, second, self.sequence, self.timestamp, self.ssrc) + self.payload


def parse_rtp(data: bytes) -> RtpPacket | None:
    """An RTP packet, or None for a datagram that is none (short, another version, lying lengths)."""
    if len(data) < _HEADER.size:
        return None
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != _VERSION:
        return None
    start = _HEADER.size + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(data) < start + 4:
            return None
        start += 4 + 4 * int.from_bytes(data[start + 2 : start + 4], "big")
    end = len(data)
    if first & 0x20:  # padding: the last octet counts the padding octets, itself included
        end -= data[-1]
    if start > end or (first & 0x20 and data[-1] == 0):
        return None
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        marker=bool(second & 0x80),
        payload=data[start:end],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpCounts:
    sent: int = 0
    received: int = 0
    rejected: int = 0  # datagrams on the RTP port that were no RTP (or from elsewhere)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, stream: RtpStream) -> None:
        self._stream = stream

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._stream.on_datagram(data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable for a PSAP gone: not our problem
        _LOGGER.debug("RTP: %s", exc)


class RtpStream:
    """One RTP session at a time (an eCall has one voice stream): bound once, started and stopped per call."""

    def __init__(self, *, host: str, port: int = 0) -> None:
        self._host, self._bind_port = host, port
        self._transport: asyncio.DatagramTransport | None = None
        self._remote: tuple[str, int] | None = None
        self._running = asyncio.Event()
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._sent = self._received_count = self._rejected = 0

    @property
    def port(self) -> int:
        if self._transport is None:
            raise RuntimeError("the RTP stream is not bound")
        port: int = self._transport.get_extra_info("sockname")[1]
        return port

    @property
    def active(self) -> bool:
        return self._remote is not None

    @property
    def counts(self) -> RtpCounts:
        """Packets of the current call, or of the last one after `stop`."""
        return RtpCounts(sent=self._sent, received=self._received_count, rejected=self._rejected)

    async def __aenter__(self) -> RtpStream:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self), local_addr=(self._host, self._bind_port)
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def start(self, remote: tuple[str, int]) -> None:
        """Voice is up: send to `remote` from now on, counting afresh."""
        self._remote = remote
        self._sent = self._received_count = self._rejected = 0
        self._running.set()

    def stop(self) -> None:
        self._remote = None
        self._running.clear()

    async def run(self) -> NoReturn:
        """Send a frame every 20 ms on the loop's clock while started; catches up a late wake-up with no burst."""
        loop = asyncio.get_running_loop()
        while True:
            await self._running.wait()
            due = loop.time()
            while self._remote is not None:
                self._send(self._remote)
                due = max(due + FRAME_S, loop.time())
                await asyncio.sleep(due - loop.time())

    def _send(self, remote: tuple[str, int]) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        packet = RtpPacket(
            payload_type=PCMU,
            sequence=self._sequence,
            timestamp=self._timestamp,
            ssrc=self._ssrc,
            marker=self._sent == 0,  # RFC 3551: the first packet of a talkspurt
            payload=PCMU_SILENCE,
        )
        self._transport.sendto(packet.encode(), remote)
        self._sent += 1
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + SAMPLES_PER_FRAME) & 0xFFFFFFFF

    def on_datagram(self, data: bytes) -> None:
        packet = parse_rtp(data)
        if packet is None or not self.active:
            self._rejected += 1
            return
        self._received_count += 1
