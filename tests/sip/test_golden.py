"""Golden messages in tests/data/sip, written by hand after RFC 8147's examples (§9.1 control blocks, the
INVITE of its call flow) and a Kamailio-routed 200 OK: what other implementations send, read right."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics_wire import msd as msd_codec
from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import parse_name_addr, parse_via
from telematics_wire.sip.ecall_body import (
    URN_MANUAL,
    ActionResult,
    ControlAck,
    ControlRequest,
    build_control_ack,
    build_control_request_msd,
    parse_control,
)
from telematics_wire.sip.ecall_invite import build_ecall_invite, read_control, read_ecall_invite
from telematics_wire.sip.message import SipRequest, SipResponse, parse_message
from telematics_wire.sip.pidf_lo import Location
from telematics_wire.sip.sdp import PCMU, parse_sdp

DATA = Path(__file__).parents[1] / "data" / "sip"


def golden(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_rfc8147_style_invite_reads_urn_msd_location_and_sdp() -> None:
    request = parse_message(golden("rfc8147_invite.sip"))
    assert isinstance(request, SipRequest)
    invite = read_ecall_invite(request)
    assert invite.urn == URN_MANUAL
    assert invite.msd == golden("rfc8147_msd.uper")  # bit for bit, CR/LF bytes and all
    assert msd_codec.decode(invite.msd).vin == "WM9VDSVDSYA123456"
    assert invite.msd_content_id == "1234567890@atlanta.example.com"
    assert invite.location == Location(
        latitude=48.5, longitude=11.5, timestamp=datetime(2024, 5, 1, 10, 0, tzinfo=UTC), method="GPS"
    )
    assert [info.purpose for info in invite.call_info] == ["EmergencyCallData.eCall.MSD"]  # folded header read
    session = parse_sdp(invite.sdp or b"")
    assert (session.address, session.port, session.payload_type, session.ptime_ms) == ("192.0.2.10", 49170, PCMU, 20)
    assert parse_name_addr(request.headers.require("To")).uri == URN_MANUAL  # addr-spec without <>
    assert len(request.headers.get_all("Allow")) == 11  # a folded list header


def test_psap_answer_through_a_proxy_carries_the_ack() -> None:
    response = parse_message(golden("psap_200_ok.sip"))
    assert isinstance(response, SipResponse)
    assert response.status == 200
    vias = [parse_via(value) for value in response.headers.get_all("Via")]
    assert (vias[1].rport, vias[1].received, vias[1].branch) == (5060, "192.0.2.10", "z9hG4bK74bf9")
    assert parse_name_addr(response.headers.require("To")).tag == "psap77"
    assert read_control(response) == ControlAck(ref="1234567890@atlanta.example.com", received=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("control_ack.xml", ControlAck(ref="1234567890@atlanta.example.com", received=True)),
        ("control_request.xml", ControlRequest(action="send-data", datatype="eCall.MSD")),
        (
            "control_ack_action_result.xml",
            ControlAck(
                ref="1234567890@atlanta.example.com",
                received=False,
                action_results=(
                    ActionResult(action="msg-static", success=False, reason="unsupported", details="no display"),
                ),
            ),
        ),
    ],
)
def test_rfc8147_control_blocks(name: str, expected: ControlAck | ControlRequest) -> None:
    assert parse_control(golden(name)) == expected


def test_our_control_blocks_read_as_the_rfc_examples_do() -> None:
    assert parse_control(build_control_ack("1234567890@atlanta.example.com", True)) == parse_control(
        golden("control_ack.xml")
    )
    assert parse_control(build_control_request_msd()) == parse_control(golden("control_request.xml"))


def test_built_invite_is_byte_stable() -> None:
    """The exact bytes our vehicle sends for fixed identifiers: the PSAP stub's and SIPp's checks lean on them."""
    request = build_ecall_invite(
        request_uri=URN_MANUAL,
        from_uri="sip:ivs@vehicle.invalid",
        contact="sip:ivs@192.0.2.10:5070",
        call_id="golden-call@192.0.2.10",
        from_tag="t1",
        branch="z9hG4bKgolden",
        cseq=1,
        msd=golden("rfc8147_msd.uper"),
        location=Location(
            latitude=48.5, longitude=11.5, radius_m=10.0, timestamp=datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
        ),
        sdp=b"v=0\r\n",
        msd_content_id="msd1@192.0.2.10",
        location_content_id="loc1@192.0.2.10",
        boundary="golden-boundary",
    )
    assert request.encode() == golden("built_invite.sip")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4000), st.binary(min_size=1, max_size=6)), min_size=1, max_size=4))
def test_reading_a_mangled_invite_fails_only_with_sip_error(edits: list[tuple[int, bytes]]) -> None:
    """The PSAP's whole read (message, multipart, Call-Info, MSD, PIDF-LO, SDP) is total."""
    data = bytearray(golden("rfc8147_invite.sip"))
    for position, replacement in edits:
        index = position % len(data)
        data[index : index + len(replacement)] = replacement
    with contextlib.suppress(SipError):
        message = parse_message(bytes(data))
        if isinstance(message, SipRequest):
            invite = read_ecall_invite(message)
            if invite.sdp is not None:
                parse_sdp(invite.sdp)
