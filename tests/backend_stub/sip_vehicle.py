"""A vehicle's side of an NG eCall, just enough to drive the NG PSAP in tests: one UDP socket, S1's codecs.

async with SipVehicle() as vehicle:
    ok = await vehicle.call(psap.address)          # INVITE (MSD + PIDF-LO + SDP) → 100, 200; ACK sent
    bye = await vehicle.receive_request("BYE")      # what the PSAP sends next; vehicle.reply(bye)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from telematics_wire.sip.call_dialog import Dialog, dialog_as_caller
from telematics_wire.sip.dialog import new_branch, new_call_id, new_tag
from telematics_wire.sip.ecall_body import URN_AUTOMATIC
from telematics_wire.sip.ecall_invite import build_ecall_invite
from telematics_wire.sip.message import SipRequest, SipResponse, parse_message, response_to
from telematics_wire.sip.pidf_lo import Location
from telematics_wire.sip.sdp import AudioSession, build_sdp
from tests.backend_stub.psap_caller import MSD

LATITUDE, LONGITUDE = 48.177, 11.556  # where the crash happened (also the MSD's position, roughly)
FIX_TIME = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
Address = tuple[str, int]


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.datagrams.put_nowait((data, (str(addr[0]), int(str(addr[1])))))


class SipVehicle:
    """The car's SIP socket and one call's dialog state (the INVITE it sent, the PSAP's 2xx)."""

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._inbox = _Inbox()
        self.tag = new_tag()
        self.call_id = new_call_id("127.0.0.1")
        self.invite: SipRequest | None = None
        self.answer: SipResponse | None = None
        self.source: Address | None = None  # where the last message came from

    @property
    def port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def contact(self) -> str:
        return f"sip:ivs@127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self._inbox, local_addr=("127.0.0.1", 0))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, message: SipRequest | SipResponse | bytes, to: Address) -> None:
        assert self._transport is not None
        self._transport.sendto(message if isinstance(message, bytes) else message.encode(), to)

    async def receive(self, within_s: float = 5.0) -> SipRequest | SipResponse:
        async with asyncio.timeout(within_s):
            data, self.source = await self._inbox.datagrams.get()
        return parse_message(data)

    async def receive_request(self, method: str, within_s: float = 5.0) -> SipRequest:
        message = await self.receive(within_s)
        assert isinstance(message, SipRequest), message
        assert message.method == method, message
        return message

    async def receive_response(self, within_s: float = 5.0) -> SipResponse:
        message = await self.receive(within_s)
        assert isinstance(message, SipResponse), message
        return message

    def build_invite(
        self, *, msd: bytes = MSD, urn: str = URN_AUTOMATIC, rtp_port: int = 40_000, with_location: bool = True
    ) -> SipRequest:
        location = Location(latitude=LATITUDE, longitude=LONGITUDE, radius_m=15.0, timestamp=FIX_TIME)
        return build_ecall_invite(
            request_uri=urn,
            from_uri=self.contact,
            contact=self.contact,
            call_id=self.call_id,
            from_tag=self.tag,
            branch=new_branch(),
            cseq=1,
            msd=msd,
            location=location if with_location else None,
            sdp=build_sdp(AudioSession(address="127.0.0.1", port=rtp_port)),
        )

    async def call(self, to: Address, invite: SipRequest | None = None) -> SipResponse:
        """Place the eCall and ACK the PSAP's 200 OK (which is returned); 1xx are skipped."""
        self.invite = invite or self.build_invite()
        self.send(self.invite, to)
        while (response := await self.receive_response()).status < 200:
            pass
        assert response.status == 200, response
        self.answer = response
        self.send(self.ack(), self.source or to)
        return response

    def ack(self) -> SipRequest:
        assert self.answer is not None
        return self.dialog().ack(invite_cseq=1, via_sent_by=f"127.0.0.1:{self.port}", branch=new_branch())

    def dialog(self) -> Dialog:
        """The call's dialog as the vehicle (the caller) holds it: the route set Kamailio recorded, reversed."""
        assert self.invite is not None
        assert self.answer is not None
        return dialog_as_caller(self.invite, self.answer)

    def in_dialog(
        self,
        method: str,
        cseq: int,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """A request from the vehicle inside the call (BYE, INFO) with CSeq `cseq`."""
        _, request = self.dialog().request(
            method,
            via_sent_by=f"127.0.0.1:{self.port}",
            branch=new_branch(),
            contact=self.contact,
            body=body,
            content_type=content_type,
            extra_headers=headers,
            cseq=cseq,
        )
        return request

    def reply(
        self, request: SipRequest, status: int = 200, *, headers: tuple[tuple[str, str], ...] = (), body: bytes = b""
    ) -> None:
        """Answer a request from the PSAP, back where it came from."""
        assert self.source is not None
        self.send(response_to(request, status, to_tag=self.tag, headers=headers, body=body), self.source)
