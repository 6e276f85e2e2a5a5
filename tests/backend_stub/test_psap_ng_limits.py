"""The NG PSAP under floods and strays: ended calls are kept up to a bound and dialogs found by Call-ID, an
INVITE the endpoint forgot it answered is not a second call, voice counts only the SDP's address and
SSRC, and a failing job of the PSAP's is logged when it fails."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from backend_stub import psap_ng, psap_sip_endpoint
from backend_stub.psap import PsapBehaviour
from backend_stub.psap_ng import PsapNg
from telematics_wire.sip.dialog import new_branch, new_call_id, new_tag
from telematics_wire.sip.message import SipHeaders, SipRequest
from telematics_wire.sip.sdp import parse_sdp
from tests.backend_stub.sip_vehicle import SipVehicle

NO_VOICE = PsapBehaviour(voice_s=None)


async def hang_up(vehicle: SipVehicle) -> int:
    vehicle.send(vehicle.in_dialog("BYE", 2), vehicle.source or ("127.0.0.1", 0))
    return (await vehicle.receive_response()).status


async def test_an_invite_and_bye_flood_keeps_only_the_newest_ended_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psap_ng, "ENDED_CALLS_KEPT", 3)
    async with PsapNg(behaviour=NO_VOICE) as psap, SipVehicle() as vehicle:
        first_bye = None
        for _ in range(5):
            vehicle.call_id, vehicle.tag = new_call_id("127.0.0.1"), new_tag()
            await vehicle.call(psap.address)
            assert await hang_up(vehicle) == 200
            first_bye = first_bye or vehicle.in_dialog("BYE", 3)
        assert [call.id for call in psap.calls] == [3, 4, 5]
        assert all(not call.active for call in psap.calls)
        assert len(psap.msds) == 3
        assert first_bye is not None
        vehicle.send(first_bye, psap.address)  # the first call's dialog is forgotten with it
        assert (await vehicle.receive_response()).status == 481


async def test_an_invite_sent_again_after_its_answer_was_pushed_out_is_no_second_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(psap_sip_endpoint, "_ANSWERED_KEPT", 2)
    async with PsapNg(behaviour=NO_VOICE) as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        for number in range(3):  # OPTIONS push the INVITE's answer out of the endpoint's memory
            fields = [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{vehicle.port};branch={new_branch()}"),
                ("Max-Forwards", "70"),
                ("From", f"<{vehicle.contact}>;tag={new_tag()}"),
                ("To", "<sip:psap@127.0.0.1>"),
                ("Call-ID", new_call_id("127.0.0.1")),
                ("CSeq", f"{number + 1} OPTIONS"),
            ]
            vehicle.send(
                SipRequest(method="OPTIONS", uri="sip:psap@127.0.0.1", headers=SipHeaders(fields)), psap.address
            )
            assert (await vehicle.receive_response()).status == 200
        assert vehicle.invite is not None
        vehicle.send(vehicle.invite, psap.address)  # the same INVITE, same branch, again
        assert (await vehicle.receive_response()).status == 100
        assert len(psap.calls) == 1
        assert psap.call().active


async def test_voice_counts_only_the_sdps_address_and_the_streams_ssrc() -> None:
    loop = asyncio.get_running_loop()
    async with PsapNg(behaviour=NO_VOICE) as psap, SipVehicle() as vehicle:
        ours, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        stray, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        try:
            ok = await vehicle.call(psap.address, vehicle.build_invite(rtp_port=ours.get_extra_info("sockname")[1]))
            answer = next(part for part in ok.body.split(b"--") if b"application/sdp" in part)
            psap_rtp = ("127.0.0.1", parse_sdp(answer.split(b"\r\n\r\n", 1)[1]).port)

            def rtp(sequence: int, ssrc: int) -> bytes:
                return struct.pack("!BBHII", 0x80, 0, sequence, sequence * 160, ssrc) + bytes(160)

            for sequence in range(3):
                ours.sendto(rtp(sequence, 7), psap_rtp)
                stray.sendto(rtp(sequence, 7), psap_rtp)  # not the address the vehicle's SDP named
            ours.sendto(rtp(3, 8), psap_rtp)  # the right address, another stream
            call = psap.call()
            assert call.voice is not None
            voice = call.voice
            await psap.wait_for(lambda: voice.received + voice.rejected == 7)
            assert (voice.received, voice.rejected) == (3, 4)
        finally:
            ours.close()
            stray.close()


async def test_a_failing_job_of_the_psaps_is_logged_when_it_fails(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("the answer could not be built")

    async with PsapNg(behaviour=NO_VOICE) as psap:
        with caplog.at_level(logging.ERROR, logger="backend_stub.psap_ng"):
            psap._own(broken(), "psap-ng-broken")
            await asyncio.gather(*psap._tasks, return_exceptions=True)
        assert "psap-ng-broken failed" in caplog.text
        assert "the answer could not be built" in caplog.text
