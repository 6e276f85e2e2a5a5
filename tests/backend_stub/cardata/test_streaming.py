"""CarData streaming: stored records become messages on `<gcid>/<vin>` with the consented keys only, at
most as often as each key allows, stopping at once when consent is revoked, each one logged."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from backend_stub.cardata.catalogue import load_cardata_catalogue
from backend_stub.cardata.streaming import CardataStreamer, audiences
from backend_stub.ingest import Ingest
from backend_stub.store import BackendStore
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from telematics_wire.records import ReceivedRecord, RecordKind
from tests.backend_stub.cardata.streaming_world import (
    LATITUDE,
    MILEAGE,
    SPEED,
    StreamWorld,
)
from tests.conftest import VIN


async def test_a_stored_record_goes_out_with_the_consented_keys_only(world: StreamWorld) -> None:
    client = world.add_client(MILEAGE, LATITUDE)
    world.telemetry(
        **{"Vehicle.TraveledDistance": 20_000.5, "Vehicle.Speed": 42.0, "Vehicle.CurrentLocation.Latitude": 48.1}
    )

    ((topic, message),) = await world.round()

    assert topic == f"{world.gcid}/{VIN}"
    assert set(message) == {"vin", "entityId", "topic", "timestamp", "data"}
    assert (message["vin"], message["topic"]) == (VIN, topic)
    assert message["timestamp"] == "2026-11-23T10:00:00.000Z"
    assert message["data"] == {  # no speed: not consented
        MILEAGE: {"value": 20_000.5, "timestamp": "2026-11-23T10:00:00.000Z"},
        LATITUDE: {"value": 48.1, "timestamp": "2026-11-23T10:00:00.000Z"},
    }
    assert world.transfers() == [(client, "stream", frozenset({MILEAGE, LATITUDE}))]


async def test_nothing_goes_out_without_consent(world: StreamWorld) -> None:
    world.add_client(SPEED)
    world.telemetry(**{"Vehicle.TraveledDistance": 1.0})  # a key nobody may receive
    assert await world.round() == []
    assert world.transfers() == []


async def test_a_key_goes_out_at_most_once_per_interval_and_the_latest_value_wins(world: StreamWorld) -> None:
    world.add_client(SPEED)  # at most every 5 s
    world.telemetry(**{"Vehicle.Speed": 10.0})
    assert [m["data"][SPEED]["value"] for _, m in await world.round()] == [10.0]
    for speed in (20.0, 30.0):  # too early: held, and the newer replaces the older
        world.clock.advance(1.0)
        world.telemetry(**{"Vehicle.Speed": speed})
        assert await world.round() == []
    assert world.streamer.stats.held == 1
    world.clock.advance(2.0)
    assert await world.round() == []  # 4 s after the first: still not due
    world.clock.advance(1.0)
    ((_, message),) = await world.round()
    assert message["data"][SPEED]["value"] == 30.0  # coalesced: 20 km/h never went out
    assert world.streamer.stats.held == 0


async def test_revocation_stops_the_stream_at_once_and_drops_what_was_held(world: StreamWorld) -> None:
    client = world.add_client(SPEED)
    world.telemetry(**{"Vehicle.Speed": 10.0})
    assert len(await world.round()) == 1
    world.clock.advance(1.0)
    world.telemetry(**{"Vehicle.Speed": 20.0})  # held until the interval has passed
    assert await world.round() == []

    world.store.revoke(VIN, client, world.clock.now())  # another connection, as the HTTP service's
    world.telemetry(**{"Vehicle.Speed": 30.0})
    assert await world.round() == []
    world.clock.advance(10.0)
    assert await world.round() == []  # the held reading went with the consent
    assert world.streamer.stats.held == 0
    assert [channel for _, channel, _ in world.transfers()] == ["stream"]


async def test_consent_granted_later_is_seen_at_once(world: StreamWorld) -> None:
    world.telemetry(**{"Vehicle.Speed": 10.0})
    assert await world.round() == []  # cached: no consent for this VIN
    world.add_client(SPEED)
    world.telemetry(**{"Vehicle.Speed": 11.0})
    assert len(await world.round()) == 1


async def test_values_that_cannot_go_out_are_left_out_and_the_rest_goes(world: StreamWorld) -> None:
    world.add_client(MILEAGE, SPEED, LATITUDE)
    world.record(
        RecordKind.TELEMETRY,
        {
            "signals": {
                "Vehicle.TraveledDistance": {"v": 10**5000, "t": 0},  # no JSON reader keeps it
                "Vehicle.Speed": {"v": float("nan"), "t": 0},
                "Vehicle.CurrentLocation.Latitude": {"v": 48.1, "t": 2**64},  # a far-future stamp
                "Vehicle.Unknown.Signal": {"v": 1},
                "not a map": 5,
                7: {"v": 1},
            }
        },
    )
    world.record(RecordKind.TELEMETRY, {"signals": ["not", "a", "map"]})
    world.record(RecordKind.TELEMETRY, {"signals": {"Vehicle.Speed": {"v": 3.0, "q": "invalid"}}})

    ((_, message),) = await world.round()
    assert message["data"] == {LATITUDE: {"value": 48.1, "timestamp": "2026-11-23T10:00:00.000Z"}}


async def test_a_full_queue_drops_the_oldest_and_counts_them(tmp_path: Path, clock: ManualClock) -> None:
    streamer = CardataStreamer(
        load_cardata_catalogue(), tmp_path / "db.sqlite3", BrokerConfig(port=1), clock, max_queue=2
    )
    for seq in range(1, 6):
        streamer._inbox.put(_record(seq, clock.now()))
    records, dropped = streamer._inbox.take()
    assert ([r.seq for r in records], dropped) == ([4, 5], 3)
    streamer._thread.close()


def test_the_streamer_hears_every_record_ingest_stores(tmp_path: Path, clock: ManualClock, backend_key: object) -> None:
    store = BackendStore(tmp_path / "backend.sqlite3")
    ingest = Ingest(store, backend_key, clock, 64 * 1024)  # type: ignore[arg-type]
    streamer = CardataStreamer(load_cardata_catalogue(), tmp_path / "backend.sqlite3", BrokerConfig(port=1), clock)
    streamer.attach(ingest)
    ingest.notify_stored(_record(1, clock.now()))
    records, _ = streamer._inbox.take()
    assert [r.seq for r in records] == [1]
    streamer._thread.close()
    store.close()


def test_several_clients_of_one_owner_share_the_topic_with_the_keys_all_may_receive() -> None:
    rows = [("g", "insurer", frozenset({"a", "b"})), ("g", "fleet", frozenset({"b", "c"}))]
    (both,) = audiences(rows, holder=None)
    assert (both.clients, both.keys) == (("insurer", "fleet"), frozenset({"b"}))
    # The one whose id_token is the owner's streaming password gets its own keys; a holder without
    # consent gets nothing.
    (insurer,) = audiences(rows, holder=lambda gcid: "insurer")
    assert (insurer.clients, insurer.keys) == (("insurer",), frozenset({"a", "b"}))
    assert audiences(rows, holder=lambda gcid: "someone else") == []


def _record(seq: int, now: datetime) -> ReceivedRecord:
    return ReceivedRecord(vin=VIN, seq=seq, kind=RecordKind.TELEMETRY, created=now, body={"signals": {}})
