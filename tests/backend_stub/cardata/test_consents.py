"""CarData consent, containers and the transfer log: consent is explicit, revocable at any time, and
ends with the account link — an owner change ends every consent (the real AccountStore path)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend_stub.cardata.consents import CardataStore
from backend_stub.cardata.errors import BadRequest, Conflict, Forbidden, NotFound
from backend_stub.cardata.records import MAX_CONTAINERS
from backend_stub.errors import BackendConfigError
from tests.backend_stub.cardata.cardata_world import CardataWorld, Snapshot, open_world
from tests.conftest import OTHER_VIN, VIN

ANNA, BEN = "anna@example.org", "ben@example.org"
DOOR = "vehicle.cabin.door.row1.driver.isOpen"
LATITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.latitude"


@pytest.fixture
def world(tmp_path: Path, blank_cardata_database: Snapshot) -> Iterator[CardataWorld]:
    world = open_world(tmp_path, snapshot=blank_cardata_database)
    world.enroll(VIN)
    world.enroll(OTHER_VIN)
    yield world
    world.close()


def test_a_gcid_is_made_once_per_account_and_names_it_back(world: CardataWorld) -> None:
    anna = world.account(ANNA)
    assert world.store.gcid_of(ANNA) == anna
    assert world.store.account_of(anna) == ANNA
    assert world.account(BEN) != anna
    assert world.store.account_of("00000000-0000-4000-8000-000000000000") is None
    with pytest.raises(NotFound):
        world.store.gcid_of("nobody@example.org")


def test_only_the_linked_owner_consents_and_only_to_a_registered_client(world: CardataWorld) -> None:
    client = world.store.add_client("Insurer")
    with pytest.raises(Forbidden, match="no linked account"):
        world.store.grant(VIN, client.client_id, [DOOR], world.now())
    world.account(ANNA)
    world.pair(VIN, ANNA)
    with pytest.raises(NotFound, match="register it first"):
        world.store.grant(VIN, "00000000-0000-4000-8000-000000000000", [DOOR], world.now())
    with pytest.raises(BadRequest, match="not a UUID"):
        world.store.grant(VIN, "x" * 10_000, [DOOR], world.now())
    assert world.store.consented_keys(VIN, client.client_id, world.now()) == frozenset()


def test_grant_adds_keys_and_categories_revoke_withdraws_at_once(world: CardataWorld) -> None:
    gcid = world.account(ANNA)
    world.pair(VIN, ANNA)
    client = world.store.add_client("Fleet manager").client_id
    assert world.store.grant(VIN, client, [DOOR], world.now()) == {DOOR}
    keys = world.store.grant(VIN, client, ["TYRE_DATA"], world.now())
    assert DOOR in keys
    assert "vehicle.chassis.axle.row1.wheel.left.tire.pressure" in keys
    assert world.store.consenting_clients(VIN, world.now()) == [(gcid, client, keys)]
    assert world.store.revoke(VIN, client, world.now(), keys_or_categories=["TYRE_DATA"]) == {DOOR}
    assert world.store.consented_keys(VIN, client, world.now()) == {DOOR}
    assert world.store.revoke(VIN, client, world.now()) == frozenset()
    assert world.store.consented_keys(VIN, client, world.now()) == frozenset()
    assert world.store.consenting_clients(VIN, world.now()) == []
    history = world.store.consents_of(gcid)
    assert [entry["ended"] is not None for entry in history] == [True, True, True]


def test_unknown_keys_and_oversized_requests_grant_nothing(world: CardataWorld) -> None:
    world.account(ANNA)
    world.pair(VIN, ANNA)
    client = world.store.add_client("Insurer").client_id
    for bad in (["vehicle.no.such.key"], ["x" * 1_000_000], [DOOR] * 10_000, [7], "VEHICLE_STATUS", []):
        with pytest.raises(BadRequest) as refused:
            world.store.grant(VIN, client, bad, world.now())
        assert len(str(refused.value)) < 600  # a megabyte name is not echoed back
    assert world.store.consented_keys(VIN, client, world.now()) == frozenset()


def test_an_owner_change_ends_every_consent_and_the_new_owner_starts_with_none(world: CardataWorld) -> None:
    anna = world.account(ANNA)
    ben = world.account(BEN)
    world.pair(VIN, ANNA)
    insurer = world.store.add_client("Insurer").client_id
    fleet = world.store.add_client("Fleet").client_id
    world.store.grant(VIN, insurer, [DOOR], world.now())
    world.store.grant(VIN, fleet, ["VEHICLE_STATUS"], world.now())
    world.clock.advance(60)
    world.owner_change(VIN)  # the car reports it: AccountStore ends the link
    assert world.store.consenting_clients(VIN, world.now()) == []
    assert world.store.consented_keys(VIN, insurer, world.now()) == frozenset()
    assert world.store.vehicles_of(anna) == []
    assert all(entry["ended"] == world.now() for entry in world.store.consents_of(anna))
    world.pair(VIN, BEN)  # the buyer pairs: his link, no consent of the seller's
    assert world.store.vehicles_of(ben) == [VIN]
    assert world.store.consented_keys(VIN, insurer, world.now()) == frozenset()
    assert world.store.revoke(VIN, insurer, world.now()) == frozenset()


def test_unlinking_in_the_portal_ends_consents_too(world: CardataWorld) -> None:
    world.account(ANNA)
    world.pair(VIN, ANNA)
    client = world.store.add_client("Insurer").client_id
    world.store.grant(VIN, client, [DOOR], world.now())
    world.accounts.unlink(VIN, world.now(), reason="customer ended it in the portal")
    assert world.store.consented_keys(VIN, client, world.now()) == frozenset()


def test_a_consent_counts_from_its_grant_and_per_vehicle(world: CardataWorld) -> None:
    world.account(ANNA)
    world.pair(VIN, ANNA)
    world.pair(OTHER_VIN, ANNA)
    client = world.store.add_client("Insurer").client_id
    world.store.grant(VIN, client, [DOOR], world.now())
    assert world.store.consented_keys(VIN, client, world.now() - timedelta(seconds=1)) == frozenset()
    assert world.store.consented_keys(OTHER_VIN, client, world.now()) == frozenset()


def test_containers_belong_to_their_account_and_client(world: CardataWorld) -> None:
    anna = world.account(ANNA)
    ben = world.account(BEN)
    client = world.store.add_client("Home Assistant").client_id
    other = world.store.add_client("Insurer").client_id
    made = world.store.create_container(anna, client, "doors", "dashboard", [DOOR, LATITUDE], world.now())
    assert world.store.container(anna, client, made.container_id) == made
    assert world.store.containers(anna, client) == [made]
    for gcid, client_id, container_id in (
        (ben, client, made.container_id),  # another account's container id
        (anna, other, made.container_id),  # another client's
        (anna, client, "0" * 32),
        (anna, client, "x" * 100_000),
    ):
        with pytest.raises(NotFound):
            world.store.container(gcid, client_id, container_id)
        with pytest.raises(NotFound):
            world.store.delete_container(gcid, client_id, container_id, world.now())
    assert world.store.containers(anna, client) == [made]  # the foreign deletes changed nothing
    world.store.delete_container(anna, client, made.container_id, world.now())
    with pytest.raises(NotFound):
        world.store.container(anna, client, made.container_id)
    assert world.store.containers(anna, client) == []


@pytest.mark.parametrize(
    ("name", "purpose", "keys", "message"),
    [
        ("x" * 65, "ok", [DOOR], "container name"),
        ("ok", "p" * 10_000, [DOOR], "container purpose"),
        ("", "ok", [DOOR], "container name"),
        ("a\x00b", "ok", [DOOR], "container name"),
        (42, "ok", [DOOR], "must be text"),
        ("ok", "ok", [], "at least one"),
        ("ok", "ok", ["VEHICLE_STATUS"], "is a category"),
        ("ok", "ok", ["vehicle.no.such"], "unknown CarData technical descriptor"),
        ("ok", "ok", [f"vehicle.key{i}" for i in range(10_000)], "at most"),
    ],
)
def test_a_bad_container_is_refused_and_nothing_is_stored(
    world: CardataWorld, name: object, purpose: object, keys: list[str], message: str
) -> None:
    anna = world.account(ANNA)
    client = world.store.add_client("Home Assistant").client_id
    with pytest.raises(BadRequest, match=message):
        world.store.create_container(anna, client, name, purpose, keys, world.now())
    assert world.store.containers(anna, client) == []


def test_containers_are_capped_per_account_and_client(world: CardataWorld) -> None:
    anna = world.account(ANNA)
    client = world.store.add_client("Home Assistant").client_id
    for number in range(MAX_CONTAINERS):
        world.store.create_container(anna, client, f"c{number}", "p", [DOOR], world.now())
    with pytest.raises(Conflict, match="delete one first"):
        world.store.create_container(anna, client, "one more", "p", [DOOR], world.now())
    assert len(world.store.containers(anna, client)) == MAX_CONTAINERS


def test_transfers_are_logged_per_account_and_empty_ones_are_not(world: CardataWorld) -> None:
    anna = world.account(ANNA)
    ben = world.account(BEN)
    client = world.store.add_client("Insurer").client_id
    assert world.store.log_transfer(anna, client, VIN, "rest", [], world.now()) is None
    world.store.log_transfer(anna, client, VIN, "rest", [DOOR], world.now())
    world.clock.advance(1)
    world.store.log_transfer(anna, client, OTHER_VIN, "stream", [LATITUDE, DOOR], world.now())
    world.store.log_transfer(ben, client, VIN, "push", [DOOR], world.now())
    logged = world.store.transfers(anna)
    assert [(t.vin, t.channel, t.keys) for t in logged] == [
        (VIN, "rest", {DOOR}),
        (OTHER_VIN, "stream", {LATITUDE, DOOR}),
    ]
    assert [t.vin for t in world.store.transfers(anna, vin=OTHER_VIN)] == [OTHER_VIN]
    with pytest.raises(ValueError, match="channel"):
        world.store.log_transfer(anna, client, VIN, "email", [DOOR], world.now())


def test_a_client_name_is_checked(world: CardataWorld) -> None:
    for bad in ("", "x" * 65, "line\nbreak", None):
        with pytest.raises(BadRequest):
            world.store.add_client(bad)
    assert world.store.clients() == []


def test_the_store_refuses_a_database_without_account_tables(tmp_path: Path) -> None:
    with pytest.raises(BackendConfigError, match="AccountStore first"):
        CardataStore(tmp_path / "empty.sqlite3")
