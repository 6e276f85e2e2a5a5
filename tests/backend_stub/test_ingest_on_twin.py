"""The backend's ingest service on the in-memory MQTT twin (`hil.mqtt_twin`): its link is typed by the
`MqttClient` protocol, so the same service runs on a broker or without one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from nacl.public import Box, PrivateKey

from backend_stub.ingest import Ingest, IngestService
from backend_stub.store import BackendStore
from hil.mqtt_twin import MemoryBroker
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from tcu.uplink.mqtt_port import MqttClient
from telematics_wire.envelope import open_ack, seal_record
from telematics_wire.records import Record, RecordKind, to_millis
from tests.conftest import VIN, running_task

RECORDS = f"vehicles/{VIN}/up/records"
ACKS = f"vehicles/{VIN}/down/ack"


@pytest.fixture
async def twin_ingest(
    tmp_path: Path, vehicle_key: PrivateKey, backend_key: PrivateKey, clock: ManualClock
) -> AsyncIterator[tuple[MemoryBroker, BackendStore]]:
    """A broker twin with the backend's ingest subscribed to it, and the store it writes."""
    broker = MemoryBroker()
    store = BackendStore(tmp_path / "backend.sqlite3")
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())

    def clients(identifier: str, will: aiomqtt.Will | None) -> MqttClient:
        return broker.client(identifier, will=will)

    ingest = Ingest(store, backend_key, clock, max_payload_bytes=64 * 1024)
    service = IngestService(ingest, store, BrokerConfig(), clients=clients)
    try:
        async with running_task(service.run()):
            async with asyncio.timeout(5):
                await service.connected.wait()
            yield broker, store
    finally:
        store.close()


async def test_a_vehicle_record_in_an_ack_out(
    twin_ingest: tuple[MemoryBroker, BackendStore], vehicle_box: Box, clock: ManualClock
) -> None:
    broker, store = twin_ingest
    now = clock.now()
    record = Record(
        kind=RecordKind.TELEMETRY, created=now, body={"signals": {"Vehicle.Speed": {"v": 42.0, "t": to_millis(now)}}}
    )
    vehicle = broker.client(VIN)
    async with vehicle:
        await vehicle.subscribe(ACKS, qos=1)
        await vehicle.publish(RECORDS, seal_record(vehicle_box, VIN, 1, record), qos=1)
        async with asyncio.timeout(5):
            ack = await anext(aiter(vehicle.messages))
    assert ack.topic.value == ACKS
    assert isinstance(ack.payload, bytes)
    assert open_ack(vehicle_box, ack.payload, vin=VIN).seqs == {1}
    assert store.seqs(VIN) == [1]  # acknowledged once stored
    assert [(value.path, value.value) for value in store.last_values(VIN)] == [("Vehicle.Speed", 42.0)]
