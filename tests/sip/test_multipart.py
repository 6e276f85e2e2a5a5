"""multipart/mixed (RFC 2046 §5.1): binary parts survive exactly, a broken body is refused with the reason."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics_wire.errors import SipError
from telematics_wire.sip.multipart import MAX_PARTS, BodyPart, build_multipart, parse_multipart

CT = "multipart/mixed;boundary=b1"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_parts_round_trip_bit_for_bit(payloads: list[bytes]) -> None:
    parts = [
        BodyPart(
            content_type="application/octet-stream", data=data, content_id=f"p{index}@x", transfer_encoding="binary"
        )
        for index, data in enumerate(payloads)
    ]
    content_type, body = build_multipart(parts)
    assert parse_multipart(content_type, body) == parts


def test_a_boundary_inside_the_data_is_never_used() -> None:
    part = BodyPart(content_type="text/plain", data=b"\r\n--b1\r\n")
    with pytest.raises(SipError, match="occurs inside a part"):
        build_multipart([part], boundary="b1")
    content_type, body = build_multipart([part])
    assert parse_multipart(content_type, body) == [part]


def test_preamble_epilogue_padding_and_default_type() -> None:
    body = b"preamble\r\n--b1  \r\n\r\nno headers\r\n--b1\r\nContent-Type: text/x\r\n\r\nx\r\n--b1--  \r\nepilogue"
    parts = parse_multipart('multipart/mixed; boundary="b1"', body)
    assert [(part.content_type, part.data) for part in parts] == [("text/plain", b"no headers"), ("text/x", b"x")]


def test_base64_parts_are_decoded() -> None:
    body = (
        b"--b1\r\nContent-Type: a/b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"\x00\xff")
        + b"\r\n--b1--"
    )
    assert parse_multipart(CT, body)[0].data == b"\x00\xff"


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/sdp", b"", "not multipart"),
        ("multipart/mixed", b"--b1--", "no valid boundary"),
        ("multipart/mixed;boundary=" + "x" * 71, b"", "no valid boundary"),
        (CT, b"no delimiter at all", "no boundary line"),
        (CT, b"--b1\r\nContent-Type: a/b\r\n\r\ndata", "no close delimiter"),
        (CT, b"--b1junk\r\n\r\nx\r\n--b1--", "text after the boundary"),
        (CT, b"--b1\r\nContent-Type a/b\r\n\r\nx\r\n--b1--", "not 'name: value'"),
        (CT, b"--b1\r\nContent-Type: a/b\r\n\r\nx\r\n--b1--junk", "after the close delimiter"),
        (CT, b"--b1\r\nContent-Type: nonsense\r\n\r\nx\r\n--b1--", "not type/subtype"),
        (
            CT,
            b"--b1\r\nContent-Type: a/b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n--b1--",
            "not supported",
        ),
        (CT, b"--b1\r\nContent-Type: a/b\r\nContent-Transfer-Encoding: base64\r\n\r\n!!\r\n--b1--", "not valid base64"),
        (CT, b"--b1\r\nContent-Type: a/b\xff\r\n\r\nx\r\n--b1--", "not UTF-8"),
        (CT, b"--b1\r\nContent-Type: a/b\r\nX: " + b"y" * 5000 + b"\r\n\r\nx\r\n--b1--", "over 4 KiB"),
        (CT, b"".join(b"--b1\r\n\r\nx\r\n" for _ in range(MAX_PARTS + 2)) + b"--b1--", "more than 16 parts"),
    ],
)
def test_broken_bodies_are_refused(content_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        parse_multipart(content_type, body)


_PIECES = st.sampled_from(
    [
        b"--b1",
        b"--b1--",
        b"\r\n",
        b"\n",
        b"Content-Type: a/b",
        b"Content-ID: <x>",
        b"Content-Transfer-Encoding: base64",
        b"c: ",
        b" ",
        b"\xff",
        b"AAAA",
        b"--b",
        b":",
    ]
)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.binary(max_size=8)), max_size=20))
def test_parser_is_total(pieces: list[bytes]) -> None:
    with contextlib.suppress(SipError):
        for part in parse_multipart(CT, b"".join(pieces)):
            assert isinstance(part.data, bytes)
