"""The sale scenario's "backend_personal_data_gone" check judges personal data on its own, not through
retention's `scrub`: a gap in the scrub must fail the check instead of hiding behind it."""

from __future__ import annotations

from typing import Any

import pytest

from backend_stub.retention import PersonalValues
from hil.ownership import personal_left
from telematics_wire.catalogue import Catalogue

CATALOGUE = Catalogue.load()


def _case() -> dict[str, Any]:
    return {
        "event": "call_centre_data",
        "msd": b"\x02\x30position-and-vin",
        "occupants": {"belted": 2, "seats_known": 2},
        "signals": {"Vehicle.Speed": 80.0, "Vehicle.Body.Lights.Hazard.IsSignaling": True},
    }


def test_the_check_finds_the_msd_the_occupants_and_movement_data() -> None:
    assert sorted(personal_left(_case(), CATALOGUE)) == ["Vehicle.Speed", "msd", "occupants"]


def test_the_check_finds_personal_paths_at_any_depth_and_unclassified_ones() -> None:
    body = {"data": [{"deep": {"Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted": True, "Vehicle.Not.Known": 1}}]}
    assert sorted(personal_left(body, CATALOGUE)) == [
        "Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted",
        "Vehicle.Not.Known",
    ]


def test_a_body_scrubbed_by_retention_passes() -> None:
    scrubbed = PersonalValues(CATALOGUE).scrub("ecall", _case())
    assert scrubbed is not None
    assert personal_left(scrubbed, CATALOGUE) == []


def test_a_scrub_that_misses_something_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the check asked `scrub` whether anything was left, so a scrub blind to the MSD passed it."""
    monkeypatch.setattr(PersonalValues, "scrub", lambda _self, _kind, _body: None)  # a scrub that sees nothing
    assert "msd" in personal_left(_case(), CATALOGUE)
