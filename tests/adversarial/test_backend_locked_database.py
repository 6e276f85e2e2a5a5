"""The backend under a locked database: another process (the CLI, a second backend) holds the write lock.

The loop that runs the MQTT links also runs the PSAP stub. Database work runs on the backend's database
thread, so while a batch waits on the lock the PSAP still answers an eCall and acknowledges its MSD;
a batch that cannot get the lock within the busy timeout is not acknowledged, its reason is logged, and
the vehicle's resend of the same record (it deletes a record only once acknowledged) is stored.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from nacl.public import Box, PrivateKey

from backend_stub import database
from backend_stub.database_thread import DatabaseThread
from backend_stub.ingest import Ingest, IngestService
from backend_stub.psap import PsapStub, read_psap_msds
from backend_stub.store import BackendStore
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from telematics_wire.envelope import open_ack, seal_record
from telematics_wire.records import Record, RecordKind, to_millis
from tests.backend_stub.psap_caller import emergency_call, send_msd
from tests.conftest import VIN

RECORDS = f"vehicles/{VIN}/up/records"


class Backend:
    def __init__(self, path: Path, backend_key: PrivateKey, vehicle_key: PrivateKey, clock: ManualClock) -> None:
        self.path = path
        self.clock = clock
        self.database = DatabaseThread("test-backend-db")
        self.store = BackendStore(path)
        self.store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
        self.ingest = Ingest(self.store, backend_key, clock, max_payload_bytes=64 * 1024)
        self.service = IngestService(self.ingest, self.store, BrokerConfig(), database=self.database)

    async def flush(self, batch: list[tuple[str, bytes]], entered: threading.Event | None = None) -> list[bytes]:
        """What `IngestService` does with a batch: stored on the database thread; the acks it returns."""

        def store_batch() -> list[tuple[str, bytes]]:
            if entered is not None:
                entered.set()  # on the database thread, just before the transaction asks for the lock
            return self.service.store_batch(batch)

        return [ack for _, ack in await self.service.shell.offload(store_batch)]

    def close(self) -> None:
        self.database.close()
        self.store.close()


@pytest.fixture
def backend(tmp_path: Path, backend_key: PrivateKey, vehicle_key: PrivateKey, clock: ManualClock) -> Iterator[Backend]:
    backend = Backend(tmp_path / "backend.sqlite3", backend_key, vehicle_key, clock)
    yield backend
    backend.close()


@contextmanager
def locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection holding the database's write lock until the block ends (or sooner)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield other
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")


def _record(vehicle_box: Box, clock: ManualClock, seq: int) -> bytes:
    stamp = to_millis(clock.now() + timedelta(seconds=seq))
    body = {"signals": {"Vehicle.Speed": {"v": float(seq), "t": stamp}}}
    return seal_record(vehicle_box, VIN, seq, Record(kind=RecordKind.TELEMETRY, created=clock.now(), body=body))


def _acked(vehicle_box: Box, acks: list[bytes]) -> set[int]:
    return {seq for ack in acks for seq in open_ack(vehicle_box, ack, vin=VIN).seqs}


async def test_the_psap_acknowledges_an_msd_while_a_batch_waits_on_the_lock(
    backend: Backend, vehicle_box: Box, clock: ManualClock
) -> None:
    async with PsapStub(database=backend.path, clock=clock) as psap:
        with locked(backend.path) as other:
            entered = threading.Event()
            flush = asyncio.create_task(backend.flush([(RECORDS, _record(vehicle_box, clock, 1))], entered))
            assert await asyncio.to_thread(entered.wait, 10)  # the batch now waits on the lock, off the loop
            async with emergency_call(psap) as (reader, writer):
                assert await send_msd(reader, writer) == ["LL-ACK", "AL-ACK positive"]
                # The loop answered the eCall while the batch was still waiting: it did not wait with it.
                assert not flush.done()
            other.execute("ROLLBACK")  # the other process lets go within the busy timeout
        assert _acked(vehicle_box, await flush) == {1}  # SQLite's busy handler retried: stored, acknowledged
    assert backend.store.seqs(VIN) == [1]
    [row] = read_psap_msds(backend.path)  # the PSAP's own write waited on its thread, then went in
    assert row["vin"] == VIN


async def test_a_batch_locked_out_past_the_busy_timeout_is_not_acknowledged_and_its_resend_is_stored(
    tmp_path: Path,
    backend_key: PrivateKey,
    vehicle_key: PrivateKey,
    vehicle_box: Box,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 50)  # the test need not wait the real 2 s out
    backend = Backend(tmp_path / "backend.sqlite3", backend_key, vehicle_key, clock)
    try:
        record = _record(vehicle_box, clock, 1)
        with locked(backend.path), caplog.at_level(logging.ERROR, logger="backend_stub.ingest"):
            assert await backend.flush([(RECORDS, record)]) == []  # no ack: the vehicle keeps the record
        assert "a batch of 1 message(s) was not stored and is not acknowledged" in caplog.text
        assert "database is locked" in caplog.text  # the reason a person can act on
        assert backend.store.seqs(VIN) == []
        # The vehicle resends what was not acknowledged; the lock is gone now.
        assert _acked(vehicle_box, await backend.flush([(RECORDS, record)])) == {1}
        assert backend.store.seqs(VIN) == [1]
        assert backend.store.rejections() == []  # a locked database is not the message's fault
    finally:
        backend.close()


async def test_the_psap_answers_the_next_call_while_its_own_write_waits_on_the_lock(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "backend.sqlite3"
    async with PsapStub(database=path, clock=clock) as psap:
        with locked(path) as other:
            for call in (1, 2):  # the first call's row is still waiting on the lock when the second comes
                async with emergency_call(psap) as (reader, writer):
                    assert await send_msd(reader, writer) == ["LL-ACK", "AL-ACK positive"]
                assert len(psap.msds) == call
            other.execute("ROLLBACK")  # within the busy timeout: the waiting rows go in
        await psap.archived()
        assert [row["call_id"] for row in read_psap_msds(path)] == [1, 2]
