"""Who a stream is for and what it may carry, as the backend wires it: the client holding the owner's
streaming login (newest token wins) gets its own consented keys, nobody gets anything while no client
holds it, and only keys the capability service calls available for the VIN now go out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from backend_stub.cardata.catalogue import load_cardata_catalogue
from backend_stub.cardata.streaming import CardataStreamer
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from tests.backend_stub.cardata.streaming_world import LATITUDE, MILEAGE, SPEED, StreamWorld
from tests.conftest import VIN

MakeStreamer = Callable[..., CardataStreamer]


@dataclass
class FixedAvailability:
    """The capability service's verdict, as the test sets it; counts how often it was asked."""

    keys: frozenset[str]
    asked: list[str] = field(default_factory=list)

    def available(self, vin: str, now: datetime) -> frozenset[str]:
        self.asked.append(vin)
        return self.keys

    def close(self) -> None:
        pass


@pytest.fixture
def streamer(world: StreamWorld, tmp_path: Path, clock: ManualClock) -> Iterator[MakeStreamer]:
    made: list[CardataStreamer] = []

    def make(**options: Any) -> CardataStreamer:
        built = CardataStreamer(
            load_cardata_catalogue(), tmp_path / "backend.sqlite3", BrokerConfig(port=1), clock, **options
        )
        made.append(built)
        world.streamer = built  # the world's records and rounds go through it
        return built

    yield make
    for built in made:
        built._thread.submit(built._close)
        built._thread.close()


READING = {"Vehicle.TraveledDistance": 20_000.5, "Vehicle.Speed": 42.0, "Vehicle.CurrentLocation.Latitude": 48.1}


async def test_the_login_holder_gets_its_own_keys_and_nobody_hears_without_a_holder(
    world: StreamWorld, streamer: MakeStreamer
) -> None:
    insurer, fleet = world.add_client(MILEAGE, SPEED), world.add_client(SPEED, LATITUDE)
    holders: dict[str, str] = {world.gcid: fleet}
    streamer(holder=holders.get)
    world.telemetry(**READING)
    ((_, message),) = await world.round()
    assert set(message["data"]) == {SPEED, LATITUDE}, "the holder's keys, not only those both may receive"
    assert world.transfers() == [(fleet, "stream", frozenset({SPEED, LATITUDE}))]

    holders[world.gcid] = insurer  # the insurer signed in last: its token is the password now
    world.clock.advance(60)
    world.telemetry(**READING)
    ((_, message),) = await world.round()
    assert set(message["data"]) == {MILEAGE, SPEED}

    del holders[world.gcid]  # the login ended (expired, every consent revoked)
    world.clock.advance(60)
    world.telemetry(**READING)
    assert await world.round() == [], "published to a topic nobody may read, and logged as a transfer"


async def test_only_keys_available_now_go_out_and_the_verdict_is_read_again_after_a_change(
    world: StreamWorld, streamer: MakeStreamer
) -> None:
    client = world.add_client(MILEAGE, SPEED, LATITUDE)
    availability = FixedAvailability(frozenset({MILEAGE}))  # say: position and speed blocked in the car
    streamer(availability=availability)
    world.telemetry(**READING)
    ((_, message),) = await world.round()
    assert set(message["data"]) == {MILEAGE}

    availability.keys = frozenset({MILEAGE, SPEED})  # the customer unblocked driving data in the car...
    world.store.grant(VIN, client, [SPEED], world.clock.now())  # any commit since drops the cached verdict
    world.clock.advance(60)
    world.telemetry(**READING)
    ((_, message),) = await world.round()
    assert set(message["data"]) == {MILEAGE, SPEED}
    assert len(availability.asked) == 2, "the verdict is read once per round, not per key or message"


async def test_a_vehicle_nobody_consents_to_is_never_looked_up(world: StreamWorld, streamer: MakeStreamer) -> None:
    availability = FixedAvailability(frozenset())
    streamer(availability=availability)
    world.telemetry(**READING)
    assert await world.round() == []
    assert availability.asked == [], "a fleet without third parties pays nothing for the capability check"
