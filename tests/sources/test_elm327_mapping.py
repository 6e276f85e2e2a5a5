"""The OBD → VSS mapping table: the packaged file and every rejection naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tcu.errors import ConfigError
from tcu.sources.elm327_mapping import load_obd_mapping, parse_obd_mapping
from tcu.vehicle.mapping import load_mapping


def test_packaged_mapping() -> None:
    mapping = load_obd_mapping()
    by_request = {m.request: m for m in mapping.pids}
    assert mapping.source == "obd"
    assert by_request["010D"].path == "Vehicle.Speed"
    assert by_request["010C"].path == "Vehicle.Powertrain.CombustionEngine.Speed"
    assert by_request["01A6"].path == "Vehicle.TraveledDistance"
    assert by_request["0131"].path == "Vehicle.OBD.DistanceSinceDTCClear"
    assert set(by_request) == {"010C", "010D", "0105", "012F", "0131", "0142", "0146", "01A6"}
    assert all(m.interval_s > 0 for m in mapping.pids)
    assert mapping.vin_path == "Vehicle.VehicleIdentification.VIN"
    assert mapping.dtc_count_path == "Vehicle.OBD.Status.DTCCount"


def test_a_mapping_file_given_by_path(tmp_path: Path) -> None:
    path = tmp_path / "obd.toml"
    path.write_text('[pids]\n"010d" = { path = "Vehicle.Speed", interval_s = 1 }\n')
    mapping = load_obd_mapping(path)
    assert [(m.pid, m.interval_s) for m in mapping.pids] == [(0x0D, 1.0)]
    assert (mapping.vin_path, mapping.dtc_count_path) == (None, None)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"pids": {"0D": {"path": "Vehicle.Speed", "interval_s": 1}}}, "pids.0D: expected a mode 01 request"),
        ({"pids": {"010D": "Vehicle.Speed"}}, r"pids.010D: expected \{ path"),
        ({"pids": {"010D": {"path": "Speed", "interval_s": 1}}}, "pids.010D.path: 'Speed' is not a VSS path"),
        ({"pids": {"010D": {"path": "Vehicle.Speed", "interval_s": 0}}}, "pids.010D.interval_s: .* positive"),
        ({"pids": {"010D": {"path": "Vehicle.Speed", "interval_s": True}}}, "pids.010D.interval_s"),
        ({"pids": {"01FE": {"path": "Vehicle.X", "interval_s": 1}}}, "01FE: no formula"),
        (
            {
                "pids": {
                    "010D": {"path": "Vehicle.Speed", "interval_s": 1},
                    "01A6": {"path": "Vehicle.Speed", "interval_s": 1},
                }
            },
            "Vehicle.Speed fed by more than one PID",
        ),
        ({"pids": []}, r"\[pids\] must be a table"),
        ({"source": ""}, "source must be a non-empty string"),
        ({"vin": {"path": 17}}, "vin.path: 17 is not a VSS path"),
        ({"dtc": {"count_path": "Vehicle.OBD.Status.DTCCount", "interval_s": -1}}, "dtc.interval_s"),
    ],
)
def test_rejections_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_obd_mapping(doc)


def test_loader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read it"):
        load_mapping("obd", tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("pids = [")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        load_mapping("obd", bad)
    with pytest.raises(ConfigError, match=r"nosuch\.toml: cannot read it"):
        load_mapping("nosuch")
