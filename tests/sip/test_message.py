"""SIP message codec (RFC 3261 §7, §18.3): what a peer may send is read, what it must not is refused with a
reason, and no bytes at all crash the decoder."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from telematics_wire.errors import SipError
from telematics_wire.sip.message import (
    MAX_HEADER_LINES,
    MAX_MESSAGE_BYTES,
    SipHeaders,
    SipRequest,
    SipResponse,
    parse_message,
    response_to,
)

BASE_HEADERS = (
    "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKabc;rport\r\n"
    "From: <sip:ivs@vehicle.invalid>;tag=1\r\n"
    "To: <urn:service:sos.ecall.manual>\r\n"
    "Call-ID: call-1@192.0.2.1\r\n"
    "CSeq: 7 OPTIONS\r\n"
)


def options(extra: str = "", body: bytes = b"", *, length: str | None = None) -> bytes:
    length_line = "" if length == "absent" else f"Content-Length: {len(body) if length is None else length}\r\n"
    head = "OPTIONS urn:service:sos.ecall.manual SIP/2.0\r\n" + BASE_HEADERS + extra + length_line + "\r\n"
    return head.encode() + body


def test_request_round_trip() -> None:
    message = parse_message(options(body=b"hello"))
    assert isinstance(message, SipRequest)
    assert (message.method, message.uri, message.body) == ("OPTIONS", "urn:service:sos.ecall.manual", b"hello")
    assert message.cseq.number == 7
    assert parse_message(message.encode()) == message


def test_response_round_trip_keeps_reason() -> None:
    data = ("SIP/2.0 486 Busy Here\r\n" + BASE_HEADERS + "Content-Length: 0\r\n\r\n").encode()
    message = parse_message(data)
    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (486, "Busy Here")
    assert parse_message(message.encode()) == message


def test_compact_forms_and_case_are_one_header() -> None:
    data = (
        b"OPTIONS sip:psap@192.0.2.9 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"f: <sip:a@b>;tag=x\r\n"
        b"t: <sip:psap@192.0.2.9>\r\n"
        b"i: compact@host\r\n"
        b"cseq: 1 OPTIONS\r\n"
        b"c: text/plain\r\n"
        b"l: 2\r\n"
        b"\r\nhi"
    )
    message = parse_message(data)
    assert message.call_id == "compact@host"
    assert message.headers.get("content-type") == "text/plain"
    assert message.headers.get("Content-Type") == message.headers.get("c")
    assert b"Call-ID: compact@host\r\n" in message.encode()  # written with full names


def test_folded_header_is_unfolded() -> None:
    message = parse_message(options("Subject: first\r\n  second\r\n\tthird\r\n"))
    assert message.headers.get("Subject") == "first second third"


def test_lf_only_line_ends_are_tolerated() -> None:
    assert parse_message(options(body=b"x").replace(b"\r\n", b"\n")).body == b"x"


def test_multi_value_headers_split_outside_quotes_and_brackets() -> None:
    message = parse_message(
        options('Via: SIP/2.0/UDP p1;branch=z9hG4bK2, SIP/2.0/UDP p2;branch=z9hG4bK3\r\nContact: "A, B" <sip:a@b>\r\n')
    )
    assert len(message.headers.get_all("Via")) == 3
    assert message.headers.get_all("Contact") == ('"A, B" <sip:a@b>',)


def test_content_length_cuts_extra_bytes_on_udp() -> None:
    assert parse_message(options(body=b"abcdef", length="3")).body == b"abc"


def test_missing_content_length_takes_the_rest() -> None:
    assert parse_message(options(body=b"rest of it", length="absent")).body == b"rest of it"


def test_leading_keepalive_crlfs_are_ignored() -> None:
    assert parse_message(b"\r\n\r\n" + options()).method == "OPTIONS"  # type: ignore[union-attr]


def test_encode_always_writes_the_true_content_length() -> None:
    message = SipRequest(
        method="OPTIONS",
        uri="sip:x@y",
        headers=SipHeaders([("Content-Length", "999"), ("Call-ID", "a")]),
        body=b"12",
    )
    assert message.encode().count(b"Content-Length") == 1
    assert b"Content-Length: 2\r\n" in message.encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty message"),
        (b"\r\n\r\n", "empty message"),
        (options(body=b"ab", length="5"), "Content-Length 5 exceeds the 2 bytes"),
        (options(length="-1"), "not a non-negative decimal"),
        (options(length="1e3"), "not a non-negative decimal"),
        (options(length=str(2**64)), "larger than any message"),
        (options(length="٣"), "not a non-negative decimal"),  # an Arabic-Indic digit: isdigit() but not ASCII
        (options("Content-Length: 1\r\n", length="0"), "conflicting Content-Length"),
        (options().replace(b"Call-ID", b"Call-Id\xff"), "not UTF-8"),
        (options().replace(b"\r\n\r\n", b"\r\n"), "no empty line"),
        (options().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), "neither a request nor a status line"),
        (b"SIP/2.0 999 Nope\r\n" + BASE_HEADERS.encode() + b"\r\n", "neither a request nor a status line"),
        (options().replace(b"CSeq: 7 OPTIONS", b"CSeq: 7 INVITE"), "does not match"),
        (options().replace(b"CSeq: 7 OPTIONS", b"CSeq: 99999999999 OPTIONS"), "not '<number> <method>'"),
        (options().replace(b"CSeq: 7 OPTIONS", b"CSeq: 4294967295 OPTIONS"), "outside 0..2\\*\\*31-1"),
        (options().replace(b"Call-ID: call-1@192.0.2.1\r\n", b""), "no Call-ID header"),
        (options().replace(b"Via:", b"Via ;"), "not 'name: value'"),
        (options("x" * 9000 + ": y\r\n"), "exceeds 8192"),
        (options("".join(f"X-{n}: {n}\r\n" for n in range(MAX_HEADER_LINES))), "more than 256 header lines"),
        (options(body=b"x" * MAX_MESSAGE_BYTES), "exceeds 65536"),
        (b" " + options(), "start line begins with whitespace"),
        (options("Via: SIP/2.0/UDP host:99999\r\n"), "port 99999"),
        (options("Via: HTTP/1.1 host\r\n"), "is not 'SIP/2.0/<transport>"),
        (options("From: <sip:other@x>;tag=2\r\n"), "more than one From header"),
        (options().replace(b"To: <urn:service:sos.ecall.manual>", b"To: <urn:service"), "'<' without '>'"),
        (options().replace(b"Call-ID: call-1@192.0.2.1", b"Call-ID:"), "Call-ID must be one non-empty header"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        parse_message(data)


def test_header_injection_is_refused_when_building() -> None:
    with pytest.raises(SipError, match="line break"):
        SipHeaders([("Subject", "x\r\nVia: SIP/2.0/UDP evil")])
    with pytest.raises(SipError, match="not a token"):
        SipHeaders([("Bad Name", "x")])
    with pytest.raises(SipError, match="whitespace"):
        SipRequest(method="INVITE", uri="sip:a@b SIP/2.0\r\nX:", headers=SipHeaders())


def test_response_to_copies_the_transaction_and_tags_the_to() -> None:
    request = parse_message(
        options("Record-Route: <sip:proxy;lr>\r\nVia: SIP/2.0/UDP proxy;branch=z9hG4bKp;received=192.0.2.7\r\n")
    )
    assert isinstance(request, SipRequest)
    answer = response_to(request, 200, to_tag="psap1", headers=[("Contact", "<sip:psap@192.0.2.9>")])
    assert answer.headers.get_all("Via") == request.headers.get_all("Via")
    assert answer.headers.get("To") == "<urn:service:sos.ecall.manual>;tag=psap1"
    assert answer.headers.get_all("Record-Route") == ("<sip:proxy;lr>",)
    assert (answer.call_id, answer.cseq) == (request.call_id, request.cseq)
    assert answer.reason == "OK"
    trying = response_to(request, 100, to_tag="psap1")
    assert trying.headers.get("To") == "<urn:service:sos.ecall.manual>"  # §8.2.6.1: no tag on 100


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
@example(b"INVITE sip:a SIP/2.0\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\nl: 99999999999999999999\r\n\r\n")
def test_decoder_is_total_on_any_bytes(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipError:
        return
    assert parse_message(message.encode()) == message


_LINES = st.sampled_from(
    [
        "INVITE urn:service:sos.ecall.automatic SIP/2.0",
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP h;branch=z9hG4bKx",
        "v: SIP/2.0/UDP h:5060;rport=1;received=1.2.3.4",
        "From: <sip:a@b>;tag=1",
        "t: x <sip:c@d>",
        "Call-ID: 1",
        "CSeq: 1 INVITE",
        "CSeq: 2 ACK",
        "Content-Length: 4",
        "l: 0",
        "Content-Type: multipart/mixed;boundary=b",
        " folded",
        "",
        "--b",
        "",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_LINES, max_size=14), st.sampled_from(["\r\n", "\n"]))
def test_decoder_is_total_on_plausible_messages(lines: list[str], newline: str) -> None:
    data = newline.join(lines).encode()
    try:
        message = parse_message(data)
    except SipError:
        return
    assert parse_message(message.encode()) == message


_NAMES = {
    "Via": ("Via", "v", "VIA"),
    "From": ("From", "f", "from"),
    "To": ("To", "t", "tO"),
    "Call-ID": ("Call-ID", "i", "call-id"),
    "CSeq": ("CSeq", "cseq"),
}
_TOKEN_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(
    spellings=st.fixed_dictionaries({key: st.sampled_from(names) for key, names in _NAMES.items()}),
    order=st.permutations(list(_NAMES)),
    call_id=_TOKEN_TEXT,
    number=st.integers(0, 2**31 - 1),
    extra=st.lists(st.tuples(_TOKEN_TEXT.map(lambda name: "X-" + name), _TOKEN_TEXT), max_size=5),
    body=st.binary(max_size=300),
    newline=st.sampled_from(["\r\n", "\n"]),
    with_length=st.booleans(),
)
def test_any_well_formed_request_reads_back_its_fields(
    spellings: dict[str, str],
    order: list[str],
    call_id: str,
    number: int,
    extra: list[tuple[str, str]],
    body: bytes,
    newline: str,
    with_length: bool,
) -> None:
    values = {
        "Via": "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKq",
        "From": "<sip:a@b>;tag=1",
        "To": "<sip:c@d>",
        "Call-ID": call_id,
        "CSeq": f"{number} BYE",
    }
    lines = ["BYE sip:c@d SIP/2.0"]
    lines += [f"{spellings[key]}: {values[key]}" for key in order]
    lines += [f"{name}: {value}" for name, value in extra]
    if with_length:
        lines.append(f"Content-Length: {len(body)}")
    message = parse_message((newline.join(lines) + newline + newline).encode() + body)
    assert isinstance(message, SipRequest)
    assert (message.call_id, message.cseq.number, message.body) == (call_id, number, body)
    for name, value in extra:
        assert value in message.headers.get_all(name)
    assert parse_message(message.encode()) == message
