"""One NG eCall as a SIP dialog (RFC 3261 §12): its identifiers, route set and sequence numbers, and the
in-dialog requests (ACK for a 2xx, INFO, BYE) built from them. Sans-I/O: `NgEcallModem` sends them.

A call is ours (`Role.UAC`: the vehicle's INVITE to the eCall URN) or the PSAP's (`Role.UAS`: its
callback INVITE to the Contact we gave). The dialog is set up by the 2xx we receive or send: remote tag,
remote target (Contact) and route set (Record-Route, reversed for the UAC, §12.1.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tcu.ecall.ng.rtp import RtpCounts
from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import MAX_CSEQ, NameAddr, parse_name_addr
from telematics_wire.sip.ecall_body import SDP_CONTENT_TYPE
from telematics_wire.sip.ecall_invite import body_parts
from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse
from telematics_wire.sip.sdp import parse_sdp

MAX_FORWARDS = "70"


class Role(StrEnum):
    UAC = "uac"  # the vehicle called
    UAS = "uas"  # the PSAP called back


class CallPhase(StrEnum):
    CALLING = "calling"  # INVITE sent, no final answer yet
    RINGING = "ringing"  # the PSAP's INVITE received, not answered yet
    CONFIRMED = "confirmed"  # 2xx sent or received: voice, MSD, INFO, BYE
    ENDED = "ended"


@dataclass(slots=True, kw_only=True)
class NgCall:
    number: int  # `NgEcallModem.calls` of this call
    role: Role
    call_id: str
    local_uri: str
    local_tag: str
    remote_uri: str
    remote_tag: str | None
    remote_target: str  # where in-dialog requests go (the peer's Contact, or the URN until then)
    contact: str  # our Contact header value
    local_cseq: int = 1
    route_set: tuple[str, ...] = ()
    phase: CallPhase = CallPhase.CALLING
    invite: SipRequest | None = None  # ours as sent (UAC), or the PSAP's (UAS)
    provisional: bool = False  # UAC: a 1xx came, so a CANCEL may be sent (§9.1)
    cancel_wanted: bool = False  # UAC: hung up before the answer
    msd_in_invite: int | None = None  # the messageIdentifier the INVITE carried, until the machine numbers it
    msd_owed: bool = False  # the machine's next SendMsd is the INVITE's MSD: already delivered
    msd_content_ids: list[str] = field(default_factory=list)

    @property
    def confirmed(self) -> bool:
        return self.phase is CallPhase.CONFIRMED

    def from_header(self) -> str:
        return NameAddr(uri=self.local_uri).with_tag(self.local_tag).format()

    def to_header(self) -> str:
        remote = NameAddr(uri=self.remote_uri)
        return (remote.with_tag(self.remote_tag) if self.remote_tag else remote).format()

    def confirm_as_uac(self, response: SipResponse) -> None:
        """The 2xx to our INVITE sets up the dialog (§12.1.2)."""
        self.remote_tag = parse_name_addr(response.headers.require("To"), "To").tag
        contact = response.headers.get_all("Contact")
        if contact:
            self.remote_target = parse_name_addr(contact[0], "Contact").uri
        self.route_set = tuple(reversed(response.headers.get_all("Record-Route")))
        self.phase = CallPhase.CONFIRMED

    def request(self, method: str, *, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> SipRequest:
        """An in-dialog request with the next CSeq (§12.2.1.1); the transport adds the Via."""
        if self.local_cseq >= MAX_CSEQ:
            raise SipError("the dialog's CSeq is exhausted")
        self.local_cseq += 1
        return self._build(method, self.local_cseq, headers, body)

    def ack_for_2xx(self, response: SipResponse) -> SipRequest:
        """The ACK for the 2xx to our INVITE: the INVITE's CSeq number, a new transaction (§13.2.2.4)."""
        assert self.invite is not None, "an ACK needs the INVITE it acknowledges"
        return self._build("ACK", self.invite.cseq.number, (), b"")

    def _build(self, method: str, number: int, headers: Iterable[tuple[str, str]], body: bytes) -> SipRequest:
        fields = [("Route", route) for route in self.route_set]
        fields += [
            ("Max-Forwards", MAX_FORWARDS),
            ("From", self.from_header()),
            ("To", self.to_header()),
            ("Call-ID", self.call_id),
            ("CSeq", f"{number} {method}"),
            ("Contact", self.contact),
            *headers,
        ]
        return SipRequest(method=method, uri=self.remote_target, headers=SipHeaders(fields), body=body)

    def owns(self, request: SipRequest) -> bool:
        """The request belongs to this dialog: Call-ID, and the tags seen from the peer's side (§12.2.2)."""
        if request.call_id != self.call_id:
            return False
        from_tag = parse_name_addr(request.headers.require("From"), "From").tag
        to_tag = parse_name_addr(request.headers.require("To"), "To").tag
        if self.role is Role.UAS and self.phase is CallPhase.RINGING:
            return from_tag == self.remote_tag
        return from_tag == self.remote_tag and to_tag == self.local_tag

    def end(self, reason: str, voice: RtpCounts | None) -> dict[str, Any]:
        """Mark the call over; the `ng_call_ended` record body for the backend (what SIP and RTP carried)."""
        body: dict[str, Any] = {
            "event": "ng_call_ended",
            "transport": "ng",
            "role": self.role.value,
            "call_id": self.call_id,
            "connected": self.confirmed,
            "msds_sent": len(self.msd_content_ids),
            "reason": reason,
        }
        if voice is not None:
            body |= {"rtp_sent": voice.sent, "rtp_received": voice.received, "rtp_rejected": voice.rejected}
        self.phase = CallPhase.ENDED
        return body


def remote_audio(message: SipRequest | SipResponse) -> tuple[str, int] | None:
    """Where the peer wants our RTP (its SDP's address and port), or None without a usable SDP."""
    try:
        parts = body_parts(message)
        sdp = next((part.data for part in parts if part.media_type == SDP_CONTENT_TYPE.lower()), None)
        session = None if sdp is None else parse_sdp(sdp)
    except SipError:
        return None
    if session is None or session.port == 0 or session.direction in ("inactive", "recvonly"):
        return None
    return (session.address, session.port)
