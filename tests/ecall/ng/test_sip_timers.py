"""RFC 3261 retransmission timers of the vehicle's UA, on a loop whose clock runs 200 times faster (the
timers read only the loop's clock), and what a hostile or broken peer cannot do to a call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tcu.ecall.ng.sip_transactions import InviteClient, NonInviteClient, SipTimers, TransactionState
from tcu.ecall.ng.sip_transport import MAX_SERVER_TRANSACTIONS
from tcu.sources.modem import EcallIndication, EcallType
from tcu.sources.modem_client import ModemCallEnded
from tcu.virtual_time import VirtualTime, VirtualTimeLoop
from telematics_wire.sip.dialog import new_branch
from telematics_wire.sip.ecall_body import build_control_request_msd
from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse, parse_message, response_to
from tests.ecall.ng.psap_peer import PsapPeer, Script, psap_peer
from tests.ecall.ng.test_ng_modem import connected, sample_msd, vehicle

I = EcallIndication  # noqa: E741
TIMERS = SipTimers()
HANG_GUARD_S = 30.0  # only against a hang: what the tests assert never depends on how fast this is


def on_fast_loop(test: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(VirtualTime.starting_now(200.0))) as runner:
        runner.run(test())


def invites(peer: PsapPeer) -> list[SipRequest]:
    return [request for request in peer.requests if request.method == "INVITE"]


@dataclass
class FakeTimer:
    when: float
    callback: Callable[..., object]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The transactions' timers on a clock that moves only when the test says (no real time at all)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        self._timers.append(FakeTimer(when=when, callback=callback, args=args))
        return self._timers[-1]

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        return self.call_at(self.now + delay, callback, *args)

    def advance_to(self, until: float) -> None:
        while due := sorted((t for t in self._timers if t.when <= until and not t.cancelled), key=lambda t: t.when):
            self._timers.remove(due[0])
            self.now = due[0].when
            due[0].callback(*due[0].args)
        self.now = until


def invite() -> SipRequest:
    fields = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={new_branch()};rport"),
        ("From", "<sip:car@127.0.0.1>;tag=v"),
        ("To", "<urn:service:sos.ecall.automatic>"),
        ("Call-ID", "c1"),
        ("CSeq", "1 INVITE"),
    ]
    return SipRequest(method="INVITE", uri="urn:service:sos.ecall.automatic", headers=SipHeaders(fields))


def test_timer_a_doubles_from_t1_and_timer_b_ends_the_invite_at_64_t1() -> None:
    loop, sent, outcome = FakeLoop(), list[float](), list[SipResponse | None]()
    client = InviteClient(
        invite(), send=lambda _: sent.append(loop.now), timers=TIMERS, on_response=outcome.append, loop=loop
    )
    client.start()
    loop.advance_to(100.0)
    assert sent == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert outcome == [None], "Timer B at 32 s: no response at all"
    assert client.state is TransactionState.TERMINATED


def test_a_provisional_response_stops_timers_a_and_b() -> None:
    loop, sent, outcome = FakeLoop(), list[float](), list[SipResponse | None]()
    request = invite()
    client = InviteClient(
        request, send=lambda _: sent.append(loop.now), timers=TIMERS, on_response=outcome.append, loop=loop
    )
    client.start()
    loop.advance_to(1.0)
    client.receive(response_to(request, 100))
    loop.advance_to(600.0)
    assert sent == [0.0, 0.5]
    assert [r.status for r in outcome if r is not None] == [100]
    assert client.state is TransactionState.PROCEEDING, "only the TU's own bound (CANCEL) ends it now"


def test_a_non_2xx_final_is_acked_on_its_branch_and_its_retransmission_acked_again() -> None:
    loop, sent, outcome = FakeLoop(), list[bytes](), list[SipResponse | None]()
    request = invite()
    client = InviteClient(request, send=sent.append, timers=TIMERS, on_response=outcome.append, loop=loop)
    client.start()
    busy = response_to(request, 486, to_tag="psap")
    client.receive(busy)
    client.receive(busy)
    acks = [parse_message(data) for data in sent[1:]]
    assert [a.method for a in acks if isinstance(a, SipRequest)] == ["ACK", "ACK"]
    assert acks[0].headers.get("Via") == request.headers.get("Via")
    assert "tag=psap" in acks[0].headers.require("To")
    assert [r.status for r in outcome if r is not None] == [486], "told once"
    loop.advance_to(40.0)
    assert client.state is TransactionState.TERMINATED, "Timer D over"


def test_timer_e_doubles_to_t2_and_timer_f_ends_a_non_invite_at_64_t1() -> None:
    loop, sent, outcome = FakeLoop(), list[float](), list[SipResponse | None]()
    info = SipRequest(method="INFO", uri="sip:psap@127.0.0.1", headers=invite().headers.replaced("CSeq", "2 INFO"))
    client = NonInviteClient(
        info, send=lambda _: sent.append(loop.now), timers=TIMERS, on_response=outcome.append, loop=loop
    )
    client.start()
    loop.advance_to(100.0)
    assert sent == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert outcome == [None]


def test_the_ua_retransmits_an_unanswered_invite_and_stops_at_the_answer() -> None:
    async def run() -> None:
        async with psap_peer(Script(drop_invites=2)) as peer, vehicle(peer) as car:
            await connected(car)
            sent = len(invites(peer))
            assert sent >= 3, "two retransmissions went unanswered, a later one got the 200 OK"
            await asyncio.sleep(10.0)
            assert len(invites(peer)) == sent, "none after the answer"
            assert len({invite.headers.get("Via") for invite in invites(peer)}) == 1, "the same branch each time"

    on_fast_loop(run)


def test_an_unanswered_invite_fails_the_dial_after_timer_b() -> None:
    async def run() -> None:
        async with psap_peer(Script(silent=True)) as peer, vehicle(peer) as car:
            await car.ng.dial(EcallType.AUTOMATIC)
            await car.wait(lambda: any(isinstance(e, ModemCallEnded) for e in car.events), within=60.0)
            await peer.wait(lambda: len(invites(peer)) == 7)  # the last one may still be on its way
            await asyncio.sleep(30.0)
            assert len(invites(peer)) == 7, "seven sends: at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s"
            [ended] = [e for e in car.events if isinstance(e, ModemCallEnded)]
            assert "Timer B" in ended.reason

    on_fast_loop(run)


def test_an_unanswered_info_with_a_fresh_msd_reports_msd_failed() -> None:
    async def run() -> None:
        script = Script(ack_in_ok=None)
        async with psap_peer(script) as peer, vehicle(peer) as car:
            await connected(car)
            await car.ng.send_msd(sample_msd(1))  # the INVITE's
            script.silent = True  # the PSAP stops answering
            await car.ng.send_msd(sample_msd(2))
            await car.wait(lambda: I.MSD_FAILED in car.indications(), within=60.0)
            await peer.wait(lambda: peer.methods().count("INFO") == 11)
            await asyncio.sleep(30.0)
            assert peer.methods().count("INFO") == 11

    on_fast_loop(run)


def test_the_psap_retransmitting_its_request_gets_the_same_answer_and_one_event() -> None:
    async def run() -> None:
        async with psap_peer(Script(ack_in_ok=None)) as peer, vehicle(peer) as car:
            await connected(car)
            request = peer.info(build_control_request_msd())
            peer.send(request)  # the same INFO again: its 200 OK got lost
            await peer.wait(lambda: sum(r.cseq.method == "INFO" for r in peer.responses) == 2)
            bye = peer.bye()
            peer.send(bye)
            await peer.wait(lambda: sum(r.cseq.method == "BYE" for r in peer.responses) == 2)
            assert car.indications().count(I.SEND_MSD) == 2, "the INVITE's and the one request, not three"
            assert car.indications().count(I.CLEARED_DOWN) == 1

    on_fast_loop(run)


async def test_garbage_and_forged_requests_never_touch_the_call() -> None:
    """Each datagram goes straight into the UA's receive path (`datagram_received`), as the socket hands it
    over: the kernel's delivery under load is not what is tested (nor can asyncio send an empty datagram),
    so the count is exact. The forged BYE's 481 still travels back over UDP."""
    async with psap_peer(Script(ack_in_ok=None)) as peer, vehicle(peer) as car:
        await connected(car)
        sip = car.ng.sip
        assert sip is not None
        junk = (
            b"",
            b"\x00" * 100,
            b"INVITE sip:x SIP/2.0\r\n\r\n",
            b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n",
            b"A" * 65_507,
        )
        for datagram in junk:
            sip.datagram_received(datagram, peer.address)
        assert sip.rejected == len(junk)
        forged = peer.in_dialog("BYE")
        forged = SipRequest(
            method="BYE", uri=forged.uri, headers=forged.headers.replaced("From", "<sip:psap@evil>;tag=guessed")
        )
        sip.datagram_received(forged.encode(), peer.address)
        await peer.wait(lambda: any(r.status == 481 for r in peer.responses), within=HANG_GUARD_S)
        assert sip.rejected == len(junk), "a parsed request for no dialog is answered, not rejected"
        assert I.CLEARED_DOWN not in car.indications(), "a BYE with the wrong tag clears nothing"
        peer.bye()
        await car.wait(lambda: I.CLEARED_DOWN in car.indications(), within=HANG_GUARD_S)


