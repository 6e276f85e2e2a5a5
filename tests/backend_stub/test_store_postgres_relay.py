"""An ingest worker relays the event records it stored to the backend's services through PostgreSQL
(`PostgresStore.relay`, `RelayListener`), not a pipe: only what committed, each once, and nothing lost
while the backend's connection was down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from nacl.public import Box, PrivateKey

from backend_stub.ingest_worker import RelayingIngest
from backend_stub.store_url import PostgresUrl
from tcu.clock import ManualClock
from telematics_wire.envelope import seal_record
from telematics_wire.records import ReceivedRecord, Record, RecordKind, to_millis
from tests.conftest import VIN, eventually

pytestmark = pytest.mark.postgres
RECORDS = f"vehicles/{VIN}/up/records"


@pytest.fixture
def worker(postgres_url: PostgresUrl, vehicle_key: PrivateKey, clock: ManualClock) -> Iterator[Any]:
    """An ingest worker's store, the vehicle enrolled (PostgresStore; psycopg is an optional extra)."""
    from backend_stub.store_postgres import PostgresStore  # noqa: PLC0415

    store = PostgresStore(postgres_url)
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    yield store
    store.close()


@pytest.fixture
def ingest(worker: Any, backend_key: PrivateKey, clock: ManualClock) -> RelayingIngest:
    return RelayingIngest(worker, backend_key, clock, 64 * 1024, relay=worker.relay)


class Heard:
    """The backend's side: a RelayListener handing records to a list, as to `Ingest.notify_stored`."""

    def __init__(self, url: PostgresUrl) -> None:
        from backend_stub.store_postgres_relay import RelayListener  # noqa: PLC0415

        self.records: list[ReceivedRecord] = []
        self.reconnect = asyncio.Event()  # the listener waits for it before connecting again
        self.listener = RelayListener(url, self.records.append, sleep=self._sleep)

    async def _sleep(self, _delay: float) -> None:
        await self.reconnect.wait()
        self.reconnect.clear()

    async def until(self, count: int) -> None:
        await eventually(lambda: len(self.records) >= count, within=10, what=f"{count} record(s) heard")


@contextlib.asynccontextmanager
async def listening(url: PostgresUrl) -> AsyncIterator[Heard]:
    heard = Heard(url)
    task = asyncio.create_task(heard.listener.run())
    try:
        async with asyncio.timeout(10):
            await heard.listener.connected.wait()
        yield heard
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _event(clock: ManualClock, kind: RecordKind = RecordKind.EVENT) -> Record:
    return Record(kind=kind, created=clock.now(), body={"type": "provisioning_result", "version": 1})


def _telemetry(clock: ManualClock) -> Record:
    body = {"signals": {"Vehicle.Speed": {"v": 50.0, "t": to_millis(clock.now())}}}
    return Record(kind=RecordKind.TELEMETRY, created=clock.now(), body=body)


def _store_batch(store: Any, ingest: RelayingIngest, *payloads: bytes) -> None:
    with store.transaction():
        for payload in payloads:
            ingest.handle(RECORDS, payload)
    ingest.take_acks()


def _terminate_listener(url: PostgresUrl) -> int:
    """End the backend's LISTENing connection from the server side, as a network failure would."""
    import psycopg  # noqa: PLC0415

    from backend_stub.store_postgres_relay import APPLICATION_NAME  # noqa: PLC0415

    with psycopg.connect(url.url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,)
        ).fetchall()
    return len(rows)


def _relay_rows(store: Any) -> int:
    return int(store._pg.execute("SELECT count(*) FROM event_relay").fetchone()[0])


