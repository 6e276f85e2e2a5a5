"""RTP (RFC 3550) for the NG eCall's voice, sans I/O: the packet format both ends send, and their pacing.

The vehicle (`tcu.ecall.ng.rtp`) and the PSAP stub (`backend_stub.psap_rtp`) each own their socket and
their task; what goes on the wire is built and read here:

    sender = RtpSender()                          # random SSRC, sequence and timestamp bases (§5.1)
    datagram = sender.next(PCMU_SILENCE)          # 12-byte header + payload; sequence +1, timestamp +160
    packet = parse_rtp(datagram)                  # RtpPacket, or None for a datagram that is no RTP
    due = frames_due(elapsed_s)                   # how many 20 ms frames a stream this old has owed
    peer = RtpPeer(("127.0.0.1", 40000))          # the SDP's address: whose packets count (`peer.takes`)

`parse_rtp` is total: any bytes give an `RtpPacket` or None (short, another version, a CSRC list,
extension or padding that claims more than the datagram holds). The audio itself is never simulated:
PCMU (payload type 0, RFC 3551) silence, 160 one-byte samples = 20 ms at 8 kHz a packet.

A call's RTP counts only packets from the address its dialog's SDP names, with the first SSRC seen from
there (`RtpPeer`): the port is open to whoever guesses it, and a stray or forged stream must not pass for
the call's voice.

Pacing is on absolute deadlines from the stream's start (`frames_due`): a sender that wakes late sends
every frame that has come due since, so a loaded machine or a bench on virtual time still sends 50
packets a second on average, instead of falling behind by each late wake-up.
"""

from __future__ import annotations

import math
import secrets
import struct
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Final

PCMU: Final = 0  # RFC 3551: G.711 μ-law, 8000 Hz
FRAME_S: Final = 0.020  # ptime 20 ms, the PCMU default
SAMPLES_PER_FRAME: Final = 160  # 20 ms at 8 kHz, one byte per sample
PCMU_SILENCE: Final = b"\xff" * SAMPLES_PER_FRAME  # μ-law zero
HEADER_BYTES: Final = 12
_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_VERSION: Final = 2


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


class RtpSender:
    """One stream's header state: SSRC, and sequence and timestamp from random bases (RFC 3550 §5.1)."""

    def __init__(self, *, payload_type: int = PCMU, samples_per_frame: int = SAMPLES_PER_FRAME) -> None:
        self._payload_type = payload_type
        self._samples = samples_per_frame
        self.ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self.sent = 0

    def next(self, payload: bytes) -> bytes:
        """The next packet of the stream; the first is marked (RFC 3551: the start of a talkspurt)."""
        packet = RtpPacket(
            payload_type=self._payload_type,
            sequence=self._sequence,
            timestamp=self._timestamp,
            ssrc=self.ssrc,
            marker=self.sent == 0,
            payload=payload,
        )
        self.sent += 1
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + self._samples) & 0xFFFFFFFF
        return packet.encode()


def frames_due(elapsed_s: float, frame_s: float = FRAME_S) -> int:
    """How many frames a stream started `elapsed_s` ago has owed: one at its start, then one every `frame_s`."""
    if not elapsed_s >= 0:  # also NaN: a clock that went backwards owes the first frame only
        return 1
    return math.floor(elapsed_s / frame_s + 1e-9) + 1  # a deadline met to the nanosecond counts as met


def same_endpoint(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether two (host, port) name the same socket address ("::1" and "0:0::1" alike); hosts that are no
    address literal compare as written."""
    if first[1] != second[1]:
        return False
    try:
        return ip_address(first[0].split("%")[0]) == ip_address(second[0].split("%")[0])
    except ValueError:
        return first[0] == second[0]


class RtpPeer:
    """Whose datagrams count as the call's voice: from `remote` (the SDP's address), RTP, and with the SSRC
    of the first such packet (RFC 3550 §8.2: one source per stream here)."""

    def __init__(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        self.ssrc: int | None = None

    def takes(self, data: bytes, source: tuple[str, int]) -> bool:
        if not same_endpoint(source, self.remote):
            return False
        packet = parse_rtp(data)
        if packet is None:
            return False
        if self.ssrc is None:
            self.ssrc = packet.ssrc
        return packet.ssrc == self.ssrc
