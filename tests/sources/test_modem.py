"""The AT codec: golden transcripts in tests/data/modem, payload parsers and the modem profiles."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import pytest

from tcu.sources.modem import (
    PROFILES,
    AtParser,
    EcallIndication,
    EcallType,
    Garbage,
    RegistrationStatus,
    Response,
    SignalQuality,
    SimStatus,
    Urc,
    describe_cme,
    info_prefix,
    parse_cecall,
    parse_cpin,
    parse_csq,
    parse_registration_read,
    parse_registration_urc,
)

DATA = Path(__file__).parent.parent / "data" / "modem"
TRANSCRIPTS = sorted(DATA.glob("*.txt"))


def replay(path: Path) -> list[dict[str, Any]]:
    """Drive an AtParser through a transcript; every parsed item as a JSON-ready dict."""
    lines = path.read_text(encoding="utf-8").splitlines()
    profile = PROFILES[next(line.split(":", 1)[1].strip() for line in lines if line.startswith("# profile:"))]
    parser = AtParser()
    items: list[dict[str, Any]] = []
    for line in lines:
        if line.startswith("> "):
            assert parser.command(line[2:]) == line[2:].encode("ascii") + b"\r"
            continue
        if line.startswith("! cancel"):
            parser.cancel()
            continue
        if line.startswith("<< "):
            data = codecs.escape_decode(line[3:].encode("ascii"))[0]
        elif line.startswith("< "):
            data = b"\r\n" + line[2:].encode("ascii") + b"\r\n"
        else:
            continue
        for item in parser.feed(data):
            if isinstance(item, Response):
                items.append(
                    {
                        "response": item.command,
                        "final": item.final,
                        "lines": list(item.lines),
                        "cme_error": item.cme_error,
                        "ok": item.ok,
                    }
                )
            elif isinstance(item, Urc):
                indication = profile.indication(item)
                items.append(
                    {
                        "urc": item.name,
                        "value": item.value,
                        "indication": None if indication is None else indication.value,
                    }
                )
            else:
                assert isinstance(item, Garbage)
                items.append({"garbage": item.data.hex()})
    assert parser.pending is None, f"{path.name} ends with a command in flight"
    return items


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_golden_transcript(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    assert replay(path) == expected


def test_every_transcript_has_its_expectation() -> None:
    assert len(TRANSCRIPTS) >= 5
    assert all(p.with_suffix(".expected.json").exists() for p in TRANSCRIPTS)


def test_bytes_may_arrive_in_any_chunks() -> None:
    whole = b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n\r\n+CECALLIND: 2\r\n"
    for size in (1, 2, 3, 7):
        parser = AtParser()
        parser.command("AT+CSQ")
        items = [item for i in range(0, len(whole), size) for item in parser.feed(whole[i : i + size])]
        assert items == [
            Response(command="AT+CSQ", final="OK", lines=("+CSQ: 20,99",)),
            Urc(name="+CECALLIND", value="2"),
        ]


def test_one_command_at_a_time() -> None:
    parser = AtParser()
    parser.command("AT")
    with pytest.raises(RuntimeError, match="still in flight"):
        parser.command("AT+CSQ")


def test_an_endless_line_is_dropped_as_garbage() -> None:
    parser = AtParser(max_line=64)
    assert parser.feed(b"A" * 100) == [Garbage(data=b"A" * 100)]
    assert parser.feed(b"\r\nRING\r\n") == [Urc(name="RING")]


def test_call_results_end_only_dial_and_answer() -> None:
    parser = AtParser()
    parser.command("ATA")
    assert parser.feed(b"\r\nNO CARRIER\r\n") == [Response(command="ATA", final="NO CARRIER")]
    parser.command("AT+CSQ")
    assert parser.feed(b"\r\nNO CARRIER\r\n") == [Urc(name="NO CARRIER")]


def test_response_values_by_prefix() -> None:
    response = Response(command="AT+CREG?", final="OK", lines=("+CREG: 1,5", "junk"))
    assert response.values("+CREG") == ["1,5"]
    assert response.values("+CSQ") == []


@pytest.mark.parametrize(
    ("command", "prefix"), [("AT+CREG?", "+CREG"), ("AT+CECALL=3", "+CECALL"), ("at+csq", "+CSQ"), ("ATI", None)]
)
def test_info_prefix(command: str, prefix: str | None) -> None:
    assert info_prefix(command) == prefix


def test_payload_parsers() -> None:
    assert parse_cpin("READY") is SimStatus.READY
    assert parse_cpin("SIM PIN") is SimStatus.PIN
    assert parse_cpin("PH-NET PIN") is SimStatus.UNKNOWN
    assert parse_registration_read("1,5") is RegistrationStatus.ROAMING
    assert parse_registration_read('2,1,"00C3","A1B2",7') is RegistrationStatus.HOME
    assert parse_registration_read("1") is RegistrationStatus.UNKNOWN
    assert parse_registration_urc('2,"00C3","A1B2"') is RegistrationStatus.SEARCHING
    assert parse_registration_urc("9") is RegistrationStatus.UNKNOWN
    assert [s.registered for s in RegistrationStatus] == [False, True, False, False, False, True]
    assert parse_csq("20,99") == SignalQuality(rssi=20, ber=99)
    assert parse_csq("garbage") == SignalQuality(rssi=99, ber=99)
    assert [parse_csq(f"{r},0").dbm for r in (0, 31, 99)] == [-113, -51, None]
    assert parse_cecall("3") is EcallType.AUTOMATIC
    assert parse_cecall("") is None
    assert describe_cme(30) == "+CME ERROR: 30 (no network service)"
    assert describe_cme(None) == "ERROR"
    assert "vendor-specific" in describe_cme(777)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_format_commands_and_round_trip_their_urcs(name: str) -> None:
    profile = PROFILES[name]
    assert profile.dial_command(EcallType.MANUAL).endswith("=2")
    assert profile.msd_command(b"\x02\x1e").startswith(profile.msd_prefix)
    assert profile.msd_command(b"\x02\x1e").endswith("021E")
    for indication in EcallIndication:
        line = profile.indication_line(indication)
        if line is None:
            continue
        name_, value = line.split(": ")
        assert profile.indication(Urc(name=name_, value=value)) is indication
    assert profile.indication(Urc(name="+CREG", value="1")) is None
    assert profile.indication(Urc(name=profile.indication_urc, value="42")) is EcallIndication.UNKNOWN


def test_only_simcom_tells_a_psap_clear_down_from_a_drop() -> None:
    assert PROFILES["simcom"].indication_line(EcallIndication.CLEARED_DOWN) == "+CECALLIND: 6"
    assert PROFILES["ublox"].indication_line(EcallIndication.CLEARED_DOWN) is None
