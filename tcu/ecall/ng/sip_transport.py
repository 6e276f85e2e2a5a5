"""The vehicle's SIP transport on UDP: transactions with RFC 3261's timers, Via with rport, server retransmits.

    sip = SipTransport(host="", port=0, proxy=("127.0.0.1", 5060), on_request=handle)  # "": towards the proxy
    async with sip:                                  # binds the socket
        sip.send_invite(invite, on_response)         # INVITE client transaction (§17.1.1), Via added here
        sip.cancel(invite)                           # CANCEL for it (§9.1), on the INVITE's branch
        sip.send_request(info, on_final)             # non-INVITE client transaction (§17.1.2): INFO, BYE
        sip.send_ack(ack)                            # the ACK for a 2xx, outside any transaction (§13.2.2.4)
        sip.respond(request, response)               # server side: kept and sent again on request retransmits

Every request we originate goes to the configured proxy (the P-CSCF stand-in): an IMS UE sends all its
SIP to its P-CSCF, which routes by the Request-URI and Route headers. Our Via names the address we
advertise and carries an empty `rport` (RFC 3581), so answers come back to the port we sent from.

Only the proxy speaks to us: a datagram from any other address (even a well-formed callback INVITE) is
dropped, logged and counted in `rejected`, as an IMS UE takes SIP only from its P-CSCF.

Incoming requests: the top Via gets `received` and `rport` filled in (RFC 3581 §4), then the request goes
to `on_request` once; a retransmission of it gets our last response again (the server transaction,
§17.2) or nothing while we have none. An INVITE is answered `100 Trying` at once. A 2xx to an INVITE is
retransmitted (T1 doubling to T2) until its ACK arrives, for at most 64·T1 (§13.3.1.4). At most
`MAX_SERVER_TRANSACTIONS` are kept: a flood of new branches makes room by forgetting the oldest one
already answered (so the PSAP's BYE still gets through), and is answered 503 only while all are open.

Receiving is total: any datagram is a SIP message, or counted in `rejected` and logged; a 2xx retransmission
for an INVITE transaction already ended goes to `on_stray_2xx` (the dialog sends its ACK again).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from tcu.ecall.ng.sip_transactions import InviteClient, NonInviteClient, ResponseCallback, SipTimers
from telematics_wire.errors import SipError
from telematics_wire.rtp import same_endpoint
from telematics_wire.sip.dialog import Via, format_host_port, new_branch, parse_via
from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse, parse_message, response_to

_LOGGER = logging.getLogger(__name__)

Address = tuple[str, int]
RequestHandler = Callable[[SipRequest, Address], None]
MAX_SERVER_TRANSACTIONS = 64  # an eCall has one dialog at a time; more open server transactions is a flood
_ANY_HOST = ("", "0.0.0.0", "::")  # noqa: S104 - names of the wildcard address, not a bind


@dataclass(slots=True)
class _ServerTransaction:
    last: bytes | None = None
    destination: Address | None = None
    expiry: asyncio.TimerHandle | None = None  # set once a final response went out


@dataclass(slots=True)
class _Pending2xx:
    data: bytes
    destination: Address
    interval: float
    planned: float
    deadline: float
    handle: asyncio.TimerHandle | None = None
    on_no_ack: Callable[[], None] = field(default=lambda: None)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._owner.datagram_received(data, (str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: retransmission timers decide
        _LOGGER.debug("SIP socket: %s", exc)


class SipTransport:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        proxy: Address,
        on_request: RequestHandler,
        on_stray_2xx: Callable[[SipResponse], None] = lambda response: None,
        timers: SipTimers | None = None,
    ) -> None:
        self.timers = timers or SipTimers()
        self._bind = (host, port)
        self._proxy = proxy
        self._on_request = on_request
        self._on_stray_2xx = on_stray_2xx
        self._transport: asyncio.DatagramTransport | None = None
        self._clients: dict[tuple[str, str], InviteClient | NonInviteClient] = {}
        self._servers: dict[tuple[str, str, str], _ServerTransaction] = {}
        self._pending_2xx: dict[tuple[str, int], _Pending2xx] = {}
        self.advertised: Address = ("127.0.0.1", 0)  # host and port our Via and Contact name
        self.rejected = 0  # datagrams that were no SIP message, or answered nothing of ours

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def __aenter__(self) -> SipTransport:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(*self._proxy, type=socket.SOCK_DGRAM)
        proxy_ip = str(infos[0][4][0])
        self._proxy = (proxy_ip, self._proxy[1])
        host = self._bind[0] if self._bind[0] not in _ANY_HOST else _route_source(proxy_ip)
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, self._bind[1])
        )
        self.advertised = (host, int(self._transport.get_extra_info("sockname")[1]))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for client in list(self._clients.values()):
            client.close()
        self._clients.clear()
        for server in self._servers.values():
            if server.expiry is not None:
                server.expiry.cancel()
        self._servers.clear()
        for pending in self._pending_2xx.values():
            if pending.handle is not None:
                pending.handle.cancel()
        self._pending_2xx.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- requests we send ----------------------------------------------------------------------------------
    def via(self, branch: str) -> str:
        return Via(
            host=self.advertised[0], port=self.advertised[1], params=(("branch", branch), ("rport", None))
        ).format()

    def send_invite(self, request: SipRequest, on_response: ResponseCallback) -> SipRequest:
        """Start an INVITE client transaction; returns the INVITE as sent (with our Via), for `cancel`."""
        sent = self._with_via(request)
        self._start(InviteClient(sent, send=self._to_proxy, timers=self.timers, on_response=on_response))
        return sent

    def cancel(self, invite: SipRequest, on_final: ResponseCallback) -> None:
        """CANCEL a pending INVITE (§9.1): its Request-URI, Call-ID, From, To, Route and top Via; CSeq CANCEL."""
        headers = invite.headers
        fields = [("Via", headers.get_all("Via")[0])]
        fields.extend(("Route", route) for route in headers.get_all("Route"))
        fields += [
            ("Max-Forwards", "70"),
            ("From", headers.require("From")),
            ("To", headers.require("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} CANCEL"),
        ]
        request = SipRequest(method="CANCEL", uri=invite.uri, headers=SipHeaders(fields))
        self._start(NonInviteClient(request, send=self._to_proxy, timers=self.timers, on_response=on_final))

    def send_request(self, request: SipRequest, on_final: ResponseCallback) -> None:
        """Start a non-INVITE client transaction (INFO, BYE); `on_final(None)` after Timer F."""
        sent = self._with_via(request)
        self._start(NonInviteClient(sent, send=self._to_proxy, timers=self.timers, on_response=on_final))

    def send_ack(self, ack: SipRequest) -> SipRequest:
        """Send the ACK for a 2xx (a fresh branch, no transaction); returns it as sent, to send again."""
        sent = self._with_via(ack) if ack.headers.get("Via") is None else ack
        self._to_proxy(sent.encode())
        return sent

    def _with_via(self, request: SipRequest) -> SipRequest:
        headers = SipHeaders((("Via", self.via(new_branch())), *request.headers.without("Via")))
        return SipRequest(method=request.method, uri=request.uri, headers=headers, body=request.body)

    def _start(self, client: InviteClient | NonInviteClient) -> None:
        key = _client_key(client.request)
        self._clients[key] = client
        client.on_terminated = lambda: self._forget_client(key, client)
        client.start()

    def _forget_client(self, key: tuple[str, str], client: InviteClient | NonInviteClient) -> None:
        if self._clients.get(key) is client:
            del self._clients[key]

    def _to_proxy(self, data: bytes) -> None:
        self._send(data, self._proxy)

    def _send(self, data: bytes, destination: Address) -> None:
        if self._transport is None or self._transport.is_closing():
            _LOGGER.warning("SIP: socket closed, %d bytes to %s:%d not sent", len(data), *destination)
            return
        self._transport.sendto(data, destination)

    # -- responses we send ---------------------------------------------------------------------------------
    def respond(
        self, request: SipRequest, response: SipResponse, *, on_no_ack: Callable[[], None] | None = None
    ) -> None:
        """Send `response` to `request` (built with `response_to` from the request `on_request` got) and keep
        it for the request's retransmissions; a 2xx to an INVITE goes again until its ACK (`on_no_ack`: none
        came within 64·T1, the dialog should end with BYE)."""
        via = parse_via(request.headers.get_all("Via")[0])
        destination = _response_destination(via)
        data = response.encode()
        self._send(data, destination)
        server = self._servers.get(_server_key(request, via))
        if server is not None:
            server.last, server.destination = data, destination
            if response.status >= 200 and server.expiry is None:
                key = _server_key(request, via)
                server.expiry = asyncio.get_running_loop().call_later(
                    self.timers.transaction_s, self._servers.pop, key, None
                )
        if request.method == "INVITE" and 200 <= response.status < 300:
            self._retransmit_2xx(request, data, destination, on_no_ack or (lambda: None))

    def _retransmit_2xx(
        self, request: SipRequest, data: bytes, destination: Address, on_no_ack: Callable[[], None]
    ) -> None:
        now = asyncio.get_running_loop().time()
        pending = _Pending2xx(
            data=data,
            destination=destination,
            interval=self.timers.t1_s,
            planned=now,
            deadline=now + self.timers.transaction_s,
            on_no_ack=on_no_ack,
        )
        key = (request.call_id, request.cseq.number)
        self._pending_2xx[key] = pending
        self._plan_2xx(key, pending)

    def _plan_2xx(self, key: tuple[str, int], pending: _Pending2xx) -> None:
        pending.planned += pending.interval
        pending.handle = asyncio.get_running_loop().call_at(pending.planned, self._resend_2xx, key, pending)

    def _resend_2xx(self, key: tuple[str, int], pending: _Pending2xx) -> None:
        if pending.planned >= pending.deadline:
            self._pending_2xx.pop(key, None)
            _LOGGER.warning("SIP: no ACK for our 2xx to INVITE %s within %g s", key[0], self.timers.transaction_s)
            pending.on_no_ack()
            return
        self._send(pending.data, pending.destination)
        pending.interval = min(pending.interval * 2, self.timers.t2_s)
        self._plan_2xx(key, pending)

    # -- what arrives --------------------------------------------------------------------------------------
    def datagram_received(self, data: bytes, source: Address) -> None:
        if not same_endpoint(source, self._proxy):
            # An IMS UE takes SIP only from its P-CSCF (TS 24.229 §5.1.1.2): a stranger who reaches the
            # port must not ring the car in its callback window, nor name where its voice goes.
            self.rejected += 1
            _LOGGER.warning("SIP: dropped %d bytes from %s:%d, not the proxy", len(data), *source)
            return
        try:
            message = parse_message(data)
            if isinstance(message, SipResponse):
                self._response(message)
            else:
                self._request(message, source)
        except SipError as exc:
            self.rejected += 1
            _LOGGER.warning("SIP: refused a datagram from %s:%d: %s", *source, exc)
        except Exception:  # one bad message is one rejection, never the end of the receive path
            self.rejected += 1
            _LOGGER.exception("SIP: a datagram from %s:%d failed", *source)

    def _response(self, response: SipResponse) -> None:
        via = parse_via(response.headers.get_all("Via")[0])
        client = self._clients.get((via.branch or "", response.cseq.method.upper()))
        if client is not None:
            client.receive(response)
        elif response.cseq.method.upper() == "INVITE" and 200 <= response.status < 300:
            self._on_stray_2xx(response)
        else:
            self.rejected += 1
            _LOGGER.info("SIP: %d %s matches no transaction of ours", response.status, response.cseq.method)

    def _request(self, request: SipRequest, source: Address) -> None:
        via = _stamped(parse_via(request.headers.get_all("Via")[0]), source)
        vias = request.headers.get_all("Via")
        headers = SipHeaders((("Via", via.format()), *(("Via", v) for v in vias[1:]), *request.headers.without("Via")))
        request = SipRequest(method=request.method, uri=request.uri, headers=headers, body=request.body)
        if request.method == "ACK":
            pending = self._pending_2xx.pop((request.call_id, request.cseq.number), None)
            if pending is not None and pending.handle is not None:
                pending.handle.cancel()
            if self._servers.get(_server_key(request, via)) is None:  # the ACK of a non-2xx ends in its transaction
                self._on_request(request, source)
            return
        key = _server_key(request, via)
        server = self._servers.get(key)
        if server is not None:  # a retransmission: our last answer again, or nothing while we have none
            if server.last is not None and server.destination is not None:
                self._send(server.last, server.destination)
            return
        if len(self._servers) >= MAX_SERVER_TRANSACTIONS and not self._forget_oldest_answered():
            self._send(response_to(request, 503).encode(), _response_destination(via))
            _LOGGER.warning("SIP: %d open server transactions; %s refused with 503", len(self._servers), request.method)
            return
        self._servers[key] = _ServerTransaction()
        if request.method == "INVITE":
            self.respond(request, response_to(request, 100))
        self._on_request(request, source)

    def _forget_oldest_answered(self) -> bool:
        for key, server in self._servers.items():  # oldest first
            if server.expiry is not None:
                server.expiry.cancel()
                del self._servers[key]
                return True
        return False


def _client_key(request: SipRequest) -> tuple[str, str]:
    via = parse_via(request.headers.get_all("Via")[0])
    return (via.branch or "", request.method.upper())


def _server_key(request: SipRequest, via: Via) -> tuple[str, str, str]:
    """§17.2.3: branch, sent-by and method (an ACK matches its INVITE); without a branch, Call-ID and CSeq."""
    method = "INVITE" if request.method == "ACK" else request.method.upper()
    branch = via.branch or f"{request.call_id}/{request.cseq.number}"
    return (branch, format_host_port(via.host, via.port), method)


def _stamped(via: Via, source: Address) -> Via:
    """RFC 3261 §18.2.1 and RFC 3581 §4: where the request really came from, for the response to go back there."""
    if via.host != source[0]:
        via = via.with_param("received", source[0])
    if any(name == "rport" for name, _ in via.params):
        via = via.with_param("received", source[0]).with_param("rport", str(source[1]))
    return via


def _response_destination(via: Via) -> Address:
    """§18.2.2 with RFC 3581: the source address (received), and the source port when rport was asked for."""
    host = via.received or via.host
    port = via.rport or via.port or 5060
    return (host, port)


def _route_source(destination_ip: str) -> str:
    """The local address the kernel would send from towards `destination_ip` (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in destination_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((destination_ip, 9))
        return str(probe.getsockname()[0])
