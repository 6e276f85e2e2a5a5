"""Whom the vehicle's NG eCall user agent listens to: SIP only from its proxy (an IMS UE takes SIP only from
its P-CSCF), voice counted only from the SDP address its dialog agreed and with one SSRC. A stranger who
reaches the ports can neither ring the car in its callback window, nor steer its voice, nor pad its counts."""

from __future__ import annotations

from tcu.sources.modem import EcallIndication
from tcu.sources.modem_client import ModemRing
from telematics_wire.rtp import RtpSender
from tests.ecall.ng.psap_peer import psap_peer
from tests.ecall.ng.test_ng_modem import connected, vehicle


async def test_a_callback_invite_from_anyone_but_the_proxy_is_dropped_and_voice_goes_to_the_proxys_sdp() -> None:
    async with psap_peer() as proxy, psap_peer() as stranger, vehicle(proxy) as car:
        await connected(car)
        proxy.bye()
        await car.wait(lambda: EcallIndication.CLEARED_DOWN in car.indications())  # the callback window
        sip = car.ng.sip
        assert sip is not None
        rejected = sip.rejected
        stranger.call_back(car.contact())  # names the stranger's own RTP port in its SDP
        proxy.call_back(car.contact())  # arrives after the stranger's: the car has handled that one by then
        await car.wait(lambda: any(isinstance(event, ModemRing) for event in car.events))
        await car.ng.answer()
        rtp = car.ng.rtp
        assert rtp is not None
        await car.wait(lambda: proxy.rtp_in >= 3)
        assert sum(isinstance(event, ModemRing) for event in car.events) == 1
        assert sip.rejected == rejected + 1
        assert stranger.responses == [], "the stranger heard nothing back"
        assert stranger.rtp_in == 0, "no voice to the stranger's SDP"


async def test_rtp_from_another_address_or_another_ssrc_is_not_counted_as_the_calls_voice() -> None:
    async with psap_peer() as psap, psap_peer() as stranger, vehicle(psap) as car:
        await connected(car)
        rtp = car.ng.rtp
        assert rtp is not None
        await car.wait(lambda: rtp.counts.received >= 1)  # the PSAP's echo: the stream's SSRC is learnt
        port = rtp.port
        forged = RtpSender()
        assert stranger._rtp is not None
        assert stranger._rtp.transport is not None
        assert psap._rtp is not None
        assert psap._rtp.transport is not None
        for _ in range(5):  # from an address no SDP named
            stranger._rtp.transport.sendto(forged.next(b"\xff" * 160), ("127.0.0.1", port))
        psap._rtp.transport.sendto(forged.next(b"\xff" * 160), ("127.0.0.1", port))  # the right address, not its SSRC
        await car.wait(lambda: rtp.counts.rejected >= 6)
        assert rtp.counts.rejected == 6
        assert stranger.rtp_in == 0
