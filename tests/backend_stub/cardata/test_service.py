"""CardataService: only last values, only container ∩ consent ∩ capability, every REST answer logged,
and each refusal the documented one (foreign VIN, foreign container, revoked consent, bad input)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend_stub.cardata.errors import BadRequest, Forbidden, NotFound, Unauthorized
from backend_stub.cardata.records import VehicleMapping
from telematics_wire.records import RecordKind, to_millis
from tests.backend_stub.cardata.cardata_world import START, CardataWorld, Snapshot, open_world, snapshot
from tests.conftest import OTHER_VIN, VIN

ANNA, BEN = "anna@example.org", "ben@example.org"
DOOR = "vehicle.cabin.door.row1.driver.isOpen"
LOCK = "vehicle.cabin.door.status"
LATITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.latitude"
MILEAGE = "vehicle.vehicle.travelledDistance"
TYRE = "vehicle.chassis.axle.row1.wheel.left.tire.pressure"
ECALL = "vehicle.safety.emergencyCall.lastCallTime"


@dataclass
class Scene:
    world: CardataWorld
    anna: str
    ben: str
    client: str
    container: str


@pytest.fixture(scope="module")
def saved_scene(tmp_path_factory: pytest.TempPathFactory, blank_cardata_database: Snapshot) -> tuple[Snapshot, Scene]:
    """Anna's car and Ben's, each paired, a client with a container, a first telemetry record: built
    once, and each test gets a copy of its own (`scene`)."""
    tmp = tmp_path_factory.mktemp("cardata-scene")
    world = open_world(tmp, snapshot=blank_cardata_database)
    try:
        world.enroll(VIN)
        world.enroll(OTHER_VIN)
        anna, ben = world.account(ANNA), world.account(BEN)
        world.pair(VIN, ANNA)
        world.pair(OTHER_VIN, BEN)
        client = world.store.add_client("Home Assistant").client_id
        container = world.service.create_container(
            anna, client, "car", "dashboard", [DOOR, LOCK, LATITUDE, MILEAGE, TYRE, ECALL], START
        )
        world.send(
            VIN,
            {
                "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": True,
                "Vehicle.Body.CentralLock.State": "DOUBLE_LOCKED",
                "Vehicle.CurrentLocation.Latitude": 48.137154,
                "Vehicle.TraveledDistance": 12345.6,
            },
        )
        return snapshot(world, tmp / "scene.sqlite3"), Scene(world, anna, ben, client, container.container_id)
    finally:
        world.close()


@pytest.fixture
def scene(tmp_path: Path, saved_scene: tuple[Snapshot, Scene]) -> Iterator[Scene]:
    saved, built = saved_scene
    world = open_world(tmp_path, snapshot=saved)
    yield Scene(world, built.anna, built.ben, built.client, built.container)
    world.close()


def test_telematic_data_is_the_last_values_of_the_consented_container_keys(scene: Scene) -> None:
    world = scene.world
    world.store.grant(VIN, scene.client, [DOOR, LOCK, MILEAGE, TYRE], world.now())
    world.clock.advance(5)
    world.send(VIN, {"Vehicle.TraveledDistance": 12346.0})  # a newer value: the one served
    data = world.service.telematic_data(scene.anna, scene.client, VIN, scene.container)
    assert data == {
        DOOR: {"value": "true", "unit": "", "timestamp": "2026-11-23T10:00:00.000Z"},
        LOCK: {"value": "SECURED", "unit": "", "timestamp": "2026-11-23T10:00:00.000Z"},
        MILEAGE: {"value": "12346.0", "unit": "km", "timestamp": "2026-11-23T10:00:05.000Z"},
    }  # LATITUDE: in the container, not consented; TYRE: consented, never delivered
    (logged,) = world.store.transfers(scene.anna)
    assert (logged.client_id, logged.vin, logged.channel, logged.keys) == (scene.client, VIN, "rest", set(data))


def door_event(world: CardataWorld, path: str, value: object, changed_at_ms: int, kind: str = "door") -> None:
    """A `door`/`lock` event record as the car sends it (tcu.telemetry.door_events): no `signals`."""
    body = {"type": kind, "path": path, "value": value, "previous": not value, "changed_at": changed_at_ms}
    world.store_record(VIN, body, kind=RecordKind.EVENT)


def test_an_event_is_a_transmitted_value_until_a_newer_record_says_otherwise(scene: Scene) -> None:
    """The seed: CarData gives the last *transmitted* values, and a door or lock event transmits one."""
    world = scene.world
    world.store.grant(VIN, scene.client, [DOOR, LOCK, LATITUDE], world.now())
    world.clock.advance(5)
    door_event(world, "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", False, to_millis(world.now()) - 300)
    door_event(world, "Vehicle.Body.CentralLock.State", "UNLOCKED", to_millis(world.now()), kind="lock")
    parked = {"Vehicle.CurrentLocation.Latitude": {"v": 48.2, "t": to_millis(world.now())}}
    world.store_record(VIN, {"type": "parked_position", "position": parked}, kind=RecordKind.EVENT)
    data = world.service.telematic_data(scene.anna, scene.client, VIN, scene.container)
    assert data == {
        DOOR: {"value": "false", "unit": "", "timestamp": "2026-11-23T10:00:04.700Z"},  # its changed_at
        LOCK: {"value": "UNLOCKED", "unit": "", "timestamp": "2026-11-23T10:00:05.000Z"},
        LATITUDE: {"value": "48.2", "unit": "degrees", "timestamp": "2026-11-23T10:00:05.000Z"},
    }
    report = world.service.data_report(scene.anna)
    (vehicle,) = report["vehicles"]
    shown = {item["signal"]: item["value"] for item in vehicle["lastValues"]}
    assert shown["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"] is False
    world.clock.advance(5)
    world.send(VIN, {"Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": True})  # a newer snapshot wins again
    data = world.service.telematic_data(scene.anna, scene.client, VIN, scene.container)
    assert data[DOOR] == {"value": "true", "unit": "", "timestamp": "2026-11-23T10:00:10.000Z"}


def test_revoking_stops_the_next_answer_at_once(scene: Scene) -> None:
    world = scene.world
    world.store.grant(VIN, scene.client, ["VEHICLE_STATUS"], world.now())
    assert world.service.telematic_data(scene.anna, scene.client, VIN, scene.container)
    world.service.revoke(scene.anna, VIN, scene.client, world.now())
    with pytest.raises(Forbidden, match="not consented"):
        world.service.telematic_data(scene.anna, scene.client, VIN, scene.container)
    assert len(world.store.transfers(scene.anna)) == 1  # the refused request transferred nothing


def test_a_client_without_consent_reads_no_build_sim_capability_or_vin(scene: Scene) -> None:
    """Equipment, SIM state and capability reasons (which name the categories the owner blocked) are
    the owner's to share too: never granted, or revoked, the client gets Forbidden and no VIN."""
    world = scene.world
    for stage in ("never granted", "revoked"):
        with pytest.raises(Forbidden, match="not consented"):
            world.service.basic_data(scene.anna, scene.client, VIN)
        with pytest.raises(Forbidden, match="not consented"):
            world.service.capabilities(scene.anna, scene.client, VIN)
        assert world.service.vehicle_mappings(scene.anna, scene.client) == [], stage
        world.store.grant(VIN, scene.client, [DOOR], world.now())
        assert world.service.basic_data(scene.anna, scene.client, VIN)["vin"] == VIN
        assert world.service.capabilities(scene.anna, scene.client, VIN)
        world.service.revoke(scene.anna, VIN, scene.client, world.now())


