"""The eCall INVITE (RFC 8147): what the vehicle builds, the PSAP reads back exactly; every missing or
mismatched piece a PSAP relies on is refused with the reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics_wire import msd as msd_codec
from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import new_branch, new_call_id, new_tag
from telematics_wire.sip.ecall_body import (
    MSD_CONTENT_TYPE,
    URN_AUTOMATIC,
    URN_MANUAL,
    URN_TEST,
    ControlAck,
    ControlRequest,
    build_control_ack,
    build_control_request_msd,
)
from telematics_wire.sip.ecall_invite import (
    ack_answer_body,
    build_ecall_invite,
    info_body,
    read_control,
    read_ecall_invite,
    read_msd,
)
from telematics_wire.sip.message import SipHeaders, SipRequest, parse_message, response_to
from telematics_wire.sip.multipart import BodyPart, build_multipart
from telematics_wire.sip.pidf_lo import Location
from telematics_wire.sip.sdp import AudioSession, build_sdp, parse_sdp
from tests.ecall.test_msd import BASE

CRASH = BASE  # the circuit-switched codec tests' MSD: the same bytes must travel over SIP
WHERE = Location(latitude=48.5, longitude=11.5, radius_m=8.0, timestamp=datetime(2024, 5, 1, 10, 0, tzinfo=UTC))
SDP = build_sdp(AudioSession(address="127.0.0.1", port=40_000))


def invite(msd: bytes, *, location: Location | None = WHERE, urn: str = URN_AUTOMATIC) -> SipRequest:
    return build_ecall_invite(
        request_uri=urn,
        from_uri="sip:ivs@vehicle.invalid",
        contact="sip:ivs@127.0.0.1:5070",
        call_id=new_call_id("127.0.0.1"),
        from_tag=new_tag(),
        branch=new_branch(),
        cseq=1,
        msd=msd,
        location=location,
        sdp=SDP,
    )


@pytest.mark.parametrize("version", [2, 3])
def test_msd_from_our_codec_survives_the_invite_bit_for_bit(version: int) -> None:
    encoded = msd_codec.encode(CRASH, version)
    received = read_ecall_invite(parse_message(invite(encoded).encode()))
    assert received.msd == encoded
    assert msd_codec.decode(received.msd).vin == CRASH.vin
    assert received.urn == URN_AUTOMATIC
    assert received.location == WHERE
    assert parse_sdp(received.sdp or b"").port == 40_000


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=140))
def test_any_msd_bytes_survive_the_invite(data: bytes) -> None:
    # CR, LF, "--" and NUL inside the UPER bytes must neither cut the part nor be rewritten.
    assert read_ecall_invite(parse_message(invite(data).encode())).msd == data


@pytest.mark.parametrize("urn", [URN_AUTOMATIC, URN_MANUAL, URN_TEST])
def test_each_ecall_urn_is_accepted(urn: str) -> None:
    assert read_ecall_invite(invite(b"\x01", urn=urn)).urn == urn


def test_a_non_ecall_urn_is_refused_both_ways() -> None:
    with pytest.raises(SipError, match="not an eCall service URN"):
        invite(b"\x01", urn="urn:service:sos")
    request = invite(b"\x01")
    with pytest.raises(SipError, match="not an eCall service URN"):
        read_ecall_invite(replace(request, uri="urn:service:sos.police"))


def test_without_location_there_is_no_geolocation() -> None:
    request = invite(b"\x02", location=None)
    assert request.headers.get("Geolocation") is None
    assert read_ecall_invite(request).location is None


def _with_body(request: SipRequest, parts: list[BodyPart], headers: SipHeaders | None = None) -> SipRequest:
    content_type, body = build_multipart(parts)
    return replace(request, headers=(headers or request.headers).replaced("Content-Type", content_type), body=body)


def test_the_binary_msd_comes_after_every_text_part() -> None:
    """A PSAP reading the message as a C string (SIPp) sees the SDP and the location before the MSD's
    first zero byte; the MSD part stays whole and referenced."""
    crash = b"\x01\x00" + msd_codec.encode(CRASH, 3)  # UPER bytes, a zero byte early on
    request = invite(crash)
    before_nul = request.encode().split(b"\x00", 1)[0]
    assert [line for line in before_nul.split(b"\r\n") if line.startswith(b"Content-Type: ")] == [
        b"Content-Type: multipart/mixed;boundary=" + request.headers.require("Content-Type").split("=", 1)[1].encode(),
        b"Content-Type: application/sdp",
        b"Content-Type: application/pidf+xml",
        b"Content-Type: " + MSD_CONTENT_TYPE.encode(),
    ]
    assert b"<gml:pos>48.5 11.5</gml:pos>" in before_nul
    assert read_ecall_invite(request).msd == crash


def test_an_info_puts_its_control_block_before_the_msd() -> None:
    *_, body = info_body(msd=b"\x00\x01", msd_content_id="msd2@ivs", control=build_control_request_msd())
    before_nul = body.split(b"\x00", 1)[0]
    assert b"EmergencyCallData.Control" in before_nul
    assert before_nul.index(b"EmergencyCallData.Control") < before_nul.index(MSD_CONTENT_TYPE.encode())


def test_no_msd_part_is_refused() -> None:
    request = _with_body(invite(b"\x01"), [BodyPart(content_type="application/sdp", data=SDP)])
    with pytest.raises(SipError, match=r"no application/EmergencyCallData\.eCall\.MSD body part"):
        read_ecall_invite(request)


def test_msd_without_call_info_is_refused() -> None:
    request = invite(b"\x01")
    with pytest.raises(SipError, match="no Call-Info header"):
        read_ecall_invite(replace(request, headers=request.headers.without("Call-Info")))


def test_call_info_pointing_at_nothing_is_refused() -> None:
    request = invite(b"\x01")
    headers = request.headers.replaced("Call-Info", "<cid:other@x>;purpose=EmergencyCallData.eCall.MSD")
    with pytest.raises(SipError, match="no body part has that Content-ID"):
        read_ecall_invite(replace(request, headers=headers))


def test_call_info_pointing_at_a_part_of_the_wrong_type_is_refused() -> None:
    request = invite(b"\x01", location=None)
    parts = [
        BodyPart(content_type="application/sdp", data=SDP, content_id="sdp@x"),
        BodyPart(content_type=MSD_CONTENT_TYPE, data=b"\x01", content_id="msd@x"),
    ]
    headers = request.headers.replaced("Call-Info", "<cid:sdp@x>;purpose=EmergencyCallData.eCall.MSD")
    with pytest.raises(SipError, match="points at a application/sdp part"):
        read_ecall_invite(_with_body(request, parts, headers))


def test_oversize_msd_is_refused() -> None:
    with pytest.raises(SipError, match=r"1\.\.140 bytes"):
        invite(bytes(141))


def test_geolocation_pointing_at_nothing_is_refused() -> None:
    request = invite(b"\x01")
    headers = request.headers.replaced("Geolocation", "<cid:nowhere@x>")
    with pytest.raises(SipError, match="Geolocation references cid:nowhere@x"):
        read_ecall_invite(replace(request, headers=headers))


def test_media_types_and_purpose_compare_without_case() -> None:
    request = invite(b"\x05", location=None)
    text = request.encode().replace(
        b"application/EmergencyCallData.eCall.MSD", b"APPLICATION/emergencycalldata.ecall.msd"
    )
    text = text.replace(b"purpose=EmergencyCallData.eCall.MSD", b"purpose=emergencyCallData.eCall.MSD")
    assert read_ecall_invite(parse_message(text)).msd == b"\x05"


def test_psap_answer_acknowledges_the_msd_by_its_content_id() -> None:
    received = read_ecall_invite(parse_message(invite(b"\x07").encode()))
    content_type, body = ack_answer_body(SDP, received)
    answer = response_to(
        parse_message(invite(b"\x07").encode()),
        200,
        to_tag=new_tag(),
        headers=[("Contact", "<sip:psap@127.0.0.1:5080>"), ("Content-Type", content_type)],
        body=body,
    )
    control = read_control(parse_message(answer.encode()))
    assert control == ControlAck(ref=received.msd_content_id, received=True)


def test_info_carries_a_fresh_msd_and_a_control_request() -> None:
    headers, content_type, body = info_body(msd=b"\x09\x0a", msd_content_id="msd2@ivs")
    request = SipRequest(
        method="INFO",
        uri="sip:psap@127.0.0.1:5080",
        headers=SipHeaders(
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={new_branch()}"),
                ("From", "<sip:ivs@vehicle.invalid>;tag=a"),
                ("To", "<urn:service:sos.ecall.automatic>;tag=b"),
                ("Call-ID", "c@d"),
                ("CSeq", "2 INFO"),
                *headers,
                ("Content-Type", content_type),
            ]
        ),
        body=body,
    )
    assert read_msd(parse_message(request.encode())) == (b"\x09\x0a", "msd2@ivs")
    headers, content_type, body = info_body(control=build_control_request_msd())
    request = replace(
        request, headers=request.headers.without("Call-Info").replaced("Content-Type", content_type), body=body
    )
    control = read_control(parse_message(request.encode()))
    assert isinstance(control, ControlRequest)
    assert control.wants_msd
    assert read_msd(request) is None


def test_a_negative_ack_reads_as_not_received() -> None:
    _, content_type, body = info_body(control=build_control_ack("m@x", received=False))
    request = invite(b"\x01")
    assert read_control(
        replace(request, headers=request.headers.replaced("Content-Type", content_type), body=body)
    ) == (ControlAck(ref="m@x", received=False))
