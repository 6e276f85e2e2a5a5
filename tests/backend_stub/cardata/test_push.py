"""CarData push: vehicle events reach consenting clients at once, logged as "push"; an eCall is pushed
as its start time only, never anything of the MSD."""

from __future__ import annotations

from telematics_wire.records import RecordKind, to_millis
from tests.backend_stub.cardata.streaming_world import (
    DOOR,
    LAST_ECALL,
    LATITUDE,
    LONGITUDE,
    StreamWorld,
)
from tests.conftest import VIN


def _door(world: StreamWorld, value: bool) -> None:
    world.record(
        RecordKind.EVENT,
        {
            "type": "door",
            "path": "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen",
            "value": value,
            "previous": not value,
            "changed_at": to_millis(world.clock.now()),
        },
    )


async def test_door_events_go_out_at_once_whatever_the_interval(world: StreamWorld) -> None:
    client = world.add_client(DOOR)  # streamed at most every second
    _door(world, True)
    _door(world, False)  # the same instant: a push is never held back
    messages = await world.round()
    assert [m["data"][DOOR]["value"] for _, m in messages] == [True, False]
    assert {topic for topic, _ in messages} == {f"{world.gcid}/{VIN}"}
    assert world.transfers() == [(client, "push", frozenset({DOOR}))]  # one row for the round's pushes


async def test_the_parked_position_is_pushed_to_a_client_consenting_to_position(world: StreamWorld) -> None:
    world.add_client(LATITUDE, LONGITUDE)
    stamp = to_millis(world.clock.now())
    world.record(
        RecordKind.EVENT,
        {
            "type": "parked_position",
            "trigger": "parked",
            "position": {
                "Vehicle.CurrentLocation.Latitude": {"v": 48.137154, "t": stamp},
                "Vehicle.CurrentLocation.Longitude": {"v": 11.576124, "t": stamp},
            },
        },
    )
    ((_, message),) = await world.round()
    assert {key: item["value"] for key, item in message["data"].items()} == {LATITUDE: 48.137154, LONGITUDE: 11.576124}


async def test_an_ecall_is_pushed_as_its_start_time_and_nothing_of_the_msd(world: StreamWorld) -> None:
    client = world.add_client(LAST_ECALL, LATITUDE)
    started = to_millis(world.clock.now())
    msd_position = {"latitude": 52.5, "longitude": 13.4}
    world.record(
        RecordKind.ECALL,
        {
            "event": "transition",
            "session": 1,
            "session_started_ms": started,
            "call_type": "automatic",
            "from": "idle",
            "to": "triggered",
            "msd": b"\x01\x02secret",
            "position": msd_position,
            "Vehicle.CurrentLocation.Latitude": {"v": 52.5},
        },
    )
    world.record(  # later steps of the same call are no new eCall
        RecordKind.ECALL,
        {
            "event": "transition",
            "session": 1,
            "session_started_ms": started,
            "from": "dialling",
            "to": "call_established",
        },
    )
    ((_, message),) = await world.round()
    assert message["data"] == {
        LAST_ECALL: {"value": "2026-11-23T10:00:00.000Z", "timestamp": "2026-11-23T10:00:00.000Z"}
    }
    assert "52.5" not in str(message)
    assert "secret" not in str(message)
    assert world.transfers() == [(client, "push", frozenset({LAST_ECALL}))]


async def test_an_event_the_client_may_not_receive_is_not_pushed(world: StreamWorld) -> None:
    world.add_client(LATITUDE)
    _door(world, True)
    world.record(RecordKind.EVENT, {"type": "door", "path": 5, "value": True})  # malformed: nothing, no error
    world.record(RecordKind.EVENT, {"type": ["not", "a", "name"]})
    assert await world.round() == []
    assert world.transfers() == []
