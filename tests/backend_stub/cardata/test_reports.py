"""The owner's data report (what is stored now) and transaction report (what went to whom, when, which
keys), as JSON and as a page in which nothing a vehicle or a client sent can inject markup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_stub.cardata.reports import report_page, shown_value
from tests.backend_stub.cardata.cardata_world import CardataWorld, Snapshot, open_world
from tests.conftest import VIN

ANNA = "anna@example.org"
DOOR = "vehicle.cabin.door.row1.driver.isOpen"
MILEAGE = "vehicle.vehicle.travelledDistance"


@pytest.fixture
def world(tmp_path: Path, blank_cardata_database: Snapshot) -> Iterator[CardataWorld]:
    world = open_world(tmp_path, snapshot=blank_cardata_database)
    world.enroll(VIN)
    yield world
    world.close()


def test_the_data_report_lists_every_stored_last_value_and_the_consents(world: CardataWorld) -> None:
    gcid = world.account(ANNA)
    world.pair(VIN, ANNA)
    client = world.store.add_client("Insurer").client_id
    world.store.grant(VIN, client, [DOOR], world.now())
    world.send(
        VIN,
        {"Vehicle.TraveledDistance": 99.5, "Vehicle.OBD.DTCList": ["P0300"], "Vehicle.Exterior.AirTemperature": 2**60},
    )
    report = world.service.data_report(gcid)
    (vehicle,) = report["vehicles"]
    values = {entry["signal"]: entry for entry in vehicle["lastValues"]}
    assert values["Vehicle.TraveledDistance"]["cardataKeys"] == [MILEAGE]
    assert values["Vehicle.TraveledDistance"]["value"] == 99.5
    assert values["Vehicle.OBD.DTCList"]["cardataKeys"] == []  # stored, though no CarData key carries it
    assert isinstance(values["Vehicle.Exterior.AirTemperature"]["value"], str)  # beyond JSON's exact integers
    assert report["consents"] == [
        {
            "vin": VIN,
            "clientId": client,
            "client": "Insurer",
            "keys": [DOOR],
            "granted": "2026-11-23T10:00:00.000Z",
            "ended": None,
        }
    ]


def test_the_transaction_report_says_who_got_what_when(world: CardataWorld) -> None:
    gcid = world.account(ANNA)
    insurer = world.store.add_client("Insurer").client_id
    fleet = world.store.add_client("Fleet").client_id
    world.store.log_transfer(gcid, insurer, VIN, "rest", [DOOR], world.now())
    world.clock.advance(2)
    world.store.log_transfer(gcid, insurer, VIN, "stream", [MILEAGE], world.now())
    world.store.log_transfer(gcid, fleet, VIN, "push", [DOOR], world.now())
    report = world.service.transaction_report(gcid)
    assert [(line["client"], line["channel"], line["keys"]) for line in report["transfers"]] == [
        ("Insurer", "rest", [DOOR]),
        ("Insurer", "stream", [MILEAGE]),
        ("Fleet", "push", [DOOR]),
    ]
    summary = {entry["client"]: entry for entry in report["clients"]}
    assert summary["Insurer"]["transfers"] == 2
    assert summary["Insurer"]["keys"] == sorted([DOOR, MILEAGE])
    assert summary["Insurer"]["first"] == "2026-11-23T10:00:00.000Z"
    assert summary["Insurer"]["last"] == "2026-11-23T10:00:02.000Z"


def test_the_page_escapes_everything(world: CardataWorld) -> None:
    gcid = world.account(ANNA)
    client = world.store.add_client("<script>alert(1)</script>").client_id
    world.store.log_transfer(gcid, client, VIN, "rest", [DOOR], world.now())
    page = world.service.transaction_report_html(gcid)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert page.startswith("<!doctype html>")


def test_values_shown_are_always_json_safe() -> None:
    assert shown_value(2**5000).startswith("an integer of")  # type: ignore[union-attr]
    assert isinstance(shown_value(float("nan")), str)
    assert len(str(shown_value("x" * 1_000_000))) < 300
    assert "<table>" in report_page("t", {"rows": [{"a": [{"b": 1}]}]})
