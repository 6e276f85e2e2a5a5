"""`[vehicle] brand`, `equipment` and `first_registration`: what the car is, for checking its files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tcu.config import load_agent_config
from tcu.errors import ConfigError
from telematics_wire.catalogue import Brand, VehicleFit
from tests.test_config import MINIMAL


def _load(tmp_path: Path, vehicle: str) -> VehicleFit:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL + "[vehicle]\n" + vehicle)
    return load_agent_config(path, env={}).vehicle.fit


def test_a_config_that_says_nothing_keeps_working_as_a_bmw_of_unstated_equipment(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == VehicleFit(brand=Brand.BMW, equipment=None, first_registration=None)


def test_brand_equipment_and_first_registration_are_read(tmp_path: Path) -> None:
    fit = _load(tmp_path, 'brand = "MINI"\nequipment = ["6AE", "6AC", "7GH"]\nfirst_registration = 2026-03-01\n')
    assert fit == VehicleFit(
        brand=Brand.MINI, equipment=frozenset({"6AE", "6AC", "7GH"}), first_registration=date(2026, 3, 1)
    )
    assert _load(tmp_path, 'first_registration = "2026-03-01"\n').first_registration == date(2026, 3, 1)


@pytest.mark.parametrize(
    ("vehicle", "message"),
    [
        ('brand = "Rolls"\n', "vehicle.brand: got 'Rolls'; expected one of BMW, BMW i, MINI"),
        ('equipment = "6AE"\n', "vehicle.equipment: got '6AE'; expected an array of option codes"),
        ("equipment = [6]\n", "expected an array of option codes \\(strings\\)"),
        ('equipment = ["6NR"]\n', "vehicle.equipment: '6NR' is not an option code of the catalogue"),
        ('equipment = ["7GG"]\n', "vehicle.equipment: option code 7GG \\(Connected Media\\) is not offered for BMW"),
        ('equipment = ["6AF"]\n', "6AF \\(legal eCall\\) is not listed as equipment"),
        ('equipment = ["STORE-CONNECTED"]\n', "'STORE-CONNECTED' is not an option code"),
        ('first_registration = "soon"\n', "vehicle.first_registration: 'soon' is not a YYYY-MM-DD date"),
        ("first_registration = 2026-03-01T10:00:00Z\n", "expected a date, e.g. 2026-11-23"),
        ("first_registration = 20260301\n", "vehicle.first_registration: got 20260301; expected a date"),
    ],
)
def test_a_vehicle_fit_the_catalogue_does_not_know_is_refused(tmp_path: Path, vehicle: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, vehicle)
