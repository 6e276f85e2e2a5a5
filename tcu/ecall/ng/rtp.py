"""The NG eCall's voice: an RTP stream (RFC 3550) of PCMU (payload type 0) both ways, counted.

    stream = RtpStream(host="127.0.0.1", port=0)      # port 0: any free port; the SDP offers `stream.port`
    async with stream:                                # binds the UDP socket
        tasks.create_task(stream.run(), name="rtp")   # sends while a call is up
        stream.start(("127.0.0.1", 40000))            # the 200 OK's SDP: send there every 20 ms, count from there
        stream.stop()                                 # the call ended
        stream.counts                                 # RtpCounts(sent, received, rejected) of the last call

The car's audio path is not simulated: we send μ-law silence, 160 samples (20 ms at 8 kHz) per packet.
The packet format and the pacing rule are `telematics_wire.rtp` (the PSAP stub sends the same); this
module owns the socket and the task. Pacing is on absolute deadlines from the call's start on the event
loop's clock: a late wake-up sends every frame that has come due since, so a loaded machine or a bench on
virtual time still sends 50 packets a second (up to `MAX_CATCH_UP_FRAMES` at once; owing more than that
means the process was stopped, and the schedule starts afresh). Received packets are parsed (total) and
counted when they come from the SDP's address with one SSRC (`telematics_wire.rtp.RtpPeer`), their
audio dropped. Voice starts with the 200 OK and never waits for the MSD (EN 17184).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

from telematics_wire.rtp import FRAME_S, PCMU_SILENCE, RtpPeer, RtpSender, frames_due

_LOGGER = logging.getLogger(__name__)

MAX_CATCH_UP_FRAMES = 250  # 5 s of voice: owing more is a stopped process, not a late wake-up


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpCounts:
    sent: int = 0
    received: int = 0
    rejected: int = 0  # datagrams on the RTP port that were no RTP, from elsewhere, or another SSRC


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, stream: RtpStream) -> None:
        self._stream = stream

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._stream.on_datagram(data, (str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable for a PSAP gone: not our problem
        _LOGGER.debug("RTP: %s", exc)


class RtpStream:
    """One RTP session at a time (an eCall has one voice stream): bound once, started and stopped per call."""

    def __init__(self, *, host: str, port: int = 0) -> None:
        self._host, self._bind_port = host, port
        self._transport: asyncio.DatagramTransport | None = None
        self._remote: tuple[str, int] | None = None
        self._peer: RtpPeer | None = None
        self._running = asyncio.Event()
        self._sender = RtpSender()
        self._started = 0.0  # the loop's time of the current call's first frame
        self._received_count = self._rejected = 0

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
        return RtpCounts(sent=self._sender.sent, received=self._received_count, rejected=self._rejected)

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
        self._remote, self._peer = remote, RtpPeer(remote)
        self._sender = RtpSender()  # a new SSRC and schedule for each call
        self._started = asyncio.get_running_loop().time()
        self._received_count = self._rejected = 0
        self._running.set()

    def stop(self) -> None:
        self._remote = self._peer = None
        self._running.clear()

    async def run(self) -> NoReturn:
        """Send the frames due while started: every one owed since the call's start, then sleep to the next."""
        loop = asyncio.get_running_loop()
        while True:
            await self._running.wait()
            sender = self._sender
            while (remote := self._remote) is not None and self._sender is sender:  # a new start: new schedule
                owed = frames_due(loop.time() - self._started) - sender.sent
                if owed > MAX_CATCH_UP_FRAMES:
                    _LOGGER.warning("RTP: %d frames owed after a stall; the schedule starts afresh", owed)
                    self._started, owed = loop.time() - sender.sent * FRAME_S, 1
                for _ in range(owed):
                    self._send(remote, sender)
                await asyncio.sleep(max(0.0, self._started + sender.sent * FRAME_S - loop.time()))

    def _send(self, remote: tuple[str, int], sender: RtpSender) -> None:
        datagram = sender.next(PCMU_SILENCE)  # counted by the schedule; a closing socket is the endpoint's end
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(datagram, remote)

    def on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if self._peer is None or not self._peer.takes(data, source):
            self._rejected += 1
            return
        self._received_count += 1