async def test_an_event_a_worker_commits_is_heard_once_and_telemetry_not_at_all(
    postgres_url: PostgresUrl, worker: Any, ingest: RelayingIngest, vehicle_box: Box, clock: ManualClock
) -> None:
    async with listening(postgres_url) as heard:
        event = seal_record(vehicle_box, VIN, 2, _event(clock))
        _store_batch(worker, ingest, seal_record(vehicle_box, VIN, 1, _telemetry(clock)), event)
        await heard.until(1)
        _store_batch(worker, ingest, event)  # a resend after a lost ack: a duplicate, not relayed again
        _store_batch(worker, ingest, seal_record(vehicle_box, VIN, 3, _event(clock, RecordKind.ECALL)))
        await heard.until(2)
        await asyncio.sleep(0.2)  # a second notice of seq 2 would have come before seq 3's
    assert [(record.seq, record.kind) for record in heard.records] == [(2, RecordKind.EVENT), (3, RecordKind.ECALL)]
    first = heard.records[0]
    assert (first.vin, first.kind_name, first.created, first.body) == (
        VIN,
        "event",
        clock.now(),
        {"type": "provisioning_result", "version": 1},
    )
    assert _relay_rows(worker) == 0  # handed over: deleted


async def test_a_rolled_back_batch_notifies_nothing(
    postgres_url: PostgresUrl, worker: Any, ingest: RelayingIngest, vehicle_box: Box, clock: ManualClock
) -> None:
    import psycopg  # noqa: PLC0415

    from backend_stub.store_postgres import RELAY_CHANNEL  # noqa: PLC0415

    async with await psycopg.AsyncConnection.connect(postgres_url.url, autocommit=True) as raw:
        await raw.execute(f"LISTEN {RELAY_CHANNEL}")

        def failing_batch() -> None:
            with worker.transaction():
                ingest.handle(RECORDS, seal_record(vehicle_box, VIN, 1, _event(clock)))
                raise RuntimeError("the disk failed")

        with pytest.raises(RuntimeError):
            failing_batch()
        ingest.forget_acks()  # as IngestService.store_batch does
        assert _relay_rows(worker) == 0
        _store_batch(worker, ingest, seal_record(vehicle_box, VIN, 2, _event(clock)))
        # Notices come in commit order: a notice of the rolled-back batch would be the first.
        notices = [notice async for notice in raw.notifies(timeout=5, stop_after=1)]
        assert len(notices) == 1
        assert [notice async for notice in raw.notifies(timeout=0.3)] == []
    async with listening(postgres_url) as heard:
        await heard.until(1)
    assert [record.seq for record in heard.records] == [2]


async def test_an_event_stored_while_the_backend_was_disconnected_is_caught_up(
    postgres_url: PostgresUrl, worker: Any, ingest: RelayingIngest, vehicle_box: Box, clock: ManualClock
) -> None:
    _store_batch(worker, ingest, seal_record(vehicle_box, VIN, 1, _event(clock)))  # before the backend started
    async with listening(postgres_url) as heard:
        await heard.until(1)
        assert _terminate_listener(postgres_url) == 1
        await eventually(lambda: not heard.listener.connected.is_set(), within=10, what="the listener cut off")
        # Its notice goes to nobody: the listener waits to connect again until `reconnect` is set.
        _store_batch(worker, ingest, seal_record(vehicle_box, VIN, 2, _event(clock)))
        heard.reconnect.set()
        await heard.until(2)
    assert [record.seq for record in heard.records] == [1, 2]


async def test_a_hand_over_whose_deletion_was_lost_is_not_heard_twice(
    postgres_url: PostgresUrl, worker: Any, ingest: RelayingIngest, vehicle_box: Box, clock: ManualClock
) -> None:
    async with listening(postgres_url) as heard:
        delivered = heard.records.append

        def drop_the_link_once(record: ReceivedRecord) -> None:
            delivered(record)
            if len(heard.records) == 1:  # before the row's DELETE commits: it stays in the table
                _terminate_listener(postgres_url)
                heard.reconnect.set()

        heard.listener._deliver = drop_the_link_once
        _store_batch(worker, ingest, seal_record(vehicle_box, VIN, 1, _event(clock)))
        await heard.until(1)
        _store_batch(worker, ingest, seal_record(vehicle_box, VIN, 2, _event(clock)))
        await heard.until(2)
        await eventually(lambda: _relay_rows(worker) == 0, within=10, what="the relay rows deleted")
    assert [record.seq for record in heard.records] == [1, 2]
