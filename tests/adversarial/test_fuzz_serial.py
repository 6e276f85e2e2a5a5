"""Total boundaries of the serial codecs: any bytes in, a value or the package's own error out.

Each decoder is fed arbitrary input and near-valid input (a valid line with one part broken: wrong
length, non-hex digit, NaN, a latitude past 90°, a huge declared length ...). The only exceptions
allowed to escape are `TcuError` subclasses; a value that comes out must be usable (finite numbers,
coordinates within range). Streams must not hold on to a megabyte line.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcu.errors import AdapterStatusError, ProtocolError, TcuError
from tcu.sources import elm327, obd_pids
from tcu.sources.elm327_frames import HeaderFormat, reassemble
from tcu.sources.modem import (
    PROFILES,
    AtParser,
    Garbage,
    Response,
    SignalQuality,
    Urc,
    parse_cecall,
    parse_cpin,
    parse_csq,
    parse_registration_read,
    parse_registration_urc,
)
from tcu.sources.nmea import Gga, Gsa, NmeaStream, Rmc, Vtg, checksum, parse_sentence
from tcu.sources.nmea_fix import GnssInterpreter
from tcu.sources.nmea_track import GnssTrack
from tcu.sources.slcan import (
    CanFrame,
    SlcanStream,
    format_frame,
    parse_command,
    parse_frame,
    parse_response,
)
from tcu.sources.slcan_signals import CanSignalDecoder
from tcu.vehicle.state import Signal

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MEGABYTE = 1 << 20
T = TypeVar("T")

# Field texts an attacker (or a noisy line) would try, mixed with plausible ones.
NASTY_NUMBERS = (
    "",
    "0",
    "-0",
    "1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e999",
    "-1e999",
    "1_0",
    "0x10",
    " 1",
    "²",
    "٣",
    "9" * 5000,
    "1" * 20,
    "4807.038",
    "9000.0000",
    "9100.0000",
    "8959.9999",
    "18000.0000",
    "18100.0000",
    "01131.000",
    "12345",
    "123519",
    "235960",
    "240000",
    "230394",
    "311299",
    "290200",
    "000000",
    "999999",
    "1.5",
    "0.9",
    "545.4",
    "084.4",
    "360.0",
    "360.1",
    "-1",
    "A",
    "V",
    "M",
    "N",
    "S",
    "E",
    "W",
    "T",
    "K",
)
HEX = "0123456789ABCDEF"


def hex_text(min_size: int = 0, max_size: int = 24) -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=min_size, max_size=max_size)


# --- SLCAN -------------------------------------------------------------------------------------------


@st.composite
def near_valid_slcan(draw: st.DrawFn) -> bytes:
    """A frame line with each part drawn from valid and broken values."""
    kind = draw(st.sampled_from(b"tTrRdDbBzZVNFS"))
    ident = draw(st.one_of(hex_text(0, 10), st.text("0123456789abcdefGXZ:;\x00\xff", max_size=10)))
    dlc = draw(st.sampled_from(["0", "1", "4", "8", "9", "F", ":", "", "-"]))
    data = draw(st.one_of(hex_text(0, 40), st.text(HEX + "g \x07", max_size=40)))
    stamp = draw(st.sampled_from(["", "0000", "EA5F", "EA60", "FFFF", "FFF", "FFFFF"]))
    return bytes([kind]) + (ident + dlc + data + stamp).encode("latin-1")


def outcome(call: Callable[..., T], *args: object) -> T | TcuError:
    """What `call` returned, or the package error it raised; anything else escapes and fails the test."""
    try:
        return call(*args)
    except TcuError as exc:
        return exc


def check_slcan_result(parse: Callable[[bytes], object], line: bytes) -> None:
    result = outcome(parse, line)
    if isinstance(result, TcuError):
        assert isinstance(result, ProtocolError)
        assert str(result), "a rejection names its reason"
    elif isinstance(result, CanFrame):
        # What was accepted is a frame the protocol allows, and it reads back the same.
        assert parse_frame(format_frame(result).rstrip(b"\r")) == result


@FUZZ
@given(st.one_of(st.binary(max_size=64), near_valid_slcan()))
def test_slcan_lines_decode_to_a_value_or_a_protocol_error(line: bytes) -> None:
    check_slcan_result(parse_response, line)
    check_slcan_result(parse_frame, line)
    check_slcan_result(parse_command, line)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=80), near_valid_slcan().map(lambda b: b + b"\r")), max_size=12))
def test_slcan_stream_turns_any_byte_stream_into_values_and_reasons(chunks: list[bytes]) -> None:
    stream = SlcanStream()
    for chunk in chunks:
        for item in stream.feed(chunk):
            assert not isinstance(item, Exception) or isinstance(item, ProtocolError)
        assert len(stream.pending) <= 30, "an unfinished line is bounded"


def test_slcan_stream_drops_a_megabyte_line_quickly() -> None:
    stream = SlcanStream()
    start = time.perf_counter()
    out = [item for _ in range(16) for item in stream.feed(b"t123" * (MEGABYTE // 64))]
    assert len(out) == 16, "each chunk without CR is dropped with its reason"
    assert all(isinstance(item, ProtocolError) and "without CR" in str(item) for item in out)
    assert stream.feed(b"t12") == []
    assert stream.feed(b"30\r") == [CanFrame(can_id=0x123)], "the next line is whole again"
    assert time.perf_counter() - start < 2.0


DECODER = CanSignalDecoder.from_files()
KNOWN_IDS = sorted(DECODER.frame_ids)


@st.composite
def can_frames(draw: st.DrawFn) -> CanFrame:
    extended = draw(st.booleans())
    limit = 0x1FFF_FFFF if extended else 0x7FF
    key = draw(st.sampled_from(KNOWN_IDS))
    can_id = draw(st.one_of(st.just(key & 0x7FFF_FFFF), st.integers(0, limit)))
    if can_id > limit:
        can_id = draw(st.integers(0, limit))
    if draw(st.booleans()):
        dlc = draw(st.integers(0, 8))
        return CanFrame(can_id=can_id, extended=extended, remote=True, dlc=dlc)
    return CanFrame(can_id=can_id, extended=extended, data=draw(st.binary(max_size=8)))


@FUZZ
@given(st.lists(can_frames(), min_size=1, max_size=8))
def test_dbc_decoding_of_any_frame_gives_signals_or_a_protocol_error(frames: list[CanFrame]) -> None:
    for frame in frames:
        signals = outcome(DECODER.decode, frame, NOW)
        if isinstance(signals, TcuError):
            assert isinstance(signals, ProtocolError)
            assert "needs" in str(signals)
            continue
        for signal in signals:
            assert isinstance(signal, Signal)
            assert not isinstance(signal.value, float) or math.isfinite(signal.value)


# --- NMEA --------------------------------------------------------------------------------------------


def framed(body: str) -> str:
    return f"${body}*{checksum(body):02X}"


@st.composite
def near_valid_nmea(draw: st.DrawFn) -> str:
    """A sentence of a type we parse, with fields drawn from the nasty list, mostly with a good checksum."""
    talker = draw(st.sampled_from(["GP", "GN", "GL", "gp", "G", "P", ""]))
    kind = draw(st.sampled_from(["GGA", "RMC", "VTG", "GSA", "GSV", "GL", "XYZ"]))
    fields = draw(st.lists(st.sampled_from(NASTY_NUMBERS), min_size=0, max_size=20))
    body = ",".join([talker + kind, *fields])
    line = framed(body)
    mangle = draw(st.sampled_from(["none", "none", "none", "checksum", "cut", "star", "noise"]))
    if mangle == "checksum":
        line = line[:-2] + draw(st.sampled_from(["00", "G0", "0", "000", ""]))
    elif mangle == "cut":
        line = line[: draw(st.integers(0, len(line)))]
    elif mangle == "star":
        line = line.replace("*", draw(st.sampled_from(["", "**", ",*"])))
    elif mangle == "noise":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.text(max_size=4)) + line[at:]
    return line


def check_sentence(sentence: object) -> None:
    """A sentence that parsed carries only usable values."""
    numbers: list[float | None] = []
    if isinstance(sentence, Gga):
        numbers = [sentence.latitude, sentence.longitude, sentence.hdop, sentence.altitude_m]
        assert 0 <= sentence.quality <= 8
    elif isinstance(sentence, Rmc):
        numbers = [sentence.latitude, sentence.longitude, sentence.speed_kmh, sentence.course_deg]
        assert sentence.timestamp is None or sentence.timestamp.year <= 2079
    elif isinstance(sentence, Vtg):
        numbers = [sentence.course_deg, sentence.speed_kmh]
    elif isinstance(sentence, Gsa):
        numbers = [sentence.pdop, sentence.hdop, sentence.vdop]
        assert sentence.fix_type in (1, 2, 3)
    for number in numbers:
        assert number is None or math.isfinite(number), f"{number} in {sentence}"
    if isinstance(sentence, Gga | Rmc):
        assert sentence.latitude is None or -90 <= sentence.latitude <= 90
        assert sentence.longitude is None or -180 <= sentence.longitude <= 180


@FUZZ
@given(st.one_of(st.text(max_size=100), near_valid_nmea()))
def test_nmea_sentences_parse_to_a_value_or_a_protocol_error(line: str) -> None:
    sentence = outcome(parse_sentence, line)
    if isinstance(sentence, TcuError):
        assert isinstance(sentence, ProtocolError)
        assert str(sentence)
    else:
        check_sentence(sentence)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=100), near_valid_nmea().map(lambda s: s.encode("utf-8") + b"\r\n"))))
def test_nmea_stream_and_interpreter_survive_any_byte_stream(chunks: list[bytes]) -> None:
    stream = NmeaStream()
    interpreter = GnssInterpreter(GnssTrack())
    for chunk in chunks:
        for item in stream.feed(chunk):
            if isinstance(item, Exception):
                assert isinstance(item, ProtocolError)
                continue
            check_sentence(item)
            for value in interpreter.interpret(item).values():
                assert not isinstance(value, float) or math.isfinite(value)


def test_nmea_stream_refuses_a_megabyte_line_without_parsing_it() -> None:
    body = "GPGGA," + "1" * MEGABYTE
    start = time.perf_counter()
    out = NmeaStream().feed(framed(body).encode() + b"\r\n" + framed("GPVTG,084.4,T,,M,0.1,N,0.2,K").encode() + b"\n")
    assert time.perf_counter() - start < 0.5
    assert isinstance(out[0], ProtocolError)
    assert "longer than any sentence" in str(out[0])
    assert isinstance(out[1], Vtg)


NMEA_CASE_IDS = (
    "nan",
    "inf",
    "1e999",
    "NaN-speed",
    "underscore",
    "latitude>90",
    "31-feb",
    "superscript",
    "arabic-indic",
    "4300-digit-limit",
    "overflow-to-inf",
)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,nan,545.4,M,46.9,M,,", "HDOP 'nan' is not a number"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,inf,M,46.9,M,,", "altitude 'inf' is not a number"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,1e999,M,46.9,M,,", "altitude '1e999' is not a number"),
        ("GPRMC,123519,A,4807.038,N,01131.000,E,NaN,084.4,230394,003.1,W", "speed 'NaN' is not a number"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,1_0,545.4,M,46.9,M,,", "HDOP '1_0' is not a number"),
        ("GPGGA,123519,9100.000,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "latitude '9100.000' out of range"),
        ("GPRMC,123519,A,4807.038,N,01131.000,E,0.1,084.4,310299,003.1,W", "date '310299' is not a calendar date"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,\u00b2,0.9,545.4,M,46.9,M,,", "satellites '\u00b2' is not a whole"),
        ("GPGGA,1\u0663\u06635\u00b29,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "is not hhmmss"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1," + "9" * 5000 + ",0.9,545.4,M,46.9,M,,", "has 5000 digits"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9," + "9" * 400 + ",M,46.9,M,,", "is not a finite number"),
    ],
    ids=NMEA_CASE_IDS,
)
def test_nmea_rejections_name_the_field(body: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as rejected:
        parse_sentence(framed(body))
    assert reason in str(rejected.value)


def test_nmea_stream_refuses_non_ascii_and_overlong_lines_before_parsing() -> None:
    lines = [framed("GPGGA,123519,4807.038,N,01131.000,E,1,\u00b2,0.9,545.4,M,46.9,M,,"), framed("GPGGA," + "1" * 200)]
    out = NmeaStream().feed("\r\n".join(lines).encode() + b"\r\n")
    assert [type(item) for item in out] == [ProtocolError, ProtocolError]
    assert "non-ASCII bytes" in str(out[0])
    assert "longer than any sentence" in str(out[1])


# --- ELM327 / OBD ------------------------------------------------------------------------------------


def hex_bytes_text(data: bytes) -> str:
    return " ".join(f"{b:02X}" for b in data)


@st.composite
def isotp_line(draw: st.DrawFn) -> str:
    """One data line as an adapter prints it: a header (maybe), a PCI byte (maybe lying), data."""
    header = draw(st.sampled_from(["", "7E8 ", "7E9 ", "18 DA F1 10 ", "48 6B 10 ", "7E", "0: ", "1: ", "F: "]))
    pci = draw(
        st.one_of(
            st.integers(0, 0xFF).map(lambda b: f"{b:02X}"),
            st.sampled_from(["10 00", "1F FF", "10 01", "00 FF", "21", "22", "2F", "30", "41", "7F"]),
        )
    )
    data = draw(st.binary(max_size=8))
    odd = draw(st.sampled_from(["", "", "", "A", "0A 0", "ZZ", ":"]))
    return f"{header}{pci} {hex_bytes_text(data)}{odd}".strip()


ELM_STATUS_LINES = (
    "NO DATA",
    "?",
    "SEARCHING...",
    "BUS INIT: ...ERROR",
    "CAN ERROR",
    "ERR94",
    "STOPPED",
    "<DATA ERROR",
    "7E8 04 41 0C <RX ERROR",
    "BUFFER FULL",
    "014",
    "FFF",
    "000",
    "ELM327 v1.5",
)


@st.composite
def elm_reply(draw: st.DrawFn) -> bytes:
    status = st.sampled_from(ELM_STATUS_LINES)
    lines = draw(st.lists(st.one_of(isotp_line(), status, st.text(max_size=20)), max_size=10))
    raw = "\r".join(lines).encode("utf-8", "replace")
    return draw(st.sampled_from([b"", b"0100\r", b"\x00"])) + raw + draw(st.sampled_from([b"", b"\r\r>", b">"]))


OBD_DECODERS = (
    lambda p: obd_pids.decode_mode01(p, p[1] if len(p) > 1 else 0x0C),
    obd_pids.decode_supported,
    obd_pids.decode_vin,
    obd_pids.decode_dtcs,
)


def check_obd_payload(payload: bytes) -> None:
    for decode in OBD_DECODERS:
        value = outcome(decode, payload)
        assert not isinstance(value, TcuError) or isinstance(value, ProtocolError)
        assert not isinstance(value, float) or math.isfinite(value)


@FUZZ
@given(st.one_of(st.binary(max_size=200), elm_reply()), st.sampled_from(list(HeaderFormat)))
def test_elm327_replies_parse_to_messages_statuses_and_problems(raw: bytes, headers: HeaderFormat) -> None:
    reply = elm327.parse_reply(raw, command="0100", headers=headers)
    status = outcome(reply.raise_for_status)
    assert status is None or (isinstance(status, AdapterStatusError | ProtocolError) and str(status))
    for message in reply.messages:
        assert len(message.payload) <= 0xFFF
        check_obd_payload(message.payload)
    lines = outcome(lambda: elm327.parse_at_reply(raw, command="ATDPN"))
    assert isinstance(lines, tuple | AdapterStatusError)


@FUZZ
@given(st.lists(isotp_line(), max_size=12), st.sampled_from(list(HeaderFormat)))
def test_isotp_reassembly_of_lying_frames_reports_problems(lines: list[str], headers: HeaderFormat) -> None:
    messages, problems = reassemble(lines, headers)
    for _, payload in messages:
        assert isinstance(payload, bytes)
        assert len(payload) <= 0xFFF
    assert all(isinstance(p, str) and p for p in problems)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["7E8 10 00 41 0C 1A", "7E8 21 F8 00 00 00 00 00"], "first frame announces 0 bytes"),
        (["7E8 10 05 41 0C 1A F8 00 00", "7E8 21 00"], "first frame announces 5 bytes"),
        (["7E8 10 14 49 02 01 57 50 30", "7E8 23 5A 5A"], "consecutive frame 3 arrived where 1 was expected"),
        (["7E8 1F FF 49 02 01 57 50 30"], "announced 4095 bytes but only 6 arrived"),
    ],
)
def test_isotp_lies_are_named(lines: list[str], problem: str) -> None:
    messages, problems = reassemble(lines, HeaderFormat.CAN_11)
    assert messages == []
    assert any(problem in p for p in problems), problems


@FUZZ
@given(st.one_of(st.text(max_size=40), st.sampled_from(["A6", "6", "\u0663", "A\u0666", "0_6", "+6", "-0", " A6 "])))
def test_elm327_small_parsers_take_any_text(text: str) -> None:
    elm327.classify_status(text)
    elm327.parse_banner(text)
    report = outcome(elm327.parse_protocol_number, text)
    if not isinstance(report, TcuError):
        assert re.fullmatch(r"A?[0-9A-C]", text.strip().upper()), f"{text!r} read as protocol {report.protocol}"
    else:
        assert isinstance(report, ProtocolError)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_prompt_framer_bounds_what_it_holds(chunks: list[bytes]) -> None:
    framer = elm327.PromptFramer(limit=256)
    for chunk in chunks:
        framer.feed(chunk)
    assert len(framer.take_partial()) <= 256


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=24),
        st.tuples(st.sampled_from([0x41, 0x43, 0x49, 0x7F]), st.integers(0, 0xFF), st.binary(max_size=20)).map(
            lambda t: bytes(t[:2]) + t[2]
        ),
    ),
    st.integers(-1, 0x1FF),
)
def test_obd_pid_decoders_take_any_byte_count(payload: bytes, pid: int) -> None:
    check_obd_payload(payload)
    value = outcome(obd_pids.decode_mode01, payload, pid)
    assert isinstance(value, float | ProtocolError)


# --- modem AT ---------------------------------------------------------------------------------------


AT_HEADS = (
    "+CME ERROR: ",
    "+CMS ERROR: ",
    "+CREG: ",
    "+CSQ: ",
    "+CPIN: ",
    "+CECALL: ",
    "+CECALLIND: ",
    "+UUECALLSTAT: ",
    "OK",
    "ERROR",
    "RING",
    "NO CARRIER",
    "+",
    "+1: ",
)


@st.composite
def at_line(draw: st.DrawFn) -> bytes:
    head = draw(st.sampled_from(AT_HEADS))
    tail = draw(st.one_of(st.sampled_from(NASTY_NUMBERS), st.text(max_size=12)))
    return (head + tail).encode("utf-8", "replace") + draw(st.sampled_from([b"\r\n", b"\r", b"\n", b""]))


@FUZZ
@given(
    st.lists(st.one_of(st.binary(max_size=64), at_line()), max_size=12),
    st.sampled_from([None, "AT+CREG?", "AT+CSQ", "ATD112;", "AT+CPIN?"]),
)
def test_at_parser_sorts_any_byte_stream(chunks: list[bytes], command: str | None) -> None:
    parser = AtParser(max_line=256)
    if command is not None:
        parser.command(command)
    for chunk in chunks:
        for item in parser.feed(chunk):
            assert isinstance(item, Response | Urc | Garbage)
            if isinstance(item, Urc):
                for profile in PROFILES.values():
                    profile.indication(item)
            if isinstance(item, Response) and command is not None:
                for value in item.values(command[2:].split("?")[0].split("=")[0]):
                    check_at_payload(value)


def check_at_payload(value: str) -> None:
    parse_cpin(value)
    parse_registration_read(value)
    parse_registration_urc(value)
    assert isinstance(parse_csq(value), SignalQuality)
    parse_cecall(value)


@FUZZ
@given(st.one_of(st.text(max_size=30), st.sampled_from(NASTY_NUMBERS), st.sampled_from(NASTY_NUMBERS).map(",".join)))
def test_at_payload_parsers_take_any_text(value: str) -> None:
    check_at_payload(value)


def test_a_huge_cme_code_is_garbage_not_a_crash() -> None:
    parser = AtParser()
    parser.command("AT+CECALL=2")
    out = parser.feed(b"+CME ERROR: " + b"9" * 5000 + b"\r\nOK\r\n")
    assert isinstance(out[0], Garbage)
    assert isinstance(out[1], Response)
    assert out[1].ok
