"""SIP client transactions over UDP (RFC 3261 §17.1), with their timers on the event loop's clock.

`InviteClient` (§17.1.1): the INVITE is retransmitted on Timer A (T1, doubling) until any response;
Timer B (64·T1) gives up when nothing at all came back. A provisional response stops both: from then on
only the TU's own bound (the eCall's dial timeout, then CANCEL) ends the wait. A final 300-699 response is
acknowledged here with an ACK on the same branch, and retransmissions of it are answered with that ACK
again during Timer D (32 s); a 2xx ends the transaction at once — its ACK is the dialog's business (§13.2.2.4).

`NonInviteClient` (§17.1.2): INFO, BYE and CANCEL are retransmitted on Timer E (T1 doubling to T2; T2
once a provisional response came) until a final response; Timer F (64·T1) gives up. Timer K (T4)
absorbs retransmitted finals.

Each reports to its owner through one callback: a response, or None when Timer B/F fired. Timers are
`loop.call_at` handles planned from the previous plan, not from when a late callback ran, so a bench on
virtual time or a loaded loop sends the same retransmissions at the same moments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse

_LOGGER = logging.getLogger(__name__)

Send = Callable[[bytes], None]
ResponseCallback = Callable[[SipResponse | None], None]  # None: no final response in time (Timer B or F)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class TimerLoop(Protocol):
    """What the transactions need of an event loop: its clock and its timers (a test passes a fake)."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...
    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...


TIMER_D_S = 32.0  # §17.1.1.2: at least 32 s on UDP, to answer retransmitted finals with the ACK again


@dataclass(frozen=True, slots=True, kw_only=True)
class SipTimers:
    """RFC 3261 §17.1.1.1 values; a bench on virtual time keeps these, a unit test may shorten them."""

    t1_s: float = 0.5  # round-trip estimate
    t2_s: float = 4.0  # the longest retransmit interval for non-INVITE requests and INVITE responses
    t4_s: float = 5.0  # how long a message may stay in the network

    def __post_init__(self) -> None:
        if not 0 < self.t1_s <= self.t2_s:
            raise ValueError(f"SIP timers need 0 < T1 <= T2, got T1={self.t1_s}, T2={self.t2_s}")
        if self.t4_s <= 0:
            raise ValueError(f"SIP timer T4 must be > 0, got {self.t4_s}")

    @property
    def transaction_s(self) -> float:
        """64·T1: Timers B, F, H and J, and how long a 2xx is retransmitted waiting for its ACK."""
        return 64 * self.t1_s


class TransactionState(StrEnum):
    CALLING = "calling"  # INVITE only: nothing heard yet
    TRYING = "trying"  # non-INVITE: nothing heard yet
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class _ClientTransaction:
    """What both client transactions share: a request on the wire, retransmitted until a response."""

    def __init__(
        self,
        request: SipRequest,
        *,
        send: Send,
        timers: SipTimers,
        on_response: ResponseCallback,
        loop: TimerLoop | None = None,
    ) -> None:
        self.request = request
        self._data = request.encode()
        self._send = send
        self._timers = timers
        self._on_response = on_response
        self._loop: TimerLoop = loop or asyncio.get_running_loop()
        self._retransmit: Cancellable | None = None
        self._give_up: Cancellable | None = None
        self._linger: Cancellable | None = None
        self._interval = timers.t1_s
        self._planned = self._loop.time()
        self.state = self._INITIAL
        self.retransmissions = 0
        self.on_terminated: Callable[[], None] = lambda: None

    _INITIAL = TransactionState.TRYING

    def start(self) -> None:
        self._send(self._data)
        self._plan_retransmit()
        self._give_up = self._loop.call_at(self._planned + self._timers.transaction_s, self._timed_out)

    def _plan_retransmit(self) -> None:
        self._planned += self._interval
        self._retransmit = self._loop.call_at(self._planned, self._retransmit_now)

    def _retransmit_now(self) -> None:
        self.retransmissions += 1
        self._send(self._data)
        self._interval = self._next_interval()
        self._plan_retransmit()

    def _next_interval(self) -> float:
        raise NotImplementedError

    def _timed_out(self) -> None:
        _LOGGER.info("SIP %s %s: no response within %g s", self.request.method, self.request.uri, self._give_up_s())
        self._terminate()
        self._on_response(None)

    def _give_up_s(self) -> float:
        return self._timers.transaction_s

    def _stop_timers(self) -> None:
        for handle in (self._retransmit, self._give_up):
            if handle is not None:
                handle.cancel()
        self._retransmit = self._give_up = None

    def _linger_then_end(self, seconds: float) -> None:
        self._stop_timers()
        self._linger = self._loop.call_later(seconds, self._terminate)

    def _terminate(self) -> None:
        self._stop_timers()
        if self._linger is not None:
            self._linger.cancel()
        self.state = TransactionState.TERMINATED
        self.on_terminated()

    def close(self) -> None:
        """The transport is closing: stop every timer, report nothing."""
        self._terminate()


class InviteClient(_ClientTransaction):
    _INITIAL = TransactionState.CALLING
    _ack: bytes | None = None

    def _next_interval(self) -> float:
        return self._interval * 2  # Timer A doubles without a cap (§17.1.1.2)

    def receive(self, response: SipResponse) -> None:
        state = self.state
        if state is TransactionState.TERMINATED:
            return
        if state is TransactionState.COMPLETED:
            if response.status >= 300 and self._ack is not None:
                self._send(self._ack)  # the final came again: our ACK was lost
            return
        if response.status < 200:
            if state is TransactionState.CALLING:
                self._stop_timers()  # §17.1.1.2: a provisional response stops Timers A and B
                self.state = TransactionState.PROCEEDING
            self._on_response(response)
        elif response.status < 300:
            self._terminate()  # the 2xx and its retransmissions belong to the dialog (§17.1.1.2)
            self._on_response(response)
        else:
            self._ack = non_2xx_ack(self.request, response).encode()
            self._send(self._ack)
            self.state = TransactionState.COMPLETED
            self._linger_then_end(TIMER_D_S)
            self._on_response(response)


class NonInviteClient(_ClientTransaction):
    def _next_interval(self) -> float:
        if self.state is TransactionState.PROCEEDING:
            return self._timers.t2_s
        return min(self._interval * 2, self._timers.t2_s)  # Timer E

    def receive(self, response: SipResponse) -> None:
        if self.state in (TransactionState.COMPLETED, TransactionState.TERMINATED):
            return  # a retransmitted final: absorbed (Timer K)
        if response.status < 200:
            self.state = TransactionState.PROCEEDING
            return
        self.state = TransactionState.COMPLETED
        self._linger_then_end(self._timers.t4_s)  # Timer K
        self._on_response(response)


def non_2xx_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client transaction sends for a 300-699 final response (§17.1.1.3): the INVITE's Request-URI,
    top Via, Call-ID, From and Route, the response's To (with its tag), CSeq number with method ACK."""
    headers = invite.headers
    fields: list[tuple[str, str]] = [("Via", headers.get_all("Via")[0])]
    fields.extend(("Route", route) for route in headers.get_all("Route"))
    fields += [
        ("Max-Forwards", "70"),
        ("From", headers.require("From")),
        ("To", response.headers.require("To")),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} ACK"),
    ]
    return SipRequest(method="ACK", uri=invite.uri, headers=SipHeaders(fields))
