"""One NG eCall: the call's own bookkeeping around its SIP dialog (`telematics_wire.sip.call_dialog.Dialog`,
RFC 3261 §12), and the in-dialog requests (ACK for a 2xx, INFO, BYE) built from it. Sans-I/O:
`NgEcallModem` sends them, and the transport puts its own Via on top.

A call is ours (`Role.UAC`: the vehicle's INVITE to the eCall URN; the dialog comes with the 2xx) or the
PSAP's (`Role.UAS`: its callback INVITE to the Contact we gave; the dialog comes with our To tag).
`NgMsd`/`MsdSource`/`CarriesMsd`: how the eCall service gives an NG call its MSD (see `ng_modem`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from tcu.ecall.ng.rtp import RtpCounts
from telematics_wire.errors import SipError
from telematics_wire.sip.call_dialog import Dialog, dialog_as_callee, dialog_as_caller
from telematics_wire.sip.dialog import new_branch, parse_name_addr
from telematics_wire.sip.ecall_body import SDP_CONTENT_TYPE
from telematics_wire.sip.ecall_invite import body_parts
from telematics_wire.sip.message import SipRequest, SipResponse
from telematics_wire.sip.pidf_lo import Location
from telematics_wire.sip.sdp import parse_sdp


@dataclass(frozen=True, slots=True, kw_only=True)
class NgMsd:
    """The MSD for an INVITE: the identifier the state machine's next transmission gets, its bytes, the place."""

    message_identifier: int
    msd: bytes
    location: Location | None


MsdSource = Callable[[], NgMsd]
ReportSink = Callable[[Mapping[str, Any]], None]  # a record body for the backend; never waits


@runtime_checkable
class CarriesMsd(Protocol):
    """A modem that needs the MSD at the dial (NG eCall); the eCall service binds itself to it."""

    def bind_service(self, *, msd: MsdSource, report: ReportSink) -> None: ...


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
    local_tag: str
    sent_by: str  # our host:port, for the Via of in-dialog requests (the transport writes its own anyway)
    contact: str  # our Contact URI
    phase: CallPhase = CallPhase.CALLING
    invite: SipRequest | None = None  # ours as sent (UAC), or the PSAP's (UAS)
    dialog: Dialog | None = None
    provisional: bool = False  # UAC: a 1xx came, so a CANCEL may be sent (§9.1)
    cancel_wanted: bool = False  # UAC: hung up before the answer
    msd_in_invite: int | None = None  # the messageIdentifier the INVITE carried
    msd_owed: bool = False  # the machine's next SendMsd is the INVITE's MSD: already delivered
    msd_content_ids: list[str] = field(default_factory=list)

    @property
    def confirmed(self) -> bool:
        return self.phase is CallPhase.CONFIRMED

    def confirm_as_caller(self, response: SipResponse) -> None:
        """The 2xx to our INVITE sets up the dialog (§12.1.2); SipError when it cannot (no To tag, no Contact)."""
        assert self.invite is not None, "a caller's call has its INVITE"
        self.dialog = dialog_as_caller(self.invite, response)
        self.phase = CallPhase.CONFIRMED

    def ring_as_callee(self, invite: SipRequest) -> None:
        """The PSAP's INVITE sets up the dialog we answer in (§12.1.1); SipError when it cannot (no Contact)."""
        self.dialog = dialog_as_callee(invite, self.local_tag)
        self.invite = invite
        self.phase = CallPhase.RINGING

    def request(self, method: str, *, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> SipRequest:
        """The next in-dialog request (INFO, BYE) with its CSeq counted."""
        if self.dialog is None:
            raise SipError(f"no dialog to send {method} in")
        content_type = dict(headers).get("Content-Type")
        extra = [(name, value) for name, value in headers if name != "Content-Type"]
        self.dialog, request = self.dialog.request(
            method,
            via_sent_by=self.sent_by,
            branch=new_branch(),
            contact=self.contact,
            body=body,
            content_type=content_type,
            extra_headers=extra,
        )
        return request

    def ack_for_2xx(self) -> SipRequest:
        """The ACK for the 2xx to our INVITE: the INVITE's CSeq number, a transaction of its own (§13.2.2.4)."""
        assert self.dialog is not None, "the 2xx set up the dialog"
        assert self.invite is not None, "a caller's call has its INVITE"
        return self.dialog.ack(invite_cseq=self.invite.cseq.number, via_sent_by=self.sent_by, branch=new_branch())

    def owns(self, request: SipRequest) -> bool:
        """The request belongs to this call: its dialog, or (still ringing) the INVITE's Call-ID and From tag,
        as a CANCEL carries them."""
        if self.dialog is None or request.call_id != self.call_id:
            return False
        if self.phase is CallPhase.RINGING:
            return parse_name_addr(request.headers.require("From"), "From").tag == self.dialog.remote_tag
        return self.dialog.matches(request)

    def received(self, request: SipRequest) -> None:
        """Count the PSAP's in-dialog request; SipError for a CSeq lower than its last (§12.2.2: 500)."""
        if self.dialog is not None:
            self.dialog = self.dialog.received(request)

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
