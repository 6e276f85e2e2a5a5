"""The state of one SIP dialog (RFC 3261 §12) and the requests sent inside it: ACK, INFO, BYE.

Both ends of an eCall need this: the vehicle after the PSAP's 2xx (`dialog_as_caller`), the PSAP on the
INVITE (`dialog_as_callee`). With a record-routing proxy on the path (Kamailio here, the IMS core in a car)
in-dialog requests must carry the route set as Route headers and go to its first hop; `Dialog.request`
does that for loose routers (`;lr`) and, per §12.2.1.1, for a strict router too. Values only, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import CSeq, NameAddr, Via, parse_host_port, parse_name_addr, parse_sip_uri
from telematics_wire.sip.header_syntax import param
from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str  # the peer's Contact URI: where requests are addressed
    route_set: tuple[str, ...] = ()  # Route values in the order they are sent
    local_seq: int  # the CSeq number of our last request
    remote_seq: int | None = None  # the CSeq number of the peer's last request, once there was one

    def matches(self, request: SipRequest) -> bool:
        """True when an incoming request belongs to this dialog (Call-ID and both tags)."""
        try:
            from_tag = parse_name_addr(request.headers.require("From"), "From").tag
            to_tag = parse_name_addr(request.headers.require("To"), "To").tag
        except SipError:
            return False
        return request.call_id == self.call_id and from_tag == self.remote_tag and to_tag == self.local_tag

    def next_hop(self) -> tuple[str, int | None]:
        """(host, port|None) to send the next in-dialog request to: the first route, else the remote target."""
        target = parse_name_addr(self.route_set[0], "Route").uri if self.route_set else self.remote_target
        uri = parse_sip_uri(target)
        return uri.host.strip("[]"), uri.port

    def request(
        self,
        method: str,
        *,
        via_sent_by: str,
        branch: str,
        contact: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
    ) -> tuple[Dialog, SipRequest]:
        """The next request in this dialog and the dialog with its CSeq counted.

        `cseq` overrides the number (an ACK for a 2xx reuses the INVITE's, §13.2.2.4); it is not counted then.
        """
        if method == "ACK" and cseq is None:
            raise SipError("an ACK takes the CSeq number of the INVITE it acknowledges")
        number = self.local_seq + 1 if cseq is None else cseq
        request_uri, routes = self._routing()
        host, port = parse_host_port(via_sent_by, "Via sent-by")
        headers: list[tuple[str, str]] = [
            ("Via", Via(host=host, port=port, params=(("branch", branch), ("rport", None))).format()),
            ("Max-Forwards", "70"),
            *(("Route", route) for route in routes),
            ("From", NameAddr(uri=self.local_uri).with_tag(self.local_tag).format()),
            ("To", NameAddr(uri=self.remote_uri).with_tag(self.remote_tag).format()),
            ("Call-ID", self.call_id),
            ("CSeq", CSeq(number=number, method=method).format()),
        ]
        if contact is not None:
            headers.append(("Contact", NameAddr(uri=contact).format()))
        headers.extend(extra_headers)
        if body:
            if content_type is None:
                raise SipError(f"{method} has a body but no Content-Type")
            headers.append(("Content-Type", content_type))
        request = SipRequest(method=method, uri=request_uri, headers=SipHeaders(headers), body=body)
        counted = self if cseq is not None else replace(self, local_seq=number)
        return counted, request

    def ack(self, *, invite_cseq: int, via_sent_by: str, branch: str) -> SipRequest:
        """The ACK for a 2xx to our INVITE: a request of its own in the dialog with the INVITE's CSeq number."""
        return self.request("ACK", via_sent_by=via_sent_by, branch=branch, cseq=invite_cseq)[1]

    def received(self, request: SipRequest) -> Dialog:
        """The dialog after an in-dialog request from the peer; refuses a CSeq lower than the last (§12.2.2)."""
        number = request.cseq.number
        if request.method != "ACK" and self.remote_seq is not None and number < self.remote_seq:
            raise SipError(f"CSeq {number} is lower than the dialog's last {self.remote_seq}")
        return replace(self, remote_seq=number if request.method != "ACK" else self.remote_seq)

    def _routing(self) -> tuple[str, tuple[str, ...]]:
        if not self.route_set:
            return self.remote_target, ()
        first = parse_name_addr(self.route_set[0], "Route")
        if param(parse_sip_uri(first.uri).params, "lr") is not None:
            return self.remote_target, self.route_set
        # A strict router: it becomes the Request-URI, the remote target goes last in the Route list.
        return first.uri, (*self.route_set[1:], NameAddr(uri=self.remote_target).format())


def _uri_and_tag(value: str, what: str) -> tuple[str, str | None]:
    address = parse_name_addr(value, what)
    return address.uri, address.tag


def _contact_uri(message: SipRequest | SipResponse, what: str) -> str:
    contacts = message.headers.get_all("Contact")
    if not contacts:
        raise SipError(f"{what} has no Contact: the dialog has no remote target")
    uri = parse_name_addr(contacts[0], "Contact").uri
    parse_sip_uri(uri)
    return uri


def dialog_as_caller(invite: SipRequest, response: SipResponse) -> Dialog:
    """The caller's dialog from its INVITE and a 2xx (or 1xx with a To tag) to it (§12.1.2)."""
    local_uri, local_tag = _uri_and_tag(invite.headers.require("From"), "From")
    remote_uri, remote_tag = _uri_and_tag(response.headers.require("To"), "To")
    if local_tag is None or remote_tag is None:
        raise SipError("a dialog needs a From tag and a To tag")
    if response.call_id != invite.call_id:
        raise SipError("response Call-ID differs from the INVITE's")
    return Dialog(
        call_id=invite.call_id,
        local_tag=local_tag,
        remote_tag=remote_tag,
        local_uri=local_uri,
        remote_uri=remote_uri,
        remote_target=_contact_uri(response, "the response"),
        route_set=tuple(reversed(response.headers.get_all("Record-Route"))),
        local_seq=invite.cseq.number,
    )


def dialog_as_callee(invite: SipRequest, local_tag: str) -> Dialog:
    """The callee's dialog from an INVITE and the To tag it answers with (§12.1.1)."""
    remote_uri, remote_tag = _uri_and_tag(invite.headers.require("From"), "From")
    local_uri, _ = _uri_and_tag(invite.headers.require("To"), "To")
    if remote_tag is None:
        raise SipError("the INVITE's From has no tag")
    return Dialog(
        call_id=invite.call_id,
        local_tag=local_tag,
        remote_tag=remote_tag,
        local_uri=local_uri,
        remote_uri=remote_uri,
        remote_target=_contact_uri(invite, "the INVITE"),
        route_set=invite.headers.get_all("Record-Route"),
        local_seq=0,
        remote_seq=invite.cseq.number,
    )
