"""The shipped catalogue is parsed once per process: a fleet process loads thousands of agent configs
that state their equipment, and each check must not read and parse the two TOML files again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcu.config import load_agent_config, shipped_catalogue
from tcu.errors import ConfigError
from telematics_wire import catalogue
from tests.test_config import MINIMAL


def test_configs_stating_their_equipment_are_checked_against_one_parse_of_the_catalogue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real_read = catalogue._read
    monkeypatch.setattr(catalogue, "_read", lambda name: reads.append(name) or real_read(name))
    shipped_catalogue.cache_clear()  # what another test parsed is parsed again here, once
    path = tmp_path / "agent.toml"
    for _ in range(3):
        path.write_text(MINIMAL + '[vehicle]\nequipment = ["6AE", "6AC"]\n')
        assert load_agent_config(path, env={}).vehicle.fit.equipment == {"6AE", "6AC"}
    path.write_text(MINIMAL + '[vehicle]\nequipment = ["6NR"]\n')
    with pytest.raises(ConfigError, match="'6NR' is not an option code"):  # still checked, from the one parse
        load_agent_config(path, env={})
    assert sorted(reads) == ["catalogue.toml", "option_codes.toml"]
    shipped_catalogue.cache_clear()
