"""The NG PSAP's side of an eCall's voice: RTP (RFC 3550) of PCMU silence every 20 ms, packets received counted.

The operator's voice is not simulated: what matters on a bench is that media flows both ways beside the
SIP signalling, from the 200 OK on, without waiting for the MSD. One `PsapVoice` a call: its UDP port
goes into the SDP answer, `start(remote)` sends to the vehicle's SDP address, `close()` ends it. A
datagram counts as received RTP when it is RTP from that SDP address with the stream's first SSRC
(`telematics_wire.rtp.RtpPeer`); anything else on the port, and anything before `start`, is counted as
rejected and dropped: the port is open to whoever guesses it.

The packet format and the pacing (absolute deadlines from the stream's start: a late wake-up sends what
has come due, never drifting) are `telematics_wire.rtp`, shared with the vehicle; the socket is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from telematics_wire.rtp import FRAME_S, PCMU_SILENCE, RtpPeer, RtpSender, frames_due

_LOGGER = logging.getLogger(__name__)


class _Counter(asyncio.DatagramProtocol):
    def __init__(self, voice: PsapVoice) -> None:
        self._voice = voice

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        peer = self._voice.peer
        if peer is not None and peer.takes(data, (str(addr[0]), int(str(addr[1])))):
            self._voice.received += 1
        else:
            self._voice.rejected += 1
        self._voice.on_packet()

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable once the vehicle hung up
        _LOGGER.debug("PSAP RTP: %s", exc)


class PsapVoice:
    """One call's RTP: bound by `open()`, sending after `start()`, ended by `close()`."""

    def __init__(self, host: str, on_packet: Callable[[], None] = lambda: None) -> None:
        self._host = host
        self.on_packet = on_packet  # wakes whoever waits on the counts (the PSAP's `wait_for`)
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None
        self.peer: RtpPeer | None = None  # whose packets count: set by `start`
        self.sent = 0
        self.received = 0
        self.rejected = 0

    @property
    def port(self) -> int:
        if self._transport is None:
            raise RuntimeError("the PSAP's RTP socket is not open")
        return int(self._transport.get_extra_info("sockname")[1])

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Counter(self), local_addr=(self._host, 0))

    def start(self, remote: tuple[str, int], tasks: set[asyncio.Task[None]]) -> None:
        """Send silence to `remote` until `close()`; the task joins `tasks` (owned by the PSAP: cancelled on close)."""
        if self._sender is None and self._transport is not None:
            self.peer = RtpPeer(remote)
            self._sender = asyncio.create_task(self._send(remote), name=f"psap-rtp-{self.port}")
            tasks.add(self._sender)
            self._sender.add_done_callback(tasks.discard)

    async def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _send(self, remote: tuple[str, int]) -> None:
        sender = RtpSender()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while (transport := self._transport) is not None:
            for _ in range(frames_due(loop.time() - started) - sender.sent):
                transport.sendto(sender.next(PCMU_SILENCE), remote)
            self.sent = sender.sent
            await asyncio.sleep(max(0.0, started + sender.sent * FRAME_S - loop.time()))
