"""The NG PSAP's SIP socket: one UDP endpoint, the transactions RFC 3261 §17 asks of it, nothing more.

- Every datagram goes through the total decoder (`telematics_wire.sip.message.parse_message`); one that
  does not parse is logged and dropped (there is nothing trustworthy to answer), never an exception.
- Requests go to the PSAP's handler with the address they came from; responses are sent back there
  (the proxy on the path, or the vehicle: what `rport` asks for, RFC 3581) and kept per branch, so a
  retransmitted request is answered with the same response instead of being handled twice.
- `request()` is a client transaction over UDP: sent again after T1, 2·T1, ... (at most T2 apart) until
  a response, given up after 64·T1 (Timers A/B, E/F); for an INVITE a provisional response stops the
  retransmissions, and the final one is awaited as long.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import parse_via
from telematics_wire.sip.message import SipRequest, SipResponse, parse_message

_LOGGER = logging.getLogger(__name__)

T1_S = 0.5
T2_S = 4.0
TIMEOUT_S = 64 * T1_S
_ANSWERED_KEPT = 512  # responses kept for retransmitted requests: a few hundred calls' worth

Address = tuple[str, int]


def branch_of(message: SipRequest | SipResponse) -> str:
    """The top Via's branch; SipError when it has none (no transaction can be matched without one)."""
    branch = parse_via(message.headers.get_all("Via")[0]).branch
    if not branch:
        raise SipError("top Via has no branch")
    return branch


class SipEndpoint(asyncio.DatagramProtocol):
    def __init__(self, on_request: Callable[[SipRequest, Address], None], *, name: str = "PSAP") -> None:
        self._on_request = on_request
        self._name = name
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[str, asyncio.Queue[SipResponse]] = {}  # client transactions by branch
        self._answered: OrderedDict[tuple[str, str], tuple[bytes, Address]] = OrderedDict()
        self.dropped = 0  # datagrams that were no SIP message we could use

    async def open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def address(self) -> Address:
        if self._transport is None:
            raise RuntimeError(f"the {self._name}'s SIP socket is not open")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    # -- asyncio.DatagramProtocol ------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        source = (str(addr[0]), int(str(addr[1])))
        try:
            message = parse_message(data)
            branch = branch_of(message)
        except SipError as exc:
            self.dropped += 1
            _LOGGER.warning("%s: dropped a datagram of %d bytes from %s:%d: %s", self._name, len(data), *source, exc)
            return
        if isinstance(message, SipResponse):
            self._response(message, branch, source)
        elif message.method == "ACK" and (branch, "INVITE") in self._answered:
            return  # the ACK of a non-2xx final answer shares the INVITE's branch (§17.1.1.3): it ends there
        elif (answered := self._answered.get((branch, message.method))) is not None:
            self._send_bytes(*answered)  # a retransmission: the same answer again, not a second call
        else:
            self._on_request(message, source)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: the peer is gone; timers tell
        _LOGGER.debug("%s SIP socket: %s", self._name, exc)

    # -- sending -----------------------------------------------------------------------------------------
    def respond(self, request: SipRequest, response: SipResponse, to: Address) -> None:
        """Send `response` to `request` and keep it for the request's retransmissions (not for ACK: none)."""
        data = response.encode()
        if request.method != "ACK":
            key = (branch_of(request), request.method)
            self._answered[key] = (data, to)
            self._answered.move_to_end(key)
            while len(self._answered) > _ANSWERED_KEPT:
                self._answered.popitem(last=False)
        self._send_bytes(data, to)

    async def resend_until(
        self, done: asyncio.Event, response: SipResponse, to: Address, *, while_: Callable[[], bool]
    ) -> bool:
        """Send a 2xx to an INVITE again until `done` (its ACK came): T1, doubling up to T2, for 64·T1
        (§13.3.1.4). False when no ACK came in time; True also once `while_()` turns false (call ended)."""
        interval = T1_S
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT_S
        while while_() and loop.time() < deadline:
            try:
                async with asyncio.timeout(interval):
                    await done.wait()
            except TimeoutError:
                self.send(response, to)
                interval = min(interval * 2, T2_S)
            else:
                return True
        return done.is_set() or not while_()

    def send(self, message: SipRequest | SipResponse, to: Address) -> None:
        """Send once, no transaction (an ACK, a retransmitted 2xx)."""
        self._send_bytes(message.encode(), to)

    async def request(
        self, request: SipRequest, to: Address, *, on_provisional: Callable[[SipResponse], None] | None = None
    ) -> SipResponse:
        """The final response to `request`; TimeoutError after 64·T1 with none."""
        branch = branch_of(request)
        responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self._waiting[branch] = responses
        data = request.encode()
        interval = T1_S
        retransmit = True
        try:
            async with asyncio.timeout(TIMEOUT_S):
                self._send_bytes(data, to)
                while True:
                    try:
                        async with asyncio.timeout(interval if retransmit else None):
                            response = await responses.get()
                    except TimeoutError:
                        self._send_bytes(data, to)
                        interval = min(interval * 2, T2_S if request.method != "INVITE" else TIMEOUT_S)
                        continue
                    if response.status >= 200:
                        return response
                    retransmit = request.method != "INVITE"  # §17.1.1.2: a 1xx ends INVITE retransmissions
                    if on_provisional is not None:
                        on_provisional(response)
        except TimeoutError:
            raise TimeoutError(f"no final response to {request.method} within {TIMEOUT_S:g} s") from None
        finally:
            self._waiting.pop(branch, None)

    def _response(self, response: SipResponse, branch: str, source: Address) -> None:
        queue = self._waiting.get(branch)
        if queue is None:
            # A 2xx retransmitted after we ACKed it lands here too: our one ACK is not lost on loopback.
            _LOGGER.info("%s: response %d from %s:%d for no transaction of ours", self._name, response.status, *source)
            return
        queue.put_nowait(response)

    def _send_bytes(self, data: bytes, to: Address) -> None:
        if self._transport is not None:
            self._transport.sendto(data, to)
