"""The SLCAN codec: golden transcripts, round trips, garbage, and python-can as an independent peer."""

from __future__ import annotations

import codecs
import json
import os
import re
import select
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcu.errors import ProtocolError
from tcu.sources.slcan import (
    BITRATES,
    CanFrame,
    Close,
    Command,
    Error,
    GetSerialNumber,
    GetStatus,
    GetVersion,
    ListenOnly,
    Ok,
    Open,
    Response,
    SerialNumber,
    SetBitrate,
    SetTimestamps,
    SlcanStream,
    Status,
    Transmit,
    TransmitAck,
    Version,
    _data_frame,
    _parsed_frame,
    format_command,
    format_frame,
    format_response,
    parse_command,
    parse_frame,
    parse_response,
)

DATA = Path(__file__).parent.parent / "data" / "slcan"


def read_chunks(name: str) -> list[bytes]:
    """A transcript file: one chunk per line, escapes as in Python, `#` comments."""
    lines = (DATA / name).read_text("ascii").splitlines()
    return [codecs.escape_decode(line)[0] for line in lines if line and not line.startswith("#")]


def describe(item: Response | ProtocolError) -> dict[str, Any]:
    match item:
        case CanFrame():
            described: dict[str, Any] = {
                "frame": f"{item.can_id:08X}" if item.extended else f"{item.can_id:03X}",
                "data": item.data.hex().upper(),
                "ts": item.timestamp_ms,
            }
            if item.extended:
                described["extended"] = True
            if item.remote:
                described |= {"remote": True, "dlc": item.dlc}
            return described
        case Ok():
            return {"ok": True}
        case Error():
            return {"bel": True}
        case ProtocolError():
            return {"error": str(item)}
    raise AssertionError(item)


def test_golden_session_parses_as_recorded() -> None:
    stream = SlcanStream()
    items = [describe(item) for chunk in read_chunks("canable_z1_session.txt") for item in stream.feed(chunk)]
    expected = json.loads((DATA / "canable_z1_session.expected.json").read_text())
    assert len(items) == len(expected)
    for got, want in zip(items, expected, strict=True):
        if "error" in want:
            assert "error" in got, got
            assert want["error"] in got["error"]
        else:
            assert got == want
    assert stream.pending == b"t0C14B0"  # the partial line waits for more


def test_same_items_however_the_stream_is_chunked() -> None:
    whole = b"".join(read_chunks("canable_z1_session.txt"))
    at_once = [describe(i) for i in SlcanStream().feed(whole)]
    stream = SlcanStream()
    byte_by_byte = [describe(i) for b in whole for i in stream.feed(bytes([b]))]
    assert byte_by_byte == at_once


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (line.split("\t")[0], line.split("\t")[1])
        for line in (DATA / "host_commands.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ],
)
def test_host_commands(line: str, expected: str) -> None:
    if expected.startswith("error: "):
        with pytest.raises(ProtocolError, match=expected.removeprefix("error: ")):
            parse_command(line.encode())
        return
    command = parse_command(line.encode())
    assert format_command(command) == line.encode() + b"\r"
    match command:
        case SetBitrate(bitrate=bitrate):
            assert expected == f"SetBitrate {bitrate}"
        case SetTimestamps(enabled=enabled):
            assert expected == f"SetTimestamps {'on' if enabled else 'off'}"
        case Transmit(frame=frame):
            assert expected.startswith("Transmit ")
            assert f"{frame.can_id:X}" in expected
        case _:
            assert expected == type(command).__name__