def test_after_an_owner_change_the_seller_reads_nothing(scene: Scene) -> None:
    world = scene.world
    world.store.grant(VIN, scene.client, [DOOR], world.now())
    world.owner_change(VIN)
    assert world.service.vehicle_mappings(scene.anna) == []
    with pytest.raises(Forbidden):
        world.service.telematic_data(scene.anna, scene.client, VIN, scene.container)


def test_a_vehicle_of_another_account_or_none_is_forbidden_alike(scene: Scene) -> None:
    world = scene.world
    world.store.grant(VIN, scene.client, [DOOR], world.now())
    for vin in (OTHER_VIN, "WBA00000000000000"):  # Ben's car, and one nobody has
        with pytest.raises(Forbidden, match="not mapped to this customer"):
            world.service.telematic_data(scene.anna, scene.client, vin, scene.container)
        with pytest.raises(Forbidden):
            world.service.basic_data(scene.anna, scene.client, vin)
        with pytest.raises(Forbidden):
            world.service.capabilities(scene.anna, scene.client, vin)
    assert world.store.transfers(scene.anna) == []


@pytest.mark.parametrize(
    "vin",
    ["", "wmwzzz3cz2e123456", "WMWZZZ3CZ2E12345O", "X" * 100_000, 17],
    ids=["empty", "lower case", "letter O", "100k characters", "a number"],
)
def test_a_malformed_vin_is_a_bad_request(scene: Scene, vin: object) -> None:
    with pytest.raises(BadRequest) as refused:
        scene.world.service.telematic_data(scene.anna, scene.client, vin, scene.container)  # type: ignore[arg-type]
    assert len(refused.value.reason) <= 500


