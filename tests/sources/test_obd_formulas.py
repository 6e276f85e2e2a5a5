"""Extra OBD PIDs as data: byte formulas parsed without eval, mode 01 and mode 22 answers decoded through them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tcu.errors import ConfigError, ProtocolError
from tcu.sources.elm327_mapping import load_obd_mapping, parse_obd_mapping
from tcu.sources.obd_pids import Formula, decode_formula


@pytest.mark.parametrize(
    ("text", "data", "value"),
    [
        ("(A*256+B)/4", b"\x1a\xf8", 1726.0),
        ("A-40", b"\x5a", 50.0),
        ("-A + 2*(B-C)/4", b"\x01\x0a\x02", 3.0),
        ("((A*16777216)+(B*65536)+(C*256)+D)/10", b"\x00\x01\xe2\x40", 12345.6),
        ("100*A/255", b"\xff", 100.0),
    ],
)
def test_formulas_evaluate_like_sae_j1979(text: str, data: bytes, value: float) -> None:
    assert Formula.parse(text).evaluate(data) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("A+", "ends where a value was expected"),
        ("(A", "a '(' is not closed"),
        ("E", "unexpected 'E' at 0"),
        ("A**2", "unexpected '*' where a value was expected"),
        ("__import__('os')", "unexpected '_' at 0"),
        ("A B", "unexpected 'B' after a complete expression"),
        ("", "formula must be 1..200 characters"),
        ("(" * 300 + "A" + ")" * 300, "formula must be 1..200 characters"),
    ],
)
def test_anything_but_arithmetic_over_a_to_d_is_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        Formula.parse(text)


def test_mode_22_and_mode_01_answers_are_checked_before_the_formula() -> None:
    oil = Formula.parse("A-40")
    assert decode_formula(bytes.fromhex("62F40D82"), mode=0x22, pid=0xF40D, size=1, formula=oil) == 90.0
    with pytest.raises(ProtocolError, match="answer to 22F40D names F40E"):
        decode_formula(bytes.fromhex("62F40E82"), mode=0x22, pid=0xF40D, size=1, formula=oil)
    with pytest.raises(ProtocolError, match="answer to 22F40D carries 0 data byte"):
        decode_formula(bytes.fromhex("62F40D"), mode=0x22, pid=0xF40D, size=1, formula=oil)
    with pytest.raises(ProtocolError, match="negative response code 0x31"):
        decode_formula(bytes.fromhex("7F2231"), mode=0x22, pid=0xF40D, size=1, formula=oil)
    maf = Formula.parse("(A*256+B)/100")
    assert decode_formula(bytes.fromhex("41100A5A"), mode=0x01, pid=0x10, size=2, formula=maf) == 26.5
    with pytest.raises(ProtocolError, match="divides by zero"):
        decode_formula(bytes.fromhex("41100000"), mode=0x01, pid=0x10, size=2, formula=Formula.parse("1/(A+B)"))


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (
            '"22F40D" = { path = "Vehicle.X", interval_s = 1 }',
            "OBD mapping 22F40D: no formula in tcu.sources.obd_pids.PIDS",
        ),
        ('"01FE" = { path = "Vehicle.X", interval_s = 1 }', "OBD mapping 01FE: no formula"),
        ('"22F40D" = { path = "Vehicle.X", interval_s = 1, formula = "A" }', "give both bytes = 1..4 and formula"),
        ('"22F40D" = { path = "Vehicle.X", interval_s = 1, bytes = 1, formula = "A*B" }', "bytes = 1, but the formula"),
        (
            '"22F40D" = { path = "Vehicle.X", interval_s = 1, bytes = 1, formula = "A^2" }',
            "pids.22F40D.formula: formula",
        ),
        ('"23F40D" = { path = "Vehicle.X", interval_s = 1 }', "expected a mode 01 request like '010D' or mode 22"),
        ('"010D" = { path = "Vehicle.X", interval_s = 1, scale = 2 }', "pids.010D: unknown key(s) scale"),
    ],
)
def test_obd_mapping_errors(tmp_path: Path, entry: str, reason: str) -> None:
    path = tmp_path / "obd.toml"
    path.write_text(f"[pids]\n{entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_obd_mapping(path)
    assert reason in str(caught.value)


def test_a_mapping_with_extra_pids_polls_them(tmp_path: Path) -> None:
    path = tmp_path / "obd.toml"
    path.write_text(
        '[pids]\n"22F40D" = { path = "Vehicle.OBD.OilTemperature", interval_s = 5, bytes = 1, formula = "A-40" }\n'
    )
    (oil,) = load_obd_mapping(path).pids
    assert (oil.request, oil.mode, oil.pid, oil.size) == ("22F40D", 0x22, 0xF40D, 1)


@pytest.mark.parametrize("interval", ["nan", "inf", "0", "-1"])
def test_a_poll_interval_must_be_positive_and_finite(interval: str) -> None:
    doc = tomllib.loads(f'[pids]\n"010D" = {{ path = "Vehicle.Speed", interval_s = {interval} }}\n')
    with pytest.raises(ConfigError, match="interval_s must be a positive, finite number of seconds"):
        parse_obd_mapping(doc)
