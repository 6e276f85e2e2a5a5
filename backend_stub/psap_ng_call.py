"""One NG eCall at the PSAP (`backend_stub.psap_ng`): its record, and the SIP pieces that are not decisions.

`NgCall` is a `PsapCall` (the circuit-switched stub's call: kind, timeline, MSDs, who ended it) with the
SIP dialog (`telematics_wire.sip.call_dialog.Dialog`, a value replaced as requests are counted), the
voice stream and the location the INVITE's PIDF-LO gave. The helpers name things the same way for
both sides of the PSAP: the kind of call from its URN, the timeline event of an ack, where a request
for a SIP URI goes, the PSAP's callback INVITE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from backend_stub.psap import PsapCall
from backend_stub.psap_rtp import PsapVoice
from telematics_wire.errors import SipError
from telematics_wire.sip.call_dialog import Dialog
from telematics_wire.sip.dialog import new_branch, new_call_id, new_tag, parse_name_addr, parse_sip_uri
from telematics_wire.sip.ecall_body import SDP_CONTENT_TYPE, is_automatic_urn, is_test_urn
from telematics_wire.sip.ecall_invite import ALLOW
from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse
from telematics_wire.sip.pidf_lo import Location

DEFAULT_SIP_PORT = 5060
Address = tuple[str, int]


@dataclass(slots=True, kw_only=True)
class NgCall(PsapCall):
    """An NG eCall (or the PSAP's callback): a `PsapCall` with its SIP dialog and voice stream.

    `callback` is the vehicle's Contact URI, where `call_back` rings."""

    urn: str = ""
    location: Location | None = None
    dialog: Dialog | None = field(default=None, repr=False)
    voice: PsapVoice | None = field(default=None, repr=False)
    acked: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # the ACK of our 2xx came
    resends: int = 0

    @property
    def rtp_sent(self) -> int:
        return 0 if self.voice is None else self.voice.sent

    @property
    def rtp_received(self) -> int:
        return 0 if self.voice is None else self.voice.received


def kind_of(urn: str) -> str:
    """The call's kind as the circuit-switched stub names it: test, automatic or manual."""
    if is_test_urn(urn):
        return "test"
    return "automatic" if is_automatic_urn(urn) else "manual"


def ack_event(received: bool) -> str:
    """The timeline event of an ack: the circuit-switched stub's name for a positive one, so a scenario's
    checks read both transports alike."""
    return "al-ack positive" if received else "ack received=false"


def address_of(uri_or_route: str) -> Address:
    """Where a request for a SIP URI (or a Route value) is sent: its host and port, 5060 when it names none."""
    uri = parse_sip_uri(parse_name_addr(uri_or_route, "Route").uri)
    return uri.host.strip("[]"), DEFAULT_SIP_PORT if uri.port is None else uri.port


def to_tag(request: SipRequest) -> str | None:
    return parse_name_addr(request.headers.require("To"), "To").tag


def sdp_of(message: SipResponse) -> bytes:
    """The body of a response that must be an SDP answer (the vehicle's 2xx to a callback)."""
    content_type = message.headers.get("Content-Type") or ""
    if content_type.split(";")[0].strip().lower() != SDP_CONTENT_TYPE:
        raise SipError(f"answer is {content_type[:60]!r}, not {SDP_CONTENT_TYPE}")
    return message.body


def callback_invite(*, target: str, contact: str, sent_by: Address, sdp: bytes) -> SipRequest:
    """The PSAP's INVITE calling the vehicle back at `target` (the Contact of its eCall): SDP only."""
    host, port = sent_by
    return SipRequest(
        method="INVITE",
        uri=target,
        headers=SipHeaders(
            (
                ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<{contact}>;tag={new_tag()}"),
                ("To", f"<{target}>"),
                ("Call-ID", new_call_id(host)),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<{contact}>"),
                ("Allow", ALLOW),
                ("Content-Type", SDP_CONTENT_TYPE),
            )
        ),
        body=sdp,
    )


def request_in_call(
    call: NgCall,
    method: str,
    *,
    sent_by: Address,
    contact: str,
    cseq: int | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> tuple[SipRequest, Address]:
    """A request in the call's dialog (its CSeq counted in `call.dialog`) and where it goes: the first
    route (the proxy that Record-Routed itself) or, with none, the vehicle's Contact."""
    if call.dialog is None:
        raise LookupError(f"call {call.id} has no dialog (not answered)")
    host, port = sent_by
    call.dialog, request = call.dialog.request(
        method,
        via_sent_by=f"{host}:{port}",
        branch=new_branch(),
        contact=None if method == "ACK" else contact,
        body=body,
        content_type=content_type,
        extra_headers=headers,
        cseq=cseq,
    )
    return request, address_of(call.dialog.route_set[0] if call.dialog.route_set else call.dialog.remote_target)
