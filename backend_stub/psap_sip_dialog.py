"""A SIP dialog as the NG PSAP keeps it (RFC 3261 §12): who is who, where requests go, the CSeq it counts.

The PSAP is the callee of an eCall (`as_callee`, from the INVITE it answers) and the caller of a callback
(`as_caller`, from its INVITE and the vehicle's 2xx). Requests inside the dialog (INFO, BYE, ACK) go to
the first Route (the proxy on the path, which Record-Routed itself: Kamailio in the HIL, the IMS core in
life) or, with no route set, to the vehicle's Contact. Only loose routing (`;lr`) is spoken.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import CSeq, Via, new_branch, parse_name_addr, parse_sip_uri
from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse

DEFAULT_SIP_PORT = 5060
MAX_FORWARDS = 70


def contact_uri(message: SipRequest | SipResponse) -> str:
    """The URI of the message's Contact; SipError when it has none (a dialog needs a remote target)."""
    contacts = message.headers.get_all("Contact")
    if not contacts:
        raise SipError("no Contact header: nowhere to send requests in this dialog")
    uri = parse_name_addr(contacts[0], "Contact").uri
    parse_sip_uri(uri)  # a sip: URI we can send to, or SipError now rather than at the first BYE
    return uri


def address_of(uri: str) -> tuple[str, int]:
    """Where a request for `uri` is sent (host, port); port 5060 when the URI names none."""
    parsed = parse_sip_uri(uri)
    return parsed.host.strip("[]"), DEFAULT_SIP_PORT if parsed.port is None else parsed.port


@dataclass(slots=True, kw_only=True)
class SipDialog:
    call_id: str
    local: str  # our name-addr with our tag: From of the requests we send
    remote: str  # theirs with their tag: To of the requests we send
    remote_target: str  # their Contact URI: the Request-URI of the requests we send
    route_set: tuple[str, ...] = ()
    cseq: int = 0  # the last CSeq number we used

    @classmethod
    def as_callee(cls, invite: SipRequest, local_tag: str) -> SipDialog:
        """The dialog an INVITE we answer with a 2xx makes (§12.1.1): the route set in Record-Route's order."""
        to = parse_name_addr(invite.headers.require("To"), "To").with_tag(local_tag)
        remote = invite.headers.require("From")
        if parse_name_addr(remote, "From").tag is None:
            raise SipError("From has no tag")
        return cls(
            call_id=invite.call_id,
            local=to.format(),
            remote=remote,
            remote_target=contact_uri(invite),
            route_set=invite.headers.get_all("Record-Route"),
        )

    @classmethod
    def as_caller(cls, invite: SipRequest, response: SipResponse) -> SipDialog:
        """The dialog our INVITE's 2xx makes (§12.1.2): the route set in reverse Record-Route order."""
        remote = response.headers.require("To")
        if parse_name_addr(remote, "To").tag is None:
            raise SipError("the 2xx has no To tag")
        return cls(
            call_id=invite.call_id,
            local=invite.headers.require("From"),
            remote=remote,
            remote_target=contact_uri(response),
            route_set=tuple(reversed(response.headers.get_all("Record-Route"))),
            cseq=invite.cseq.number,
        )

    @property
    def local_tag(self) -> str | None:
        return parse_name_addr(self.local, "From").tag

    @property
    def remote_tag(self) -> str | None:
        return parse_name_addr(self.remote, "To").tag

    def owns(self, request: SipRequest) -> bool:
        """A request of this dialog: same Call-ID, their tag in From, ours in To (a guessed Call-ID is not enough)."""
        try:
            from_tag = parse_name_addr(request.headers.require("From"), "From").tag
            to_tag = parse_name_addr(request.headers.require("To"), "To").tag
        except SipError:
            return False
        return request.call_id == self.call_id and from_tag == self.remote_tag and to_tag == self.local_tag

    def destination(self) -> tuple[str, int]:
        first = parse_name_addr(self.route_set[0], "Route").uri if self.route_set else self.remote_target
        return address_of(first)

    def request(
        self,
        method: str,
        *,
        sent_by: tuple[str, int],
        contact: str,
        cseq: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipRequest:
        """A request in this dialog; a new CSeq unless `cseq` is given (the ACK of a 2xx reuses the INVITE's)."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        via = Via(host=sent_by[0], port=sent_by[1], params=(("branch", new_branch()), ("rport", None)))
        fields: list[tuple[str, str]] = [
            ("Via", via.format()),
            ("Max-Forwards", str(MAX_FORWARDS)),
            *(("Route", route) for route in self.route_set),
            ("From", self.local),
            ("To", self.remote),
            ("Call-ID", self.call_id),
            ("CSeq", CSeq(number=cseq, method=method).format()),
            ("Contact", f"<{contact}>"),
            *headers,
        ]
        return SipRequest(method=method, uri=self.remote_target, headers=SipHeaders(fields), body=body)