def test_another_accounts_container_is_not_found(scene: Scene) -> None:
    world = scene.world
    world.store.grant(OTHER_VIN, scene.client, [DOOR], world.now())
    with pytest.raises(NotFound):
        world.service.telematic_data(scene.ben, scene.client, OTHER_VIN, scene.container)  # Anna's container id
    with pytest.raises(NotFound):
        world.service.delete_container(scene.ben, scene.client, scene.container)
    assert [found.container_id for found in world.service.containers(scene.anna, scene.client)] == [scene.container]


def test_an_unknown_gcid_is_unauthorized(scene: Scene) -> None:
    with pytest.raises(Unauthorized):
        scene.world.service.vehicle_mappings("00000000-0000-4000-8000-000000000000")
    with pytest.raises(Unauthorized):
        scene.world.service.containers("x" * 1_000_000, scene.client)


def test_mappings_and_basic_data_say_what_the_backend_knows(scene: Scene) -> None:
    world = scene.world
    world.store.grant(VIN, scene.client, [DOOR], world.now())
    assert world.service.vehicle_mappings(scene.anna) == [VehicleMapping(vin=VIN, mapped_since=START)]
    assert world.service.vehicle_mappings(scene.anna, scene.client) == [VehicleMapping(vin=VIN, mapped_since=START)]
    basic = world.service.basic_data(scene.anna, scene.client, VIN)
    assert basic["vin"] == VIN
    assert basic["brand"] == "BMW"
    assert basic["isTelematicsCapable"] is True
    assert basic["simStatus"] == "active"


def test_the_emergency_call_key_carries_its_time_and_never_the_msd(scene: Scene) -> None:
    world = scene.world
    world.provisioning.set_legal_ecall(VIN, True)
    world.store.grant(VIN, scene.client, [ECALL], world.now())
    world.clock.advance(60)
    started = world.now()
    body = {
        "event": "transition",
        "session": 1,
        "session_started_ms": to_millis(started),
        "msd": "AQIDBA==",
        "lat": 48.1,
    }
    world.store_record(VIN, body, kind=RecordKind.ECALL)
    data = world.service.telematic_data(scene.anna, scene.client, VIN, scene.container)
    assert data == {ECALL: {"value": "2026-11-23T10:01:00.000Z", "unit": "", "timestamp": "2026-11-23T10:01:00.000Z"}}


def test_create_container_refuses_what_is_not_a_list(scene: Scene) -> None:
    with pytest.raises(BadRequest, match="list"):
        scene.world.service.create_container(scene.anna, scene.client, "n", "p", DOOR)


def test_grant_through_the_service_is_the_owners_only(scene: Scene) -> None:
    world = scene.world
    with pytest.raises(Forbidden):
        world.service.grant(scene.ben, VIN, scene.client, [DOOR])  # Ben does not own Anna's car
    assert world.service.grant(scene.anna, VIN, scene.client, [DOOR]) == {DOOR}
    assert world.service.consents(scene.anna) == [{"vin": VIN, "clientId": scene.client, "keys": [DOOR]}]
    assert world.service.consents(scene.ben) == []
