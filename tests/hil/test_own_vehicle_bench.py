"""Your own vehicle on the bench: `tcu-hil run --dbc ... --mapping ...`, the scenario's [vehicle] dbc/mapping,
and the pytest plugin's `sources_toml(dbc=..., mapping=...)` all reach the agent's [sources.can]."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hil.cli import main as hil_cli
from hil.layout import BenchLayout
from hil.pytest_plugin import VirtualVehicle
from hil.scenario import load_scenario
from tcu.app import Agent
from tcu.config import load_agent_config
from tests.conftest import require_mosquitto

PACKAGED_DBC = Path(__file__).parent.parent.parent / "tcu" / "sources" / "dbc" / "vehicle.dbc"
# The virtual bus sends the fictional car; a mapping of our own over a copy of its DBC, so the run can
# show that the agent used these files and not the packaged ones: only the usage mode is mapped.
MAPPING = '[extension]\n"Terminal.VehicleMode" = "Vehicle.Mode"\n'
SCENARIO = """name = "own-vehicle"
duration_s = 4
devices = ["can"]
[vehicle]
legal_ecall = false
[[expect]]
check = "signal_reported"
path = "Vehicle.Mode"
"""


def own_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    dbc = shutil.copy(PACKAGED_DBC, folder / "mycar.dbc")
    (folder / "mycar.toml").write_text(MAPPING)
    return Path(dbc), folder / "mycar.toml"


def test_tcu_hil_run_takes_dbc_and_mapping(tmp_path: Path) -> None:
    require_mosquitto()
    dbc, mapping = own_files(tmp_path / "car")
    (tmp_path / "own.toml").write_text(SCENARIO)
    workdir = tmp_path / "run"
    argv = ["run", str(tmp_path / "own.toml"), "--workdir", str(workdir), "--broker", "mosquitto"]
    assert hil_cli([*argv, "--dbc", str(dbc), "--mapping", str(mapping)]) == 0
    (config,) = [p for p in workdir.rglob("agent-*.toml") if "drain" not in p.name]
    text = config.read_text()
    assert f'dbc = ["{dbc.resolve()}"]' in text
    assert f'mapping = "{mapping.resolve()}"' in text
    decoder = Agent(load_agent_config(config, env={})).sources.can_decoder
    assert decoder is not None
    assert [e.source for e in decoder.entries] == ["Terminal.VehicleMode"]


def test_a_scenario_names_its_vehicle_files_relative_to_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own_files(tmp_path / "car")
    path = tmp_path / "own.toml"
    path.write_text(
        SCENARIO.replace(
            "legal_ecall = false\n", 'legal_ecall = false\ndbc = "car/mycar.dbc"\nmapping = "car/mycar.toml"\n'
        )
    )
    scenario = load_scenario(path)
    assert scenario.can_dbc == (tmp_path / "car" / "mycar.dbc",)
    assert scenario.can_mapping == tmp_path / "car" / "mycar.toml"
    path.write_text(SCENARIO.replace("legal_ecall = false\n", 'legal_ecall = false\nmapping = ["a", "b"]\n'))
    assert hil_cli(["run", str(path)]) == 2
    assert "vehicle.mapping: got ['a', 'b']; expected a file path" in capsys.readouterr().err


async def test_the_virtual_vehicle_fixture_takes_dbc_and_mapping(
    tcu_virtual_vehicle: VirtualVehicle, tmp_path: Path
) -> None:
    dbc, mapping = own_files(tmp_path / "car")
    bench = BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:1")
    bench.create_backend()
    config = bench.add_vehicle(
        "WVWZZZ1JZXW000002", simulation=False, extra=tcu_virtual_vehicle.sources_toml(dbc=[dbc], mapping=mapping)
    )
    decoder = Agent(load_agent_config(config, env={})).sources.can_decoder
    assert decoder is not None
    assert [e.source for e in decoder.entries] == ["Terminal.VehicleMode"]
