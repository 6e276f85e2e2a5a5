"""A scriptable PSAP on UDP 127.0.0.1 for the vehicle's SIP user agent tests, built on telematics_wire.sip.

It is deliberately dumb — no transactions of its own — so a test decides every datagram: drop the first
INVITEs (Timer A), never answer (Timer B), answer with a final error, ack in the 200 OK or later by INFO,
ask for the MSD again, clear down, call back. What the vehicle sent is kept in order (`requests`), RTP is
echoed packet for packet from the peer's own RTP socket so voice flows both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tcu.virtual_time import io_timeout
from telematics_wire.sip.dialog import new_branch, new_call_id, new_tag, parse_name_addr, parse_sip_uri
from telematics_wire.sip.ecall_body import build_control_ack, build_control_request_msd
from telematics_wire.sip.ecall_invite import EcallInvite, answer_body, info_body, read_ecall_invite, read_msd
from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse, parse_message, response_to
from telematics_wire.sip.sdp import AudioSession, build_sdp

Address = tuple[str, int]


@dataclass
class Script:
    drop_invites: int = 0  # let the first N INVITEs go unanswered (their retransmissions get through)
    silent: bool = False  # never answer anything
    final: int | None = None  # answer INVITEs with this final status instead of 200
    ack_in_ok: bool | None = True  # the control ack in the 200 OK (received=...); None: none
    request_msd_in_ok: bool = False
    answer_info: int = 200  # the status for the vehicle's INFO
    ring_only: bool = False  # answer INVITEs 180 Ringing and hold them: a CANCEL gets 200 and the INVITE 487


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, peer: PsapPeer) -> None:
        self.peer = peer

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.peer.received(data, (str(addr[0]), int(str(addr[1]))))


class _RtpEcho(asyncio.DatagramProtocol):
    def __init__(self, peer: PsapPeer) -> None:
        self.peer = peer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.peer.rtp_in += 1
        if self.transport is not None:
            self.transport.sendto(data, (str(addr[0]), int(str(addr[1]))))


@dataclass
class PsapPeer:
    script: Script = field(default_factory=Script)
    requests: list[SipRequest] = field(default_factory=list)
    arrival_times: list[float] = field(default_factory=list)  # the loop's time of each of `requests`
    responses: list[SipResponse] = field(default_factory=list)
    invite: SipRequest | None = None
    ecall: EcallInvite | None = None
    vehicle: Address | None = None  # where the vehicle's SIP came from
    rtp_in: int = 0
    msds: list[bytes] = field(default_factory=list)
    to_tag: str = field(default_factory=new_tag)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _transport: asyncio.DatagramTransport | None = None
    _rtp: _RtpEcho | None = None
    _cseq: int = 100
    _callback: SipRequest | None = None

    @property
    def address(self) -> Address:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    def methods(self) -> list[str]:
        return [request.method for request in self.requests]

    async def wait(self, predicate: object, *, within: float = 5.0) -> None:
        assert callable(predicate)
        async with asyncio.timeout(io_timeout(within)):  # a real floor on a fast virtual loop
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

    # -- the socket --------------------------------------------------------------------------------------
    def send(self, message: SipRequest | SipResponse, destination: Address | None = None) -> None:
        assert self._transport is not None
        target = destination or self.vehicle
        assert target is not None
        self._transport.sendto(message.encode(), target)

    def send_raw(self, data: bytes) -> None:
        assert self._transport is not None
        assert self.vehicle is not None
        self._transport.sendto(data, self.vehicle)

    def received(self, data: bytes, source: Address) -> None:
        message = parse_message(data)
        self.vehicle = source
        if isinstance(message, SipResponse):
            self.responses.append(message)
        else:
            self.requests.append(message)
            self.arrival_times.append(asyncio.get_running_loop().time())
            if not self.script.silent:
                self._request(message)
        self.arrived.set()

    def _request(self, request: SipRequest) -> None:
        script = self.script
        if request.method == "INVITE":
            if sum(1 for r in self.requests if r.method == "INVITE") <= script.drop_invites:
                return
            self.invite = request
            self.ecall = read_ecall_invite(request)
            self.msds.append(self.ecall.msd)
            if script.final is not None:
                self.send(response_to(request, script.final, to_tag=self.to_tag))
                return
            if script.ring_only:
                self.send(response_to(request, 180, to_tag=self.to_tag))
                return
            self.send(self.ok(request))
        elif request.method == "INFO":
            found = read_msd(request)
            if found is not None:
                self.msds.append(found[0])
            self.send(response_to(request, script.answer_info))
        elif request.method in ("BYE", "CANCEL"):
            self.send(response_to(request, 200))
            if request.method == "CANCEL" and script.ring_only and self.invite is not None:
                self.send(response_to(self.invite, 487, to_tag=self.to_tag))  # §9.2: the INVITE ends 487

    def ok(self, request: SipRequest) -> SipResponse:
        assert self.ecall is not None
        control = None
        if self.script.ack_in_ok is not None:
            control = build_control_ack(self.ecall.msd_content_id, self.script.ack_in_ok)
        elif self.script.request_msd_in_ok:
            control = build_control_request_msd()
        content_type, body = answer_body(build_sdp(AudioSession(address="127.0.0.1", port=self.rtp_port)), control)
        headers = [("Contact", f"<sip:psap@{self.address[0]}:{self.address[1]}>"), ("Content-Type", content_type)]
        return response_to(request, 200, to_tag=self.to_tag, headers=headers, body=body)

    @property
    def rtp_port(self) -> int:
        assert self._rtp is not None
        assert self._rtp.transport is not None
        return int(self._rtp.transport.get_extra_info("sockname")[1])

    # -- what the PSAP does on its own -------------------------------------------------------------------
    def in_dialog(self, method: str, *, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> SipRequest:
        """A request in the vehicle's dialog (the PSAP as UAS: From is the vehicle's To)."""
        assert self.invite is not None
        self._cseq += 1
        invite = self.invite
        target = parse_name_addr(invite.headers.get_all("Contact")[0]).uri
        fields = [
            ("Via", f"SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", parse_name_addr(invite.headers.require("To")).with_tag(self.to_tag).format()),
            ("To", invite.headers.require("From")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{self._cseq} {method}"),
            *(headers or []),
        ]
        return SipRequest(method=method, uri=target, headers=SipHeaders(fields), body=body)

    def info(self, control: bytes) -> SipRequest:
        headers, content_type, body = info_body(control=control)
        request = self.in_dialog("INFO", headers=[*headers, ("Content-Type", content_type)], body=body)
        self.send(request)
        return request

    def bye(self) -> SipRequest:
        request = self.in_dialog("BYE")
        self.send(request)
        return request

    def call_back(self, contact_uri: str) -> SipRequest:
        """INVITE the vehicle at the Contact of its eCall, as the PSAP's callback."""
        uri = parse_sip_uri(contact_uri)
        sdp = build_sdp(AudioSession(address="127.0.0.1", port=self.rtp_port))
        fields = [
            ("Via", f"SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:psap@{self.address[0]}>;tag={self.to_tag}"),
            ("To", f"<{contact_uri}>"),
            ("Call-ID", new_call_id()),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:psap@{self.address[0]}:{self.address[1]}>"),
            ("Content-Type", "application/sdp"),
        ]
        request = SipRequest(method="INVITE", uri=contact_uri, headers=SipHeaders(fields), body=sdp)
        self._callback = request
        self.send(request, (uri.host, uri.port or 5060))
        return request

    def ack_callback(self, ok: SipResponse) -> None:
        self.callback_request("ACK", ok, cseq=1)

    def callback_request(self, method: str, ok: SipResponse, *, cseq: int | None = None) -> SipRequest:
        """A request in the callback's dialog (the PSAP as UAC), to the vehicle's Contact from its 200 OK."""
        assert self._callback is not None
        if cseq is None:
            self._cseq += 1
        fields = [
            ("Via", f"SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", self._callback.headers.require("From")),
            ("To", ok.headers.require("To")),
            ("Call-ID", self._callback.call_id),
            ("CSeq", f"{cseq or self._cseq} {method}"),
        ]
        target = parse_name_addr(ok.headers.get_all("Contact")[0]).uri
        request = SipRequest(method=method, uri=target, headers=SipHeaders(fields))
        self.send(request, (parse_sip_uri(target).host, parse_sip_uri(target).port or 5060))
        return request


@contextlib.asynccontextmanager
async def psap_peer(script: Script | None = None) -> AsyncIterator[PsapPeer]:
    loop = asyncio.get_running_loop()
    peer = PsapPeer(script=script or Script())
    peer._transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(peer), local_addr=("127.0.0.1", 0))
    rtp_transport, rtp = await loop.create_datagram_endpoint(lambda: _RtpEcho(peer), local_addr=("127.0.0.1", 0))
    peer._rtp = rtp
    try:
        yield peer
    finally:
        peer._transport.close()
        rtp_transport.close()