def test_bitrates_are_lawicel_s0_to_s8() -> None:
    assert [format_command(SetBitrate(bitrate=b)) for b in BITRATES] == [f"S{n}\r".encode() for n in range(9)]
    with pytest.raises(ValueError, match="bitrate 83300"):
        SetBitrate(bitrate=83_300)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"can_id": 0x800}, "11-bit"),
        ({"can_id": 0x2000_0000, "extended": True}, "29-bit"),
        ({"can_id": 1, "data": bytes(9)}, "DLC 9"),
        ({"can_id": 1, "data": b"\x01", "remote": True}, "remote frame carries no data"),
        ({"can_id": 1, "data": b"\x01", "dlc": 2}, "does not match"),
        ({"can_id": 1, "timestamp_ms": 60_000}, "timestamp"),
    ],
)
def test_frame_validation(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        CanFrame(**kwargs)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"t", "truncated"),
        (b"T1234", "truncated"),
        (b"t12G4", "identifier '12G' is not 3 hex digits"),
        (b"t123X", "DLC 'X' is not a digit"),
        (b"t1232AABBCC", r"DLC 2 needs 4 hex digits of data \(\+4 for a timestamp\), got 6"),
        (b"t1232AAZZ", "non-hex"),
        (b"T200000000", "29-bit identifier 0x20000000 exceeds"),
        (b"B12340011", "CAN FD"),
    ],
)
def test_bad_frames_say_why(line: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_frame(line)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"V12", "malformed V reply"),
        (b"Nab-d", "malformed N reply"),
        (b"FZZ", "malformed F reply"),
        (b"Q", "unknown response type 'Q'"),
        (b"\x80\x81", "non-ASCII"),
    ],
)
def test_bad_responses_say_why(line: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_response(line)


def test_bel_in_the_middle_of_a_line_cuts_it() -> None:
    items = SlcanStream().feed(b"t0C1\x07t0C14AF120500\r")
    assert isinstance(items[0], ProtocolError)
    assert "truncated by an error reply" in str(items[0])
    assert isinstance(items[1], Error)
    assert items[2] == CanFrame(can_id=0xC1, data=bytes.fromhex("AF120500"))


def test_endless_line_is_dropped_not_buffered_forever() -> None:
    stream = SlcanStream()
    items = stream.feed(b"t" * 100)
    assert len(items) == 1
    assert "without CR, dropped" in str(items[0])
    assert stream.pending == b""
    assert stream.feed(b"t0C1100\r") == [CanFrame(can_id=0xC1, data=b"\x00")]


def test_crlf_clones_are_tolerated() -> None:
    assert SlcanStream().feed(b"t0C1100\r\n\r\n") == [CanFrame(can_id=0xC1, data=b"\x00"), Ok()]


def test_replies_round_trip() -> None:
    for response in (
        Ok(),
        Error(),
        Version(hardware=0x10, software=0x13),
        SerialNumber(serial="A0B1"),
        Status(flags=0x88),
        TransmitAck(extended=False),
        TransmitAck(extended=True),
    ):
        raw = format_response(response)
        assert SlcanStream().feed(raw) == [response]


def test_simple_commands_round_trip() -> None:
    commands: list[Command] = [Open(), ListenOnly(), Close(), GetVersion(), GetSerialNumber(), GetStatus()]
    for command in commands:
        assert parse_command(format_command(command).rstrip(b"\r")) == command


frames = st.builds(
    lambda extended, can_id, remote, data, dlc, stamp: CanFrame(
        can_id=can_id if extended else can_id & 0x7FF,
        extended=extended,
        remote=remote,
        data=b"" if remote else data,
        dlc=dlc if remote else len(data),
        timestamp_ms=stamp,
    ),
    st.booleans(),
    st.integers(0, 0x1FFF_FFFF),
    st.booleans(),
    st.binary(max_size=8),
    st.integers(0, 8),
    st.none() | st.integers(0, 59_999),
)


@given(frames)
def test_any_frame_round_trips(frame: CanFrame) -> None:
    raw = format_frame(frame)
    assert raw.endswith(b"\r")
    assert parse_frame(raw[:-1]) == frame


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_garbage_never_raises_only_reports(chunks: list[bytes]) -> None:
    stream = SlcanStream()
    for chunk in chunks:
        for item in stream.feed(chunk):
            assert isinstance(item, (CanFrame, Ok, Error, Version, SerialNumber, Status, TransmitAck, ProtocolError))
    assert len(stream.pending) <= 30


# --- python-can as an independent peer, over a real pty pair ---------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        os.close(master)
        os.close(slave)


def read_lines(fd: int, count: int, timeout: float = 5.0) -> list[bytes]:
    buffer = b""
    while buffer.count(b"\r") < count:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"python-can sent {buffer!r}, expected {count} lines"
        buffer += os.read(fd, 1024)
    return buffer.split(b"\r")[:count]


def test_python_can_understands_our_frames_and_we_understand_its_commands(pty_pair: tuple[int, str]) -> None:
    can = pytest.importorskip("can")
    master, path = pty_pair
    bus = can.Bus(interface="slcan", channel=path, bitrate=500_000, sleep_after_open=0)
    try:
        # python-can opens with C, S6, an empty line (no CAN FD data rate), O.
        opened = [line for line in read_lines(master, 4) if line]
        assert [parse_command(line) for line in opened] == [Close(), SetBitrate(bitrate=500_000), Open()]

        sent = [
            CanFrame(can_id=0x0C1, data=bytes.fromhex("AF120500")),
            CanFrame(can_id=0x18DAF110, extended=True, data=bytes.fromhex("0210030000000000")),
            CanFrame(can_id=0x7DF, remote=True, dlc=8),
            CanFrame(can_id=0x000, data=b""),
        ]
        os.write(master, b"".join(format_frame(frame) for frame in sent))
        for frame in sent:
            message = bus.recv(timeout=5)
            assert message is not None
            assert message.arbitration_id == frame.can_id
            assert message.is_extended_id == frame.extended
            assert message.is_remote_frame == frame.remote
            assert message.dlc == frame.dlc
            assert bytes(message.data) == frame.data

        bus.send(can.Message(arbitration_id=0x123, data=b"\xde\xad", is_extended_id=False))
        bus.send(can.Message(arbitration_id=0x1ABCDEF0, data=b"", is_extended_id=True))
        bus.send(can.Message(arbitration_id=0x7E0, is_remote_frame=True, dlc=3, is_extended_id=False))
        received = [parse_command(line) for line in read_lines(master, 3)]
        assert received == [
            Transmit(frame=CanFrame(can_id=0x123, data=b"\xde\xad")),
            Transmit(frame=CanFrame(can_id=0x1ABCDEF0, extended=True)),
            Transmit(frame=CanFrame(can_id=0x7E0, remote=True, dlc=3)),
        ]
    finally:
        bus.shutdown()


def _spoiled(line: bytes, at: int, char: bytes) -> bytes:
    return line[:at] + char + line[at + 1 :] if at < len(line) else line + char


# Valid frame lines, some with one character spoiled, some cut short or grown, plus lines made of the
# characters a slicing parser could mistake for hex (`int(x, 16)` takes "+", " ", "_").
_near_frame_lines = st.one_of(
    st.builds(
        _spoiled,
        frames.map(lambda frame: format_frame(frame)[:-1]),
        st.integers(0, 30),
        st.sampled_from([b"", b"0", b"8", b"9", b"F", b"f", b"g", b" ", b"+", b"_", b"-", b"\x07", b"\xff"]),
    ),
    st.builds(
        lambda kind, body: kind + body,
        st.sampled_from([b"t", b"T", b"r", b"R"]),
        st.text("0123456789abcdefABCDEF +_-", max_size=28).map(str.encode),
    ),
)


@given(_near_frame_lines)
def test_the_slicing_fast_path_agrees_with_the_frame_pattern(line: bytes) -> None:
    """`_data_frame` (slices, for speed) builds exactly the frame the pattern parser builds, or leaves the
    line to it, so every rejection keeps its precise reason."""
    try:
        expected: CanFrame | str = _parsed_frame(line)
    except ProtocolError as exc:
        expected = str(exc)
    fast = _data_frame(line)
    if isinstance(expected, str):
        assert fast is None
        with pytest.raises(ProtocolError, match=re.escape(expected)):
            parse_frame(line)
    else:
        assert fast is None or fast == expected
        assert parse_frame(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"t0C1+AF12", "DLC '+' is not a digit"),
        (b"t0C12AF 2", "data 'AF 2' contains non-hex characters"),
        (b"t_C12AF12", "identifier '_C1' is not 3 hex digits"),
        (b"t0C19AF12", "DLC 9 exceeds 8"),
        (b"t8001AF", "11-bit identifier 0x800 exceeds 0x7FF"),
        (b"t0C11AFEA60", "timestamp 60000 ms exceeds 59999"),
        (b"t0C12AF1", "DLC 2 needs 4 hex digits of data (+4 for a timestamp), got 3"),
    ],
)
def test_lines_that_only_look_like_frames_are_rejected_with_the_reason(line: bytes, reason: str) -> None:
    (item,) = SlcanStream().feed(line + b"\r")
    assert isinstance(item, ProtocolError)
    assert reason in str(item)
