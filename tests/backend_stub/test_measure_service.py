"""The backend's measure service on the in-memory MQTT twin, with a database thread as the app runs it:
the scheduler's pass (booking the answers, then the tick) runs on the database thread, and the orders
it returns are published from the loop, in order, QoS 1, not retained."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiomqtt
import cbor2
import pytest
from nacl.public import Box, PrivateKey

from backend_stub.database_thread import DatabaseThread
from backend_stub.ingest import Ingest
from backend_stub.measure_service import MeasureService
from backend_stub.measure_store import MeasureStore
from backend_stub.measures import MeasureScheduler
from backend_stub.store import BackendStore
from hil.mqtt_twin import MemoryBroker, Publication
from tcu.backoff import Backoff
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from tcu.uplink.mqtt_port import MqttClient
from telematics_wire.ecu_keys import load_key_specs
from telematics_wire.envelope import seal_record
from telematics_wire.measure_order import MeasureOrder, verify_order
from telematics_wire.measure_plan import Fault, one_step_per_change
from telematics_wire.records import Record, RecordKind
from telematics_wire.vehicle_mode import VehicleMode
from tests.backend_stub.test_measures import KEY
from tests.conftest import OTHER_VIN, VIN, running_task
from tests.settle import settle

FAULT = Fault(ref="TICKET-1 firewall blocks the traffic service", service="gateway")
PLAN = one_step_per_change({"gateway.firewall_rules": "v13"}, expected_ms=1000)


@dataclass
class ThreadNotingClock(ManualClock):
    """A manual clock that notes the thread each reading is taken on: the scheduler reads it once per tick."""

    threads: set[str] = field(default_factory=set)

    def now(self) -> datetime:
        self.threads.add(threading.current_thread().name)
        return super().now()


@dataclass
class Backend:
    records: BackendStore
    measures: MeasureStore
    ingest: Ingest
    scheduler: MeasureScheduler
    service: MeasureService
    database: DatabaseThread
    broker: MemoryBroker
    clock: ThreadNotingClock
    box: Box  # the vehicle's side
    seq: int = 0

    def send(self, measure_id: str, vin: str = VIN) -> None:
        self.scheduler.send(
            vin=vin, measure_id=measure_id, fault=FAULT, steps=PLAN, allowed_states=(VehicleMode.PARKED,)
        )

    async def from_vehicle(self, kind: str, payload: bytes) -> None:
        """What the vehicle sends, handled by ingest on the database thread, as the ingest service does."""

        def handle() -> None:
            with self.records.transaction():
                self.ingest.handle(f"vehicles/{VIN}/up/{kind}", payload)

        await self.database.run(handle)

    async def answer(self, measure_id: str, attempt: int, status: str, code: str) -> None:
        self.seq += 1
        body = {"type": "measure_result", "measure_id": measure_id, "attempt": attempt, "status": status, "code": code}
        record = Record(kind=RecordKind.EVENT, created=self.clock.now(), body=body)
        await self.from_vehicle("records", seal_record(self.box, VIN, self.seq, record))

    def orders(self) -> list[Publication]:
        return [p for p in self.broker.published if p.topic.endswith("/down/measure")]

    def verified(self) -> list[MeasureOrder]:
        specs = load_key_specs()
        return [
            verify_order(p.payload, KEY.verify_key, vin=p.topic.split("/")[1], now=self.clock.now(), specs=specs)
            for p in self.orders()
        ]


@pytest.fixture
async def backend(tmp_path: Path, vehicle_key: PrivateKey, backend_key: PrivateKey) -> AsyncIterator[Backend]:
    clock = ThreadNotingClock()
    path = tmp_path / "backend.sqlite3"
    records = BackendStore(path)
    for vin in (VIN, OTHER_VIN):
        records.enroll(vin, bytes(vehicle_key.public_key), clock.now())
    measures = MeasureStore(path)
    scheduler = MeasureScheduler(
        measures,
        signing_key=KEY,
        clock=clock,
        vehicle_mode=lambda _vin: "parked",
        online=records.online,
        backoff=Backoff(base_s=60, cap_s=600, jitter=0),
        rng=random.Random(1),
    )
    broker = MemoryBroker()

    def clients(identifier: str, will: aiomqtt.Will | None) -> MqttClient:
        return broker.client(identifier, will=will)

    database = DatabaseThread("test-backend-db")
    # An hour between polls: whatever the test sees sent was sent at once, by a wake-up.
    service = MeasureService(scheduler, BrokerConfig(), poll_s=3600, database=database, clients=clients)
    ingest = Ingest(records, backend_key, clock, max_payload_bytes=64 * 1024)
    service.attach(ingest)
    backend = Backend(
        records, measures, ingest, scheduler, service, database, broker, clock, Box(vehicle_key, backend_key.public_key)
    )
    try:
        yield backend
    finally:
        database.close()
        measures.close()
        records.close()


@contextlib.asynccontextmanager
async def running(backend: Backend) -> AsyncIterator[None]:
    async with running_task(backend.service.run()):
        async with asyncio.timeout(5):
            await backend.service.shell.connected.wait()
        yield


async def test_the_orders_due_are_published_in_order_and_the_tick_runs_on_the_database_thread(
    backend: Backend,
) -> None:
    backend.send("M1", VIN)
    backend.clock.advance(1)
    backend.send("M2", OTHER_VIN)
    backend.clock.threads.clear()
    async with running(backend):
        assert await settle(lambda: len(backend.orders()) == 2)
    ticked_on = set(backend.clock.threads)
    assert ticked_on  # the tick read the clock...
    assert all(name.startswith("test-backend-db") for name in ticked_on), ticked_on  # ...on the database thread
    assert [(o.measure_id, o.vin, o.attempt) for o in backend.verified()] == [("M1", VIN, 1), ("M2", OTHER_VIN, 1)]
    assert [(p.topic, p.qos, p.retain) for p in backend.orders()] == [
        (f"vehicles/{VIN}/down/measure", 1, False),
        (f"vehicles/{OTHER_VIN}/down/measure", 1, False),
    ]


async def test_an_answer_booked_through_ingest_sends_the_retry_at_once(backend: Backend) -> None:
    await backend.from_vehicle("status", cbor2.dumps({"online": True, "ts": 0, "agent": "test"}))
    backend.send("M1")
    async with running(backend):
        assert await settle(lambda: len(backend.orders()) == 1)
        # Coverage lost: the retry waits until the vehicle is online, which it is; not for the hour's poll.
        await backend.answer("M1", 1, "rolled_back", "coverage_lost")
        assert await settle(lambda: len(backend.orders()) == 2)
    assert [(o.measure_id, o.attempt) for o in backend.verified()] == [("M1", 1), ("M1", 2)]
    history = backend.measures.history("M1")
    assert [(a.attempt, a.status, a.code) for a in history][:1] == [(1, "rolled_back", "coverage_lost")]
