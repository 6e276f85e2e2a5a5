"""A backend database with an owner, a linked vehicle and CarData clients, and a streamer on it that
publishes into a recording client: what the streaming and push tests drive."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey

from backend_stub.accounts import AccountStore, Sealer
from backend_stub.cardata.catalogue import load_cardata_catalogue
from backend_stub.cardata.consents import CardataStore
from backend_stub.cardata.streaming import CardataStreamer
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis
from tests.conftest import VIN

OWNER = "anna"
DOOR = "vehicle.cabin.door.row1.driver.isOpen"
LATITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.latitude"
LONGITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.longitude"
MILEAGE = "vehicle.vehicle.travelledDistance"
SPEED = "vehicle.vehicle.speed"
LAST_ECALL = "vehicle.safety.emergencyCall.lastCallTime"


@dataclass
class Recorder:
    """Stands in for the MQTT client: keeps what was published."""

    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        assert qos == 0  # BMW streams QoS 0
        assert not retain  # nothing kept for a later subscriber
        self.published.append((topic, json.loads(payload)))

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        taken, self.published = self.published, []
        return taken


@dataclass
class StreamWorld:
    clock: ManualClock
    store: CardataStore
    streamer: CardataStreamer
    recorder: Recorder
    gcid: str
    seq: int = 0

    def record(self, kind: RecordKind, body: Mapping[str, Any]) -> ReceivedRecord:
        """A record as ingest hands it to its observers once stored."""
        self.seq += 1
        record = ReceivedRecord(vin=VIN, seq=self.seq, kind=kind, created=self.clock.now(), body=body)
        self.streamer._inbox.put(record)  # what the ingest observer does (test_streaming checks attach)
        return record

    def telemetry(self, **values: object) -> ReceivedRecord:
        stamp = to_millis(self.clock.now())
        return self.record(RecordKind.TELEMETRY, {"signals": {p: {"v": v, "t": stamp} for p, v in values.items()}})

    async def round(self) -> list[tuple[str, dict[str, Any]]]:
        await self.streamer.publish_round(self.recorder)  # type: ignore[arg-type]
        return self.recorder.take()

    def add_client(self, *keys: str) -> str:
        client = self.store.add_client("insurer", self.clock.now()).client_id
        self.store.grant(VIN, client, keys, self.clock.now())
        return client

    def transfers(self) -> list[tuple[str, str, frozenset[str]]]:
        return [(t.client_id, t.channel, t.keys) for t in self.store.transfers(self.gcid, vin=VIN)]


def link_vehicle(path: Path, vin: str, account: str, now: datetime) -> None:
    """The owner's link (what pairing with the code read in the car makes; not what these tests test)."""
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO account_links (vin, account, linked_ms) VALUES (?, ?, ?)", (vin, account, to_millis(now))
        )


@pytest.fixture
def world(tmp_path: Path, clock: ManualClock) -> Iterator[StreamWorld]:
    path = tmp_path / "backend.sqlite3"
    accounts = AccountStore(
        path, sealer=Sealer(bytes(PrivateKey.generate())), signing_key=None, enrolled=lambda _v: True
    )
    accounts.create(OWNER, name="Anna", email="anna@example.org", now=clock.now())
    link_vehicle(path, VIN, OWNER, clock.now())
    store = CardataStore(path)
    streamer = CardataStreamer(load_cardata_catalogue(), path, BrokerConfig(port=1), clock)
    try:
        yield StreamWorld(clock, store, streamer, Recorder(), store.gcid_of(OWNER))
    finally:
        streamer._thread.submit(streamer._close)
        streamer._thread.close()
        store.close()
        accounts.close()
