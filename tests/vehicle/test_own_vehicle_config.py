"""[sources.can] dbc/mapping, [sources.obd] mapping and [[ecall.trigger]] in an agent config: check-config, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.layout import BenchLayout
from tcu.cli import main as tcu_cli
from tests.conftest import VIN
from tests.vehicle.test_can_mapping import DBC, MAPPING

LEGAL = '[ecall]\nport = "/dev/null"\n'
CRASH_RULE = (
    '[[ecall.trigger]]\nkind = "crash"\nsignal = "ACU_01.CrashType"\nvalues = ["FRONT", "SIDE", 3]\ninvalid = ["SNA"]\n'
)
OBD = """
[pids]
"010D" = { path = "Vehicle.Speed", interval_s = 1 }
"22F40D" = { path = "Vehicle.OBD.OilTemperature", interval_s = 5, bytes = 1, formula = "A-40" }
"0110" = { path = "Vehicle.OBD.MAF", interval_s = 2, bytes = 2, formula = "(A*256+B)/100" }
"""


@pytest.fixture
def bench(tmp_path: Path) -> BenchLayout:
    layout = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1")
    layout.create_backend()
    layout.add_vehicle(VIN)
    (tmp_path / "car").mkdir()
    (tmp_path / "car" / "car.dbc").write_text(DBC)
    (tmp_path / "car" / "can.toml").write_text(MAPPING)
    (tmp_path / "car" / "obd.toml").write_text(OBD)
    return layout


def check(bench: BenchLayout, sources: str, ecall: str = "[ecall]\nlegal_ecall = false\n") -> Path:
    return bench.write_agent_config(VIN, extra=sources, ecall=ecall)


CAN = '\n[sources.can]\nport = "/dev/null"\ndbc = "car/car.dbc"\nmapping = "car/can.toml"\n'


def test_check_config_prints_the_resolved_mapping_tables(
    bench: BenchLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    obd = '\n[sources.obd]\nport = "/dev/null"\nmapping = "car/obd.toml"\n'
    config = check(bench, CAN + obd, ecall=LEGAL + CRASH_RULE)
    assert tcu_cli(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{config}: OK"
    assert "CAN mapping (source 'can'):" in lines
    header = next(line for line in lines if line.startswith("source signal"))
    assert header.split() == ["source", "signal", "VSS", "path", "type", "conversion", "values", "from"]
    speed = next(line for line in lines if line.startswith("ESP_21.Speed "))
    assert speed.split()[1:3] == ["Vehicle.Speed", "float"]
    assert "mph → km/h, 3 decimals" in speed
    door = next(line for line in lines if line.startswith("ZV_02.DoorFL "))
    assert "0 (CLOSED) → false, 1 (OPEN) → true" in door
    crash = next(line for line in lines if line.startswith("ACU_01.CrashType "))
    assert "Vehicle.Safety.CrashDetected" in crash
    assert "1 (FRONT) → true, 2 (SIDE) → true, 3 (REAR) → true" in crash
    assert crash.rstrip().endswith("ecall.trigger[0]")
    assert any(
        line.startswith("22F40D") and "Vehicle.OBD.OilTemperature" in line and "A-40 over 1 byte(s)" in line
        for line in lines
    )
    assert any(line.startswith("010D") and "raw*1 km/h (vehicle speed)" in line for line in lines)


def test_a_legal_ecall_agent_refuses_a_dbc_with_no_crash_signal(
    bench: BenchLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    config = check(bench, CAN, ecall=LEGAL)
    assert tcu_cli(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "sources.can: the CAN mapping feeds no crash or airbag trigger" in err
    assert "could never make an automatic eCall" in err
    assert tcu_cli(["check-config", "--config", str(check(bench, CAN))]) == 0  # fine without legal eCall


def test_a_legal_ecall_agent_refuses_a_trigger_rule_that_does_not_resolve(
    bench: BenchLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = CRASH_RULE.replace('"FRONT", "SIDE", 3', '"FRONTAL"')
    config = check(bench, CAN, ecall=LEGAL + rule)
    assert tcu_cli(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "ecall.trigger[0] values: 'FRONTAL' is neither a VAL_ name of CrashType" in err
    config = check(bench, "", ecall=LEGAL + CRASH_RULE)
    assert tcu_cli(["check-config", "--config", str(config)]) == 2
    assert "ecall.trigger[0]: trigger rules name CAN signals, but there is no [sources.can]" in capsys.readouterr().err


def test_the_packaged_car_still_starts_legal(bench: BenchLayout) -> None:
    config = check(bench, '\n[sources.can]\nport = "/dev/null"\n', ecall=LEGAL)
    assert tcu_cli(["check-config", "--config", str(config)]) == 0


@pytest.mark.parametrize(
    ("sources", "reason"),
    [
        (
            '\n[sources.can]\nport = "/dev/null"\ndbc = 3\n',
            "sources.can.dbc: got 3; expected a file path or a list of them",
        ),
        ('\n[sources.can]\nport = "/dev/null"\nmapping = ["a", "b"]\n', "sources.can.mapping: expected one file path"),
        ('\n[sources.can]\nport = "/dev/null"\nbitrate = 7\n', "sources.can.bitrate: 7 is not one of"),
        ('\n[sources.can]\nport = "/dev/null"\ndbc = "car/none.dbc"\n', "none.dbc: no such file"),
        ('\n[sources.obd]\nport = "/dev/null"\nmapping = "car/none.toml"\n', "none.toml: cannot read it"),
    ],
)
def test_errors_name_the_section_the_user_wrote(
    bench: BenchLayout, capsys: pytest.CaptureFixture[str], sources: str, reason: str
) -> None:
    assert tcu_cli(["check-config", "--config", str(check(bench, sources))]) == 2
    assert reason in capsys.readouterr().err
