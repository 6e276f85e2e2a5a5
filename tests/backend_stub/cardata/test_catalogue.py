"""Our CarData catalogue: BMW's key names for what our vehicles actually send, and total value conversion."""

from __future__ import annotations

import math
import tomllib
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_stub.cardata.catalogue import (
    MAX_REQUESTED,
    CardataCategory,
    load_cardata_catalogue,
    parse_cardata_catalogue,
)
from backend_stub.cardata.errors import BadRequest

CATALOGUE = load_cardata_catalogue()
VSS_PATHS = frozenset(
    tomllib.loads(resources.files("tcu.vehicle").joinpath("vss_signals.toml").read_text(encoding="utf-8"))["signals"]
)
# Standard VSS paths a vehicle's own mapping may feed; the shipped fictional car has no tyre sensors.
NOT_ON_OUR_CAR = {
    f"Vehicle.Chassis.Axle.Row{row}.Wheel.{side}.Tire.Pressure" for row in (1, 2) for side in ("Left", "Right")
}


def test_every_key_is_filled_from_a_signal_our_vehicles_send_or_an_event() -> None:
    signals = {entry.signal for entry in CATALOGUE.entries.values() if entry.signal is not None}
    assert signals - VSS_PATHS == NOT_ON_OUR_CAR
    events = {entry.key: entry.event for entry in CATALOGUE.entries.values() if entry.signal is None}
    assert events == {"vehicle.safety.emergencyCall.lastCallTime": "ecall"}


def test_the_catalogue_covers_what_third_parties_ask_for_first() -> None:
    doors = {f"vehicle.cabin.door.row{row}.{side}.isOpen" for row in (1, 2) for side in ("driver", "passenger")}
    position = {
        f"vehicle.cabin.infotainment.navigation.currentLocation.{axis}" for axis in ("latitude", "longitude", "heading")
    }
    wanted = (
        doors
        | position
        | {
            "vehicle.cabin.door.status",  # the overall door and lock state
            "vehicle.body.trunk.isLocked",
            "vehicle.vehicle.travelledDistance",
            "vehicle.vehicle.speed",
            "vehicle.drivetrain.fuelSystem.level",
            "vehicle.drivetrain.batteryManagement.header",
            "vehicle.status.serviceDistance.next",
            "vehicle.chassis.axle.row1.wheel.left.tire.pressure",
            "vehicle.safety.emergencyCall.lastCallTime",
        }
    )
    assert wanted <= set(CATALOGUE.keys())
    pushed = {event for entry in CATALOGUE.entries.values() for event in entry.push}
    assert pushed == {"door", "lock", "service_call", "parked_position", "ecall"}


def test_look_ups_by_signal_and_category() -> None:
    (speed,) = CATALOGUE.for_signal("Vehicle.Speed")
    assert (speed.key, speed.unit, speed.category) == ("vehicle.vehicle.speed", "km/h", CardataCategory.USAGE_BASED)
    assert CATALOGUE.for_signal("Vehicle.Cabin.SosButton.IsPressed") == ()
    tyres = CATALOGUE.in_category(CardataCategory.TYRE_DATA)
    assert {entry.unit for entry in tyres} == {"kPa"}
    assert len(tyres) == 4


def test_expand_turns_categories_into_their_keys_and_names_the_unknown() -> None:
    expanded = CATALOGUE.expand(["TYRE_DATA", "vehicle.vehicle.speed"])
    assert expanded == {entry.key for entry in CATALOGUE.in_category(CardataCategory.TYRE_DATA)} | {
        "vehicle.vehicle.speed"
    }
    assert CATALOGUE.expand(["CD_CONTRACT"]) == frozenset()  # a category we fill nothing of
    with pytest.raises(BadRequest, match=r"'vehicle\.speedo'"):
        CATALOGUE.expand(["vehicle.vehicle.speed", "vehicle.speedo"])
    with pytest.raises(BadRequest, match="categor"):
        CATALOGUE.check_keys(["TYRE_DATA"])  # a container names keys, not categories


