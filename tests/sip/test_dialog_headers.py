"""Transaction and dialog headers (RFC 3261 §8.1.1, §18.2.1, §20; RFC 3581) and the one-stream SDP."""

from __future__ import annotations

import pytest

from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import (
    BRANCH_COOKIE,
    CSeq,
    NameAddr,
    SipUri,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_name_addr,
    parse_sip_uri,
    parse_via,
)
from telematics_wire.sip.sdp import AudioSession, build_sdp, parse_sdp


def test_fresh_identifiers_are_unique_and_well_formed() -> None:
    branches = {new_branch() for _ in range(50)}
    assert len(branches) == 50
    assert all(branch.startswith(BRANCH_COOKIE) for branch in branches)
    assert len({new_tag() for _ in range(50)}) == 50
    assert new_call_id("192.0.2.1").endswith("@192.0.2.1")


def test_via_with_rport_and_received_round_trips() -> None:
    via = parse_via("SIP/2.0/udp [2001:db8::1]:5070 ; branch=z9hG4bKx ;rport=40000;received=192.0.2.99")
    assert (via.transport, via.host, via.port) == ("UDP", "[2001:db8::1]", 5070)
    assert (via.branch, via.rport, via.received) == ("z9hG4bKx", 40000, "192.0.2.99")
    assert parse_via(via.format()) == via


def test_a_server_fills_in_rport_and_received() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKa;rport")
    assert via.rport is None
    filled = via.with_param("received", "192.0.2.7").with_param("rport", "61000")
    assert filled.format() == "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKa;rport=61000;received=192.0.2.7"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SIP/2.0 host", "is not 'SIP/2.0/<transport>"),
        ("SIP/2.0/UDP host:99999", "port 99999 is outside"),
        ("SIP/2.0/UDP host:0", "port 0 is outside"),
        ("SIP/2.0/UDP host;rport=abc", "is not a port"),
        ("SIP/2.0/UDP host;branch", ""),
        ("SIP/2.0/UDP host;=x", "parameter without a name"),
        ('SIP/2.0/UDP host;branch="open', "unterminated quoted string"),
        ("SIP/2.0/UDP host" + ";a" * 40, "more than 32 parameters"),
    ],
)
def test_bad_via_is_refused(text: str, reason: str) -> None:
    if not reason:
        assert parse_via(text).branch == ""  # a flag without a value reads as empty, not missing
        return
    with pytest.raises(SipError, match=reason):
        parse_via(text)


def test_cseq_bounds() -> None:
    assert parse_cseq(" 42  INFO ") == CSeq(number=42, method="INFO")
    with pytest.raises(SipError, match="outside"):
        parse_cseq(str(2**31) + " INVITE")
    with pytest.raises(SipError, match="not '<number> <method>'"):
        parse_cseq("-1 INVITE")


@pytest.mark.parametrize(
    ("text", "uri", "display", "tag"),
    [
        ('"Vehicle, WM9" <sip:ivs@192.0.2.1:5070>;tag=abc', "sip:ivs@192.0.2.1:5070", "Vehicle, WM9", "abc"),
        ("Vehicle <sip:ivs@h>", "sip:ivs@h", "Vehicle", None),
        ("<sip:ivs@h;transport=udp>;tag=t", "sip:ivs@h;transport=udp", None, "t"),
        ("sip:ivs@h;tag=t", "sip:ivs@h", None, "t"),  # §20.10: params of a bare URI belong to the header
        ("urn:service:sos.ecall.automatic", "urn:service:sos.ecall.automatic", None, None),
        ('"quote \\" inside" <sip:a@b>', "sip:a@b", 'quote " inside', None),
    ],
)
def test_name_addr_forms(text: str, uri: str, display: str | None, tag: str | None) -> None:
    address = parse_name_addr(text)
    assert (address.uri, address.display_name, address.tag) == (uri, display, tag)
    assert parse_name_addr(address.format()) == address


def test_with_tag_replaces_a_tag() -> None:
    assert NameAddr(uri="sip:a@b", params=(("tag", "old"),)).with_tag("new").format() == "<sip:a@b>;tag=new"


@pytest.mark.parametrize("text", ['"open <sip:a@b>', "<sip:a@b", '"x" sip:a@b', "<>", "<sip:a b>"])
def test_bad_name_addr_is_refused(text: str) -> None:
    with pytest.raises(SipError):
        parse_name_addr(text)


def test_sip_uri() -> None:
    uri = parse_sip_uri("sip:psap@[2001:db8::9]:5080;transport=udp;lr")
    assert uri == SipUri(user="psap", host="[2001:db8::9]", port=5080, params=(("transport", "udp"), ("lr", None)))
    assert parse_sip_uri(uri.format()) == uri
    assert parse_sip_uri("SIP:192.0.2.1").host == "192.0.2.1"
    for bad in ("tel:112", "sip:", "sip:a@b:70000", "urn:service:sos"):
        with pytest.raises(SipError):
            parse_sip_uri(bad)


def test_sdp_offer_and_answer_round_trip() -> None:
    offer = AudioSession(address="192.0.2.10", port=40_000, session_id=7, session_version=1)
    assert parse_sdp(build_sdp(offer)) == offer
    v6 = AudioSession(address="2001:db8::10", port=40_002, direction="recvonly")
    assert b"c=IN IP6 2001:db8::10" in build_sdp(v6)
    assert parse_sdp(build_sdp(v6)) == v6


def test_sdp_media_level_address_wins_and_other_streams_are_skipped() -> None:
    text = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=video 5000 RTP/AVP 96\r\na=ptime:40\r\n"
        b"m=audio 6000 RTP/AVP 8 0\r\nc=IN IP4 192.0.2.2\r\na=ptime:30\r\na=sendonly\r\n"
    )
    session = parse_sdp(text)
    assert (session.address, session.port, session.ptime_ms, session.direction) == ("192.0.2.2", 6000, 30, "sendonly")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 8\r\n", "offers no PCMU"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n", "outside 0..65535"),
        (b"v=0\r\nm=audio 1 RTP/AVP 0\r\n", "no connection address"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\n", "no audio stream"),
        (b"v=0\r\nc=IN IP4 not-an-ip\r\nm=audio 1 RTP/AVP 0\r\n", "not an IP address"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/SAVP 0\r\n", "not RTP/AVP"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=ptime:0\r\n", "outside 1..1000"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=ptime:9" + b"9" * 30 + b"\r\n", "not a number"),
        (b"v=0\r\no=- 1" + b"1" * 50 + b" 1 IN IP4 1.2.3.4\r\n", "SDP origin"),
        (b"x=0\r\nbroken line\r\n", "not '<type>=<value>'"),
        (b"c=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\nv=0\r\n", "does not start with v=0"),
        (b"v=0\r\n\xff", "not UTF-8"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=ptime:20\x1d\r\n", "not a number"),
        ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio \u0663 RTP/AVP 0\r\n".encode(), "not 'audio <port>"),
        (b"v=0\r\n" + b"a=x\r\n" * 3000, "exceeds"),
    ],
)
def test_bad_sdp_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        parse_sdp(data)
