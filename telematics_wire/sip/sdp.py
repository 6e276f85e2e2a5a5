"""The SDP (RFC 4566/8866) of an eCall's voice: one audio stream of PCMU (payload type 0) in 20 ms packets,
offered by the vehicle and answered by the PSAP (RFC 3264). Only what that needs is written and read;
parsing is total and refuses an answer with no PCMU audio, a port out of range or broken lines.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from telematics_wire.errors import SipError

PCMU: Final = 0
PTIME_MS: Final = 20
MAX_SDP_BYTES: Final = 8_192
DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")
_LINE: Final = re.compile(r"([a-z])=(.*)")


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioSession:
    """Where RTP for the call goes and in which form: connection address, port, payload type, ptime."""

    address: str
    port: int
    payload_type: int = PCMU
    ptime_ms: int = PTIME_MS
    direction: str = "sendrecv"
    session_id: int = 0
    session_version: int = 0

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.address)
        except ValueError as exc:
            raise SipError(f"SDP connection address {self.address!r} is not an IP address") from exc
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65_535:
            raise SipError(f"SDP audio port {self.port!r} is outside 0..65535")
        if not 0 <= self.payload_type <= 127:
            raise SipError(f"RTP payload type {self.payload_type} is outside 0..127")
        if not 1 <= self.ptime_ms <= 1_000:
            raise SipError(f"ptime {self.ptime_ms} ms is outside 1..1000")
        if self.direction not in DIRECTIONS:
            raise SipError(f"SDP direction {self.direction!r} is not one of {DIRECTIONS}")
        for number, what in ((self.session_id, "session id"), (self.session_version, "session version")):
            if not 0 <= number < 2**63:
                raise SipError(f"SDP {what} {number} is outside 0..2**63-1")


def build_sdp(session: AudioSession, *, username: str = "-") -> bytes:
    """The offer or answer for one PCMU audio stream."""
    family = "IP6" if ipaddress.ip_address(session.address).version == 6 else "IP4"
    lines = (
        "v=0",
        f"o={username} {session.session_id} {session.session_version} IN {family} {session.address}",
        "s=-",
        f"c=IN {family} {session.address}",
        "t=0 0",
        f"m=audio {session.port} RTP/AVP {session.payload_type}",
        f"a=rtpmap:{session.payload_type} PCMU/8000" if session.payload_type == PCMU else "",
        f"a=ptime:{session.ptime_ms}",
        f"a={session.direction}",
    )
    return ("\r\n".join(line for line in lines if line) + "\r\n").encode("ascii")


def parse_sdp(data: bytes) -> AudioSession:
    """The first audio stream's PCMU session; SipError if there is none or the text is broken."""
    if not isinstance(data, bytes):
        raise SipError(f"SDP must be bytes, got {type(data).__name__}")
    if len(data) > MAX_SDP_BYTES:
        raise SipError(f"SDP of {len(data)} bytes exceeds {MAX_SDP_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipError("SDP is not UTF-8") from exc
    session_address: str | None = None
    media_address: str | None = None
    origin = (0, 0)
    audio: list[str] | None = None
    attributes: list[str] = []
    in_audio = False
    for line in filter(None, re.split(r"\r?\n", text)):
        match = _LINE.fullmatch(line)
        if match is None:
            raise SipError(f"SDP line {line[:60]!r} is not '<type>=<value>'")
        kind, value = match.groups()
        if kind == "m":
            in_audio = audio is None and value.startswith("audio ")
            if in_audio:
                audio = value.split()
        elif kind == "c":
            address = _connection(value)
            if in_audio:
                media_address = address
            elif audio is None:
                session_address = address
        elif kind == "o":
            origin = _origin(value)
        elif kind == "a" and in_audio:
            attributes.append(value)
    if not text.startswith("v=0"):
        raise SipError("SDP does not start with v=0")
    if audio is None:
        raise SipError("SDP has no audio stream")
    return _audio_session(audio, attributes, media_address or session_address, origin)


def _decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes other scripts' digits, and strip() eats \x1c-\x1f."""
    return re.fullmatch(r"[0-9]+", text) is not None


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SipError(f"SDP connection {value[:60]!r} is not 'IN IP4|IP6 <address>'")
    return parts[2].split("/")[0]  # a multicast TTL suffix is not ours to use


def _origin(value: str) -> tuple[int, int]:
    parts = value.split()
    if len(parts) != 6 or not _decimal(parts[1]) or not _decimal(parts[2]) or len(parts[1]) + len(parts[2]) > 40:
        raise SipError(f"SDP origin {value[:60]!r} is not '<user> <id> <version> IN <family> <address>'")
    return int(parts[1]) % 2**63, int(parts[2]) % 2**63


def _audio_session(
    media: list[str], attributes: list[str], address: str | None, origin: tuple[int, int]
) -> AudioSession:
    if len(media) < 4 or not _decimal(media[1]) or len(media[1]) > 5:
        raise SipError(f"SDP audio line {' '.join(media)[:60]!r} is not 'audio <port> <proto> <formats>'")
    if media[2] != "RTP/AVP":
        raise SipError(f"SDP audio profile {media[2][:20]!r} is not RTP/AVP")
    if str(PCMU) not in media[3:]:
        raise SipError(f"SDP audio offers no PCMU (payload types {' '.join(media[3:])[:40]})")
    if address is None:
        raise SipError("SDP has no connection address for its audio")
    ptime = PTIME_MS
    direction = "sendrecv"
    for attribute in attributes:
        name, _, value = attribute.partition(":")
        if name == "ptime":
            if not _decimal(value) or len(value) > 4:
                raise SipError(f"SDP ptime {value[:20]!r} is not a number of milliseconds")
            ptime = int(value)
        elif name in DIRECTIONS:
            direction = name
    return AudioSession(
        address=address,
        port=int(media[1]),
        payload_type=PCMU,
        ptime_ms=ptime,
        direction=direction,
        session_id=origin[0],
        session_version=origin[1],
    )