@pytest.mark.parametrize(
    "request_items",
    [
        ["x" * 1_000_000],
        ["vehicle.vehicle.speed"] * (MAX_REQUESTED + 1),
        (f"key{number}" for number in range(10**9)),  # a generator is read no further than the cap
        [None],
        [b"vehicle.vehicle.speed"],
        "vehicle.vehicle.speed",
    ],
)
def test_bad_requests_are_refused_briefly(request_items: object) -> None:
    with pytest.raises(BadRequest) as refused:
        CATALOGUE.expand(request_items)  # type: ignore[arg-type]
    assert len(refused.value.reason) < 300


def test_values_become_what_bmw_clients_expect() -> None:
    lock = CATALOGUE.entries["vehicle.cabin.door.status"]
    assert lock.wire_value("DOUBLE_LOCKED") == "SECURED"
    assert lock.wire_value("UNLOCKED") == "UNLOCKED"
    door = CATALOGUE.entries["vehicle.cabin.door.row1.driver.isOpen"]
    assert (door.wire_value(True), door.text(True), door.text(False)) == (True, "true", "false")
    range_key = CATALOGUE.entries["vehicle.cabin.infotainment.navigation.remainingRange"]
    assert range_key.wire_value(412_345) == 412  # metres → km, BMW's uint16
    fuel = CATALOGUE.entries["vehicle.drivetrain.fuelSystem.level"]
    assert fuel.text(55) == "55"


@pytest.mark.parametrize("garbage", [math.nan, math.inf, 2**64, -(2**5000), "55", [1], {"v": 1}, None, True])
def test_a_stored_value_of_the_wrong_kind_is_no_value(garbage: object) -> None:
    fuel = CATALOGUE.entries["vehicle.drivetrain.fuelSystem.level"]
    assert fuel.wire_value(garbage) is None
    assert fuel.text(garbage) is None


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary(), st.lists(st.integers())))
def test_every_key_converts_any_stored_value_without_raising(value: object) -> None:
    for entry in CATALOGUE.entries.values():
        converted = entry.wire_value(value)
        if converted is None:
            continue
        if entry.datatype == "boolean":
            assert isinstance(converted, bool)
        elif entry.datatype == "string":
            assert isinstance(converted, str)
        else:
            assert isinstance(converted, int | float)
            assert not isinstance(converted, bool)
            assert math.isfinite(converted)
        assert isinstance(entry.text(value), str)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '["k"]\nname="n"\ncategory="EVENTS"\ndatatype="string"\nmin_interval_s=0\n',
            "exactly one of signal and event",
        ),
        (
            '["k"]\nname="n"\ncategory="EVENTS"\ndatatype="string"\nmin_interval_s=0\nsignal="A"\nevent="ecall"\n',
            "exactly one",
        ),
        ('["k"]\nname="n"\ncategory="NOPE"\ndatatype="string"\nmin_interval_s=0\nsignal="A"\n', "NOPE"),
        ('["k"]\nname="n"\ncategory="EVENTS"\ndatatype="int128"\nmin_interval_s=0\nsignal="A"\n', "datatype"),
        ('["k"]\nname="n"\ncategory="EVENTS"\ndatatype="string"\nmin_interval_s=-1\nsignal="A"\n', "min_interval_s"),
        (
            '["k"]\nname="n"\ncategory="EVENTS"\ndatatype="string"\nmin_interval_s=0\nsignal="A"\ncolour=1\n',
            "unknown fields",
        ),
        ('["k"]\nname="n"\ncategory="EVENTS"\ndatatype="string"\nmin_interval_s=0\nsignal="A"\npush=["x"]\n', "push"),
        ("not toml [", "invalid"),
    ],
)
def test_a_broken_catalogue_is_refused_naming_what(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cardata_catalogue(text)
