"""The vehicle's UA giving up a call before the answer (CANCEL, RFC 3261 §9) and the PSAP refreshing a call
(re-INVITE, §14): what goes on the wire, and that neither tells the eCall service anything it would act on."""

from __future__ import annotations

from tcu.ecall.ng.ng_call import CallPhase
from tcu.sources.modem import EcallType
from tcu.sources.modem_client import ModemCallEnded
from telematics_wire.sip.dialog import parse_name_addr, parse_via
from telematics_wire.sip.ecall_body import SDP_CONTENT_TYPE
from telematics_wire.sip.ecall_invite import read_ecall_invite
from telematics_wire.sip.message import SipRequest, response_to
from telematics_wire.sip.sdp import AudioSession, build_sdp, parse_sdp
from tests.ecall.ng.psap_peer import PsapPeer, Script, psap_peer
from tests.ecall.ng.test_ng_modem import I, Vehicle, connected, vehicle


def sent(peer: PsapPeer, method: str) -> list[SipRequest]:
    return [request for request in peer.requests if request.method == method]


def ended(car: Vehicle) -> list[ModemCallEnded]:
    return [event for event in car.events if isinstance(event, ModemCallEnded)]


async def test_hanging_up_while_the_psap_rings_cancels_the_invite() -> None:
    async with psap_peer(Script(ring_only=True)) as peer, vehicle(peer) as car:
        await car.ng.dial(EcallType.AUTOMATIC)
        await car.wait(lambda: car.ng.call is not None and car.ng.call.provisional)
        await car.ng.hang_up()
        await peer.wait(lambda: bool(sent(peer, "CANCEL")) and bool(sent(peer, "ACK")))
        [invite], [cancel], [ack] = sent(peer, "INVITE"), sent(peer, "CANCEL"), sent(peer, "ACK")
        # §9.1: the INVITE's Request-URI, Call-ID, From, To and top Via (its branch); CSeq number, method CANCEL
        assert cancel.uri == invite.uri
        assert cancel.call_id == invite.call_id
        assert cancel.headers.get_all("Via")[0] == invite.headers.get_all("Via")[0]
        assert (cancel.headers.get("From"), cancel.headers.get("To")) == (
            invite.headers.get("From"),
            invite.headers.get("To"),
        )
        assert (cancel.cseq.number, cancel.cseq.method) == (1, "CANCEL")
        # §17.1.1.3: the 487 to the INVITE is acknowledged on the INVITE's branch, with the PSAP's To tag
        assert parse_via(ack.headers.get_all("Via")[0]).branch == parse_via(invite.headers.get_all("Via")[0]).branch
        assert parse_name_addr(ack.headers.require("To")).tag == peer.to_tag
        assert ended(car) == [], "a hang-up reports nothing, as ATH: the 487 is the answer we asked for"
        assert car.indications() == []
        [report] = car.reports
        assert (report["connected"], report["reason"]) == (False, "hung up in the vehicle")


async def test_a_hang_up_before_any_answer_waits_for_a_provisional_to_cancel() -> None:
    script = Script(silent=True)
    async with psap_peer(script) as peer, vehicle(peer) as car:
        await car.ng.dial(EcallType.AUTOMATIC)
        await peer.wait(lambda: bool(sent(peer, "INVITE")))
        await car.ng.hang_up()
        invite = sent(peer, "INVITE")[0]
        peer.invite = invite
        script.silent, script.ring_only = False, True
        assert sent(peer, "CANCEL") == [], "§9.1: no CANCEL before a provisional response"
        peer.send(response_to(invite, 180, to_tag=peer.to_tag))
        await peer.wait(lambda: bool(sent(peer, "ACK")))
        assert len(sent(peer, "CANCEL")) == 1
        assert ended(car) == []


async def test_a_200_ok_after_the_hang_up_is_acked_and_ended_with_bye() -> None:
    """The PSAP answered as we gave up (the CANCEL crossed the 200 OK): the call is ended properly, never
    taken as connected."""
    async with psap_peer(Script(silent=True)) as peer, vehicle(peer) as car:
        await car.ng.dial(EcallType.AUTOMATIC)
        await peer.wait(lambda: bool(sent(peer, "INVITE")))
        await car.ng.hang_up()
        invite = sent(peer, "INVITE")[0]
        peer.invite, peer.ecall = invite, read_ecall_invite(invite)
        peer.send(peer.ok(invite))
        await peer.wait(lambda: bool(sent(peer, "BYE")))
        [ack], [bye] = sent(peer, "ACK"), sent(peer, "BYE")
        assert ack.call_id == bye.call_id == invite.call_id
        assert parse_name_addr(bye.headers.require("To")).tag == peer.to_tag, "in the dialog the 2xx made"
        assert I.CONNECTED not in car.indications()
        assert ended(car) == []


async def test_a_psap_re_invite_is_answered_with_our_sdp_and_the_call_goes_on() -> None:
    async with psap_peer() as peer, vehicle(peer) as car:
        await connected(car)
        await car.wait(lambda: I.AL_ACK in car.indications())
        events_before = list(car.events)
        sdp = build_sdp(AudioSession(address="127.0.0.1", port=peer.rtp_port))
        reinvite = peer.in_dialog("INVITE", headers=[("Content-Type", SDP_CONTENT_TYPE)], body=sdp)
        peer.send(reinvite)
        await peer.wait(lambda: any(r.cseq.method == "INVITE" and r.status == 200 for r in peer.responses))
        ok = next(r for r in peer.responses if r.cseq.method == "INVITE" and r.status == 200)
        rtp = car.ng.rtp
        assert rtp is not None
        assert ok.cseq.number == reinvite.cseq.number
        assert parse_sdp(ok.body).port == rtp.port, "our SDP again: the same voice stream"
        assert ok.headers.get_all("Contact"), "a 2xx to an INVITE names where the dialog's requests go"
        ack = peer.in_dialog("ACK")
        peer.send(SipRequest(method="ACK", uri=ack.uri, headers=ack.headers.replaced("CSeq", f"{ok.cseq.number} ACK")))
        call = car.ng.call
        assert call is not None
        assert call.phase is CallPhase.CONFIRMED
        assert car.events == events_before, "a re-INVITE is no event for the eCall service"
        assert rtp.active
        peer.bye()
        await car.wait(lambda: I.CLEARED_DOWN in car.indications())


async def test_a_re_invite_for_a_call_that_ended_gets_481() -> None:
    async with psap_peer() as peer, vehicle(peer) as car:
        await connected(car)
        peer.bye()
        await car.wait(lambda: I.CLEARED_DOWN in car.indications())
        stale = peer.in_dialog("INVITE")
        peer.send(stale)
        await peer.wait(lambda: any(r.cseq.number == stale.cseq.number and r.status >= 200 for r in peer.responses))
        assert [r.status for r in peer.responses if r.cseq.number == stale.cseq.number][-1] == 481
        assert car.indications().count(I.CONNECTED) == 1