async def test_a_flood_of_new_requests_is_bounded_and_never_keeps_the_bye_out() -> None:
    """The flood enters the receive path directly (no kernel buffer between), so every request is handled
    and every answer sent before the first is read: the bound, not the machine's load, decides."""
    async with psap_peer() as peer, vehicle(peer) as car:
        await connected(car)
        sip = car.ng.sip
        assert sip is not None
        flood = MAX_SERVER_TRANSACTIONS + 5
        for index in range(flood):
            fields = [
                ("Via", f"SIP/2.0/UDP {peer.address[0]}:{peer.address[1]};branch={new_branch()}"),
                ("From", "<sip:x@y>;tag=a"),
                ("To", "<sip:ivs@z>"),
                ("Call-ID", f"flood{index}"),
                ("CSeq", "1 OPTIONS"),
            ]
            request = SipRequest(method="OPTIONS", uri="sip:ivs@z", headers=SipHeaders(fields))
            sip.datagram_received(request.encode(), peer.address)
            assert len(sip._servers) <= MAX_SERVER_TRANSACTIONS
        answered = lambda: [r.status for r in peer.responses if r.cseq.method == "OPTIONS"]  # noqa: E731
        await peer.wait(lambda: len(answered()) == flood, within=HANG_GUARD_S)
        assert set(answered()) == {200}, "the oldest answered transactions make room"
        peer.bye()  # the flood does not keep the PSAP's BYE out
        await car.wait(lambda: I.CLEARED_DOWN in car.indications(), within=HANG_GUARD_S)
