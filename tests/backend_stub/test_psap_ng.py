"""The NG PSAP (backend_stub.psap_ng): an RFC 8147 eCall answered, acked, asked again, called back, cleared
down, archived beside the circuit-switched MSDs — and every hostile datagram costs one answer, never the PSAP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.psap import PsapBehaviour, PsapStub, read_psap_msds
from backend_stub.psap_ng import PsapNg
from hil.layout import BenchLayout
from hil.sip_peers import free_udp_port
from telematics_wire.msd import decode
from telematics_wire.sip.ecall_body import (
    INFO_PACKAGE,
    URN_TEST,
    ControlAck,
    ControlRequest,
    build_control_ack,
    msd_call_info,
)
from telematics_wire.sip.ecall_invite import info_body, msd_part, read_control
from telematics_wire.sip.message import SipRequest
from telematics_wire.sip.multipart import BodyPart, build_multipart
from telematics_wire.sip.sdp import AudioSession, build_sdp, parse_sdp
from tests.backend_stub.psap_caller import MSD, emergency_call, send_msd
from tests.backend_stub.sip_vehicle import LATITUDE, LONGITUDE, SipVehicle
from tests.conftest import VIN, running_task

NO_VOICE = PsapBehaviour(voice_s=None)


@contextlib.asynccontextmanager
async def ng_psap(behaviour: PsapBehaviour = NO_VOICE, database: Path | None = None) -> AsyncIterator[PsapNg]:
    async with PsapNg(behaviour=behaviour, database=database) as psap:
        yield psap


async def test_an_ecall_is_answered_with_the_msd_acknowledged_and_decoded_bit_for_bit() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        vehicle.send(vehicle.build_invite(), psap.address)
        trying = await vehicle.receive_response()
        assert trying.status == 100
        ok = await vehicle.receive_response()
        assert ok.status == 200
        ack = read_control(ok)
        assert isinstance(ack, ControlAck)
        assert ack.received
        assert vehicle.build_invite().headers.get("Call-Info") == msd_call_info(ack.ref).format()
        assert parse_sdp(ok.body.split(b"\r\n\r\n", 2)[1].split(b"\r\n--", 1)[0]).port > 0
        received = await psap.wait_for_msd()
        assert received.raw == MSD
        assert received.msd == decode(MSD)
        assert received.msd is not None
        assert received.msd.vin == VIN
        call = psap.call()
        assert (call.kind, call.urn, call.callback) == ("automatic", "urn:service:sos.ecall.automatic", vehicle.contact)
        assert call.location is not None
        assert (call.location.latitude, call.location.longitude) == (LATITUDE, LONGITUDE)
        assert call.at("connected") is not None
        assert call.at("al-ack positive") is not None


async def test_a_retransmitted_invite_is_answered_again_not_taken_as_a_second_call() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        invite = vehicle.build_invite()
        vehicle.send(invite, psap.address)
        assert (await vehicle.receive_response()).status == 100
        assert (await vehicle.receive_response()).status == 200
        vehicle.send(invite, psap.address)  # the vehicle's Timer A fired before the 200 arrived
        assert (await vehicle.receive_response()).status == 200
        assert len(psap.calls) == 1
        assert len(psap.msds) == 1


async def test_voice_flows_both_ways_and_is_counted() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        loop = asyncio.get_running_loop()
        received: asyncio.Queue[bytes] = asyncio.Queue()

        class Rtp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                received.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(Rtp, local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            ok = await vehicle.call(psap.address, vehicle.build_invite(rtp_port=port))
            answer = next(p for p in ok.body.split(b"--") if b"application/sdp" in p)
            psap_port = parse_sdp(answer.split(b"\r\n\r\n", 1)[1]).port
            async with asyncio.timeout(5):
                packet = await received.get()
            assert packet[0] >> 6 == 2  # RTP version 2
            assert packet[1] & 0x7F == 0  # PCMU
            for sequence in range(3):
                transport.sendto(
                    struct.pack("!BBHII", 0x80, 0, sequence, sequence * 160, 7) + bytes(160), ("127.0.0.1", psap_port)
                )
            transport.sendto(b"not rtp", ("127.0.0.1", psap_port))
            call = psap.call()
            await psap.wait_for(lambda: call.rtp_received == 3 and call.voice is not None and call.voice.rejected == 1)
            assert call.rtp_sent >= 1
        finally:
            transport.close()


async def test_the_psap_asks_for_the_msd_again_and_acks_the_fresh_one_by_info() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        asking = asyncio.create_task(psap.request_msd())
        request = await vehicle.receive_request("INFO")
        control = read_control(request)
        assert isinstance(control, ControlRequest)
        assert control.wants_msd
        assert request.headers.get("Info-Package") == INFO_PACKAGE
        vehicle.reply(request)
        await asking
        headers, content_type, body = info_body(msd=MSD, msd_content_id="msd2@ivs")
        info = vehicle.in_dialog("INFO", 2, headers=headers, body=body, content_type=content_type)
        vehicle.send(info, vehicle.source or psap.address)
        assert (await vehicle.receive_response()).status == 200
        ack_info = await vehicle.receive_request("INFO")
        ack = read_control(ack_info)
        assert ack == ControlAck(ref="msd2@ivs", received=True)
        vehicle.reply(ack_info)
        assert (await psap.wait_for_msd(2)).raw == MSD
        assert len(psap.call().msds) == 2


async def test_the_psap_clears_down_with_bye() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        clearing = asyncio.create_task(psap.clear_down())
        bye = await vehicle.receive_request("BYE")
        assert bye.call_id == vehicle.call_id
        vehicle.reply(bye)
        await clearing
        assert psap.call().ended_by == "psap"


async def test_voice_s_zero_clears_down_right_after_the_ack() -> None:
    async with ng_psap(PsapBehaviour(voice_s=0.0)) as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        bye = await vehicle.receive_request("BYE")
        vehicle.reply(bye)
        await psap.wait_for(lambda: not psap.call().active)
        assert psap.call().ended_by == "psap"


async def test_the_vehicle_hanging_up_ends_the_call() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        vehicle.send(vehicle.in_dialog("BYE", 2), vehicle.source or psap.address)
        assert (await vehicle.receive_response()).status == 200
        assert psap.call().ended_by == "ivs"


async def test_the_psap_calls_back_at_the_contact_of_the_ecall() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        bye = asyncio.create_task(psap.clear_down())
        vehicle.reply(await vehicle.receive_request("BYE"))
        await bye
        callback = await psap.call_back()
        invite = await vehicle.receive_request("INVITE")
        assert invite.uri == vehicle.contact
        assert parse_sdp(invite.body).port > 0
        sdp = build_sdp(AudioSession(address="127.0.0.1", port=40_002))
        vehicle.reply(
            invite, headers=(("Contact", f"<{vehicle.contact}>"), ("Content-Type", "application/sdp")), body=sdp
        )
        ack = await vehicle.receive_request("ACK")
        assert ack.call_id == invite.call_id
        await psap.wait_for(lambda: callback.at("connected") is not None)
        assert callback.kind == "callback"
        assert callback.active


async def test_an_msd_that_does_not_decode_is_acked_received_false_and_asked_for_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        with caplog.at_level(logging.WARNING, logger="backend_stub.psap_ng"):
            ok = await vehicle.call(psap.address, vehicle.build_invite(msd=b"\xff\x00garbage"))
        ack = read_control(ok)
        assert isinstance(ack, ControlAck)
        assert not ack.received
        assert "MSD does not decode" in caplog.text
        again = await vehicle.receive_request("INFO")  # resend_invalid: the PSAP asks for a good one
        assert isinstance(read_control(again), ControlRequest)
        assert psap.msds[0].msd is None
        assert psap.msds[0].error


def _invite_with_parts(vehicle: SipVehicle, parts: list[BodyPart], call_info: str | None) -> bytes:
    content_type, body = build_multipart(parts)
    invite = vehicle.build_invite()
    headers = invite.headers.without("Call-Info", "Content-Type", "Geolocation").added(("Content-Type", content_type))
    if call_info is not None:
        headers = headers.added(("Call-Info", call_info))
    return SipRequest(method="INVITE", uri=invite.uri, headers=headers, body=body).encode()


HOSTILE_INVITES = {
    "no MSD part": lambda v: _invite_with_parts(v, [BodyPart(content_type="application/sdp", data=b"v=0\r\n")], None),
    "MSD not referenced by Call-Info": lambda v: _invite_with_parts(v, [msd_part(MSD, "msd@ivs")], None),
    "Call-Info pointing at no part": lambda v: _invite_with_parts(
        v, [msd_part(MSD, "msd@ivs")], msd_call_info("other@ivs").format()
    ),
    "not an eCall URN": lambda v: (
        v.build_invite().encode().replace(b"INVITE urn:service:sos.ecall.automatic", b"INVITE urn:service:sos.fire", 1)
    ),
    "broken PIDF-LO": lambda v: v.build_invite().encode().replace(b"<gml:pos>", b"<gml:pos>north ", 1),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_INVITES))
async def test_a_wrong_invite_gets_a_400_with_the_reason_and_the_psap_carries_on(case: str) -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        data = HOSTILE_INVITES[case](vehicle)
        vehicle.send(data, psap.address)
        refused = await vehicle.receive_response()
        assert refused.status == 400
        assert refused.reason
        assert psap.calls == []
        async with SipVehicle() as honest:
            await honest.call(psap.address)
        assert len(psap.msds) == 1


GARBAGE = {
    "empty": b"",
    "binary": bytes(range(256)) * 4,
    "no headers": b"INVITE urn:service:sos.ecall.automatic SIP/2.0\r\n\r\n",
    "Content-Length beyond the datagram": b"INFO sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n",
    "a header line of 60 kB": b"OPTIONS sip:psap SIP/2.0\r\n" + b"X: " + b"a" * 60_000 + b"\r\n\r\n",
    "response to nothing": b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\nFrom: <sip:a>;tag=1\r\n"
    b"To: <sip:b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
}


async def test_garbage_datagrams_are_dropped_and_logged_never_fatal(caplog: pytest.LogCaptureFixture) -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        with caplog.at_level(logging.INFO), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for data in GARBAGE.values():
                raw.sendto(data, psap.address)  # a plain socket: asyncio's would not send the empty one
            await vehicle.call(psap.address)
        assert psap.dropped == len(GARBAGE) - 1  # the stray response parses; it matches no transaction
        assert "for no transaction of ours" in caplog.text
        assert len(psap.msds) == 1


async def test_a_forged_bye_is_refused_481_and_the_call_stays_up() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        forged = vehicle.in_dialog("BYE", 2)
        forged_headers = forged.headers.replaced("From", f"<{vehicle.contact}>;tag=guessed")
        vehicle.send(SipRequest(method="BYE", uri=forged.uri, headers=forged_headers), vehicle.source or psap.address)
        assert (await vehicle.receive_response()).status == 481
        assert psap.call().active


async def test_an_info_outside_the_ecall_package_gets_469() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        content_type, body = build_multipart([BodyPart(content_type="text/plain", data=b"hello")])
        info = vehicle.in_dialog("INFO", 2, body=body, content_type=content_type)
        vehicle.send(info, vehicle.source or psap.address)
        assert (await vehicle.receive_response()).status == 469
        assert psap.call().active


async def test_an_info_with_a_broken_control_block_gets_400() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        headers, content_type, body = info_body(control=build_control_ack("x", True))
        broken = body.replace(
            b"<EmergencyCallData.Control", b"<!DOCTYPE x [<!ENTITY e 'boom'>]><EmergencyCallData.Control"
        )
        info = vehicle.in_dialog("INFO", 2, headers=headers, body=broken, content_type=content_type)
        vehicle.send(info, vehicle.source or psap.address)
        assert (await vehicle.receive_response()).status == 400
        assert psap.call().active


async def test_a_test_call_is_kept_as_a_test_call() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address, vehicle.build_invite(urn=URN_TEST))
        assert psap.call().kind == "test"


async def test_ng_and_cs_msds_are_archived_side_by_side_with_timings(tmp_path: Path) -> None:
    database = tmp_path / "backend.sqlite3"
    async with PsapStub(database=database) as cs_psap:
        async with emergency_call(cs_psap) as (reader, writer):
            await send_msd(reader, writer)
        await cs_psap.wait_for_msd()
        await cs_psap.archived()
    async with ng_psap(database=database) as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        await psap.wait_for_msd()
        await psap.archived()
        assert psap.rows()[0]["transport"] == "ng"
    rows = read_psap_msds(database)
    assert [row["transport"] for row in rows] == ["cs", "ng"]
    assert rows[0]["raw_hex"] == rows[1]["raw_hex"] == MSD.hex()  # the same crash, the same bytes either way
    for row in rows:
        assert row["vin"] == VIN
        assert row["answered_after_ms"] is not None
        assert row["msd_after_ms"] is not None


async def test_a_table_from_before_ng_ecall_is_migrated_and_its_rows_stay_circuit_switched(tmp_path: Path) -> None:
    database = tmp_path / "backend.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute(
            "CREATE TABLE psap_msds (call_id INTEGER NOT NULL, received_ms INTEGER NOT NULL, kind TEXT NOT NULL,"
            " message_identifier INTEGER, vin TEXT, latitude_deg REAL, longitude_deg REAL, position_trusted INTEGER,"
            " raw_hex TEXT NOT NULL, error TEXT)"
        )
        db.execute(
            "INSERT INTO psap_msds VALUES (1, 1000, 'automatic', 1, ?, 48.1, 11.5, 1, ?, NULL)", (VIN, MSD.hex())
        )
    assert read_psap_msds(database)[0]["transport"] == "cs"  # read before any migration: still said
    async with ng_psap(database=database) as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        await psap.wait_for_msd()
        await psap.archived()
    rows = read_psap_msds(database)
    assert [(row["transport"], row["msd_after_ms"] is None) for row in rows] == [("cs", True), ("ng", False)]


async def test_the_backend_runs_the_ng_psap_on_its_configured_sip_port(tmp_path: Path) -> None:
    """`[psap] sip_port` (as the bench writes it) → `backend-stub run` answers NG eCalls there, archived."""
    layout = BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:1")  # no broker: not needed
    layout.create_backend()
    port = free_udp_port()
    layout.write_backend_config(replace(layout.backend(), psap_sip_port=port))
    backend = BackendStub(load_backend_config(layout.backend_config, env={}))
    assert backend.psap_ng is not None
    async with running_task(backend.run(), name="backend"):
        assert await backend.psap_ng.wait_listening() == ("127.0.0.1", port)
        async with SipVehicle() as vehicle:
            await vehicle.call(("127.0.0.1", port))
        await backend.psap_ng.wait_for_msd()
        await backend.psap_ng.archived()
    [row] = read_psap_msds(backend.config.database)
    assert (row["transport"], row["vin"]) == ("ng", VIN)


async def test_calls_beyond_the_limit_get_busy_here_and_the_calls_up_stay() -> None:
    async with PsapNg(behaviour=NO_VOICE, max_calls=1) as psap, SipVehicle() as first, SipVehicle() as second:
        await first.call(psap.address)
        second.send(second.build_invite(), psap.address)
        assert (await second.receive_response()).status == 486
        assert [call.active for call in psap.calls] == [True]


async def test_no_voice_is_sent_off_loopback(caplog: pytest.LogCaptureFixture) -> None:
    """An SDP offer naming another host must not turn the PSAP into a 50-packets-a-second reflector."""
    async with ng_psap() as psap, SipVehicle() as vehicle:
        invite = vehicle.build_invite()
        offer = invite.body.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 192.0.2.7", 1)
        elsewhere = SipRequest(method="INVITE", uri=invite.uri, headers=invite.headers, body=offer)
        with caplog.at_level(logging.WARNING, logger="backend_stub.psap_ng"):
            await vehicle.call(psap.address, elsewhere)
            call = psap.call()
            await psap.wait_for(call.acked.is_set)
        assert "no voice to 192.0.2.7" in caplog.text
        assert call.rtp_sent == 0
        assert call.active  # the emergency call itself is answered all the same


async def test_a_replayed_in_dialog_request_with_an_older_cseq_gets_400() -> None:
    async with ng_psap() as psap, SipVehicle() as vehicle:
        await vehicle.call(psap.address)
        headers, content_type, body = info_body(msd=MSD, msd_content_id="msd2@ivs")
        for cseq, status in ((3, 200), (2, 400)):  # the second: captured earlier, sent again with a new branch
            info = vehicle.in_dialog("INFO", cseq, headers=headers, body=body, content_type=content_type)
            vehicle.send(info, vehicle.source or psap.address)
            while isinstance(reply := await vehicle.receive(), SipRequest):  # the PSAP's ack INFO in between
                vehicle.reply(reply)
            assert reply.status == status
        assert len(psap.msds) == 2  # the INVITE's and the first INFO's, not the replay's
