"""ELM327 reply parsing and OBD-II payload decoding against golden transcripts, plus properties."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcu.errors import AdapterStatusError, ProtocolError
from tcu.sources import obd_pids
from tcu.sources.elm327 import (
    AdapterStatus,
    ObdProtocol,
    PromptFramer,
    classify_status,
    format_command,
    obd_request,
    parse_at_reply,
    parse_banner,
    parse_protocol_number,
    parse_reply,
    reply_lines,
)
from tcu.sources.elm327_frames import HeaderFormat

DATA = Path(__file__).parents[1] / "data" / "elm327"


def _cases() -> list[Any]:
    cases = []
    for path in sorted(DATA.glob("replies_*.toml")):
        for case in tomllib.loads(path.read_text("utf-8"))["case"]:
            cases.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return cases


def _raw(case: dict[str, Any]) -> bytes:
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"])
    return str(case["raw"]).encode("latin-1")


@pytest.mark.parametrize("case", _cases())
def test_golden_reply(case: dict[str, Any]) -> None:
    reply = parse_reply(_raw(case), command=case["command"], headers=HeaderFormat(case["headers"]))

    expected = [(ecu or None, bytes.fromhex(payload)) for ecu, payload in case.get("messages", [])]
    assert [(m.ecu, m.payload) for m in reply.messages] == expected
    assert [s.status.value for s in reply.statuses] == case.get("statuses", [])
    assert len(reply.problems) == len(case.get("problems", []))
    for problem, wanted in zip(reply.problems, case.get("problems", []), strict=True):
        assert wanted in problem
    assert reply.echoed == case.get("echoed", False)
    assert reply.searched == case.get("searched", False)

    raises = case.get("raises")
    if raises is None:
        reply.raise_for_status()
    elif raises == "ProtocolError":
        with pytest.raises(ProtocolError, match=case["command"]):
            reply.raise_for_status()
    else:
        with pytest.raises(AdapterStatusError) as info:
            reply.raise_for_status()
        assert info.value.status == raises
        assert info.value.command == case["command"]
        assert case["command"] in str(info.value)

    if not reply.messages:
        return
    first = reply.messages[0].payload
    if "pid" in case:
        assert obd_pids.decode_mode01(first, case["pid"]["pid"]) == pytest.approx(case["pid"]["value"])
    if "vin" in case:
        assert obd_pids.decode_vin(first) == case["vin"]
    if "supported" in case:
        union = frozenset().union(*(obd_pids.decode_supported(m.payload) for m in reply.messages))
        assert union == frozenset(case["supported"])
    if "dtcs" in case:
        for message, wanted in zip(reply.messages, case["dtcs"], strict=True):
            dtcs = obd_pids.decode_dtcs(message.payload)
            assert list(dtcs.codes) == wanted["codes"]
            assert dtcs.declared_count == (None if wanted["declared"] < 0 else wanted["declared"])
    if "decode_error" in case:
        command = case["command"]
        with pytest.raises(ProtocolError, match=re.escape(case["decode_error"])):
            _decode_as_asked(first, command)


def _decode_as_asked(payload: bytes, command: str) -> object:
    if command == "0902":
        return obd_pids.decode_vin(payload)
    return obd_pids.decode_mode01(payload, int(command[2:], 16))


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("41 0C 1A F8", None),
        ("7E8064100BE3FA813", None),
        ("0: 49 02 01 31 47 31", None),
        ("SEARCHING...", AdapterStatus.SEARCHING),
        ("searching...", AdapterStatus.SEARCHING),
        ("NO DATA", AdapterStatus.NO_DATA),
        ("?", AdapterStatus.UNKNOWN_COMMAND),
        ("BUS INIT: ...ERROR", AdapterStatus.BUS_INIT_ERROR),
        ("BUS INIT: ...OK", AdapterStatus.BUS_INIT),
        ("ERR94", AdapterStatus.INTERNAL_ERROR),
        ("FB ERROR", AdapterStatus.FB_ERROR),
        ("ACT ALERT", AdapterStatus.ACT_ALERT),
        ("ELM327 v1.5", AdapterStatus.UNKNOWN),
        ("OK", AdapterStatus.UNKNOWN),
        ("4?0C", AdapterStatus.UNKNOWN),
    ],
)
def test_classify_status(line: str, status: AdapterStatus | None) -> None:
    assert classify_status(line) is status


def test_prompt_framer_splits_a_stream_and_keeps_the_partial_reply() -> None:
    framer = PromptFramer()
    assert framer.feed(b"41 0C 1A") == []
    assert framer.feed(b" F8\r\r>NO DA") == [b"41 0C 1A F8\r\r"]
    assert framer.feed(b"TA\r\r>OK\r\r>7E8") == [b"NO DATA\r\r", b"OK\r\r"]
    assert framer.take_partial() == b"7E8"
    assert framer.take_partial() == b""


def test_prompt_framer_bounds_a_device_that_never_prompts() -> None:
    framer = PromptFramer(limit=16)
    framer.feed(b"x" * 100)
    assert len(framer.take_partial()) == 16


def test_reply_lines_drop_echo_nuls_and_blank_lines() -> None:
    assert reply_lines(b"ATE0\r\nOK\r\n\r\n>", "AT E0") == ("OK",)
    assert reply_lines(b"\x00OK\r\r>", "ATL0") == ("OK",)
    assert reply_lines(b"\r\r>") == ()


def test_at_reply_raises_on_question_mark_with_the_command() -> None:
    assert parse_at_reply(b"OK\r\r", command="ATH1") == ("OK",)
    with pytest.raises(AdapterStatusError, match="ATXX") as info:
        parse_at_reply(b"?\r\r", command="ATXX")
    assert info.value.status == "?"


@pytest.mark.parametrize(
    ("text", "protocol", "auto"),
    [
        ("A6", ObdProtocol.ISO_15765_4_CAN_11_500, True),
        ("7", ObdProtocol.ISO_15765_4_CAN_29_500, False),
        ("A3", ObdProtocol.ISO_9141_2, True),
        ("A", ObdProtocol.SAE_J1939_CAN_29_250, False),
        (" a0 ", ObdProtocol.AUTO, True),
    ],
)
def test_protocol_number(text: str, protocol: ObdProtocol, auto: bool) -> None:
    report = parse_protocol_number(text)
    assert (report.protocol, report.auto) == (protocol, auto)


def test_protocol_number_rejects_nonsense() -> None:
    with pytest.raises(ProtocolError, match="ATDPN answered 'XY'"):
        parse_protocol_number("XY")


def test_header_format_per_protocol() -> None:
    assert ObdProtocol.ISO_15765_4_CAN_11_250.header_format is HeaderFormat.CAN_11
    assert ObdProtocol.ISO_15765_4_CAN_29_250.header_format is HeaderFormat.CAN_29
    assert ObdProtocol.SAE_J1939_CAN_29_250.header_format is HeaderFormat.CAN_29
    assert ObdProtocol.USER2_CAN_11_50.header_format is HeaderFormat.CAN_11
    assert ObdProtocol.ISO_14230_4_KWP_FAST.header_format is HeaderFormat.LEGACY


def test_banner() -> None:
    assert parse_banner("ATZ\r\r\rELM327 v1.5\r\r") == "1.5"
    assert parse_banner("\ufffd\ufffdELM327 v2.1") == "2.1"
    assert parse_banner("OK") is None


def test_format_command() -> None:
    assert format_command("at z") == b"ATZ\r"
    assert format_command(obd_request(1, 0x0C)) == b"010C\r"
    assert obd_request(3) == "03"
    with pytest.raises(ValueError, match="not an ELM327 command"):
        format_command("01 0C >")
    with pytest.raises(ValueError, match="not an ELM327 command"):
        format_command("  ")


# -- obd_pids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pid", sorted(obd_pids.PIDS))
@given(fraction=st.floats(min_value=0.0, max_value=1.0))
def test_every_pid_round_trips_within_its_resolution(pid: int, fraction: float) -> None:
    spec = obd_pids.PIDS[pid]
    top = ((1 << (8 * spec.size)) - 1) * spec.scale + spec.offset
    value = spec.offset + (top - spec.offset) * fraction
    decoded = obd_pids.decode_mode01(obd_pids.encode_mode01(pid, value), pid)
    assert abs(decoded - value) <= spec.resolution / 2 + 1e-6


def test_encode_clamps_to_the_pid_range() -> None:
    assert obd_pids.encode_mode01(0x0D, 300.0) == bytes.fromhex("410DFF")
    assert obd_pids.encode_mode01(0x05, -60.0) == bytes.fromhex("410500")


def test_decode_short_data_names_the_pid() -> None:
    with pytest.raises(ProtocolError, match=r"PID 010C \(engine speed\) carries 1 data byte\(s\), expected 2"):
        obd_pids.decode_mode01(bytes.fromhex("410C1A"), 0x0C)


def test_unknown_pid_says_where_to_add_it() -> None:
    with pytest.raises(ProtocolError, match="no formula for PID 01FE"):
        obd_pids.decode_mode01(bytes.fromhex("41FE00"), 0xFE)


@given(st.sets(st.integers(min_value=1, max_value=0xE0), max_size=40), st.sampled_from([0x00, 0x20, 0x40]))
def test_supported_bitmap_round_trips(pids: set[int], base: int) -> None:
    decoded = obd_pids.decode_supported(obd_pids.encode_supported(base, pids))
    in_range = {p for p in pids if base < p <= base + 0x20}
    assert decoded - {base + 0x20} == in_range - {base + 0x20}
    assert (base + 0x20 in decoded) == any(p >= base + 0x20 for p in pids)


def test_supported_bitmap_rejects_a_non_bitmap_pid() -> None:
    with pytest.raises(ProtocolError, match="010C is not a supported-PID bitmap"):
        obd_pids.decode_supported(bytes.fromhex("410C1AF80000"))


_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


@given(st.text(alphabet=_VIN_CHARS, min_size=17, max_size=17))
def test_vin_round_trips_even_with_trailing_digits(vin: str) -> None:
    assert obd_pids.decode_vin(obd_pids.encode_vin(vin)) == vin


def test_vin_with_nul_padding_and_invalid_letters() -> None:
    padded = bytes.fromhex("490201") + b"\x00\x00" + b"1G1JC5444R7252367"
    assert obd_pids.decode_vin(padded[:3] + padded[5:]) == "1G1JC5444R7252367"
    with pytest.raises(ProtocolError, match="no I, O, Q"):
        obd_pids.decode_vin(bytes.fromhex("490201") + b"1G1JC5444O7252367")
    with pytest.raises(ValueError, match="no I, O, Q"):
        obd_pids.encode_vin("SHORT")


@given(
    st.lists(
        st.tuples(st.sampled_from("PCBU"), st.integers(0, 3), st.integers(0, 0xFFF)).filter(lambda t: t != ("P", 0, 0)),
        max_size=20,
    )
)
def test_dtcs_round_trip(parts: list[tuple[str, int, int]]) -> None:
    codes = [f"{letter}{digit}{rest:03X}" for letter, digit, rest in parts]
    decoded = obd_pids.decode_dtcs(obd_pids.encode_dtcs(codes))
    assert list(decoded.codes) == codes
    assert decoded.declared_count == len(codes)


def test_dtc_letters() -> None:
    assert obd_pids.format_dtc(0x01, 0x43) == "P0143"
    assert obd_pids.format_dtc(0x41, 0x23) == "C0123"
    assert obd_pids.format_dtc(0x81, 0x23) == "B0123"
    assert obd_pids.format_dtc(0xF2, 0x34) == "U3234"
    assert obd_pids.parse_dtc("U3234") == bytes.fromhex("F234")
    with pytest.raises(ValueError, match="P/C/B/U"):
        obd_pids.parse_dtc("X0143")


def test_dtc_count_mismatch_is_reported() -> None:
    with pytest.raises(ProtocolError, match="declares 3 DTC"):
        obd_pids.decode_dtcs(bytes.fromhex("43030143C196"))


def test_pid_spec_validation() -> None:
    with pytest.raises(ValueError, match="one byte"):
        obd_pids.PidSpec(pid=0x100, name="x", size=1, unit="")
    with pytest.raises(ValueError, match="size 5"):
        obd_pids.PidSpec(pid=0x01, name="x", size=5, unit="")
