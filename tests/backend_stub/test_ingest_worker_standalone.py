"""`backend-stub ingest-worker`: an ingest worker with no backend beside it (another host in real life,
another process here), on the PostgreSQL record store and the broker. The event records it stores
reach the backend's services through PostgreSQL — also those it stored while the backend was down —
each exactly once; and without PostgreSQL it is refused."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from nacl.public import Box

from backend_stub.app import BackendStub
from backend_stub.cli import main as backend_cli
from backend_stub.config import load_backend_config
from backend_stub.store_url import PostgresUrl
from hil.broker import MosquittoBroker
from hil.layout import BenchLayout
from tcu.clock import SystemClock
from telematics_wire.envelope import open_ack, seal_record
from telematics_wire.keys import load_private_key, load_public_key, write_box_keypair
from telematics_wire.records import ReceivedRecord, Record, RecordKind
from tests.conftest import VIN, eventually

RECORDS, ACKS = f"vehicles/{VIN}/up/records", f"vehicles/{VIN}/down/ack"


def _bench(tmp_path: Path, broker_url: str, store_url: PostgresUrl | None) -> tuple[BenchLayout, Box]:
    """A backend config on `store_url` (or the SQLite file), the vehicle enrolled in it; the vehicle's box."""
    layout = BenchLayout(root=tmp_path / "bench", broker_url=broker_url)
    layout.create_backend()
    if store_url is not None:
        with layout.backend_config.open("a") as config:
            config.write(f'\n[store]\nurl = "{store_url.url}"\n')
    private, public = write_box_keypair(layout.keys, VIN)
    assert backend_cli(["enroll", VIN, "--public-key", str(public), "--config", str(layout.backend_config)]) == 0
    return layout, Box(load_private_key(private), load_public_key(layout.keys / "backend.x25519.pub"))


@contextlib.asynccontextmanager
async def _standalone_worker(layout: BenchLayout, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    command = ["-m", "backend_stub.cli", "--log-level", "info", "ingest-worker", "--config", str(layout.backend_config)]
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, "--name", "host-b", stdout=output, stderr=output
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=20)


class Vehicle:
    """Sends sealed event records and resends each until it is acknowledged, as the agent does."""

    def __init__(self, client: aiomqtt.Client, box: Box) -> None:
        self._client = client
        self._box = box
        self.acked: set[int] = set()

    async def listen(self) -> None:
        async for message in self._client.messages:
            assert isinstance(message.payload, bytes)
            self.acked |= open_ack(self._box, message.payload, vin=VIN).seqs

    async def send_until_acked(self, seqs: range) -> None:
        clock = SystemClock()
        async with asyncio.timeout(30):
            while missing := [seq for seq in seqs if seq not in self.acked]:
                for seq in missing:
                    record = Record(kind=RecordKind.EVENT, created=clock.now(), body={"type": "note", "n": seq})
                    await self._client.publish(RECORDS, seal_record(self._box, VIN, seq, record), qos=1)
                await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def _vehicle(broker: MosquittoBroker, box: Box) -> AsyncIterator[Vehicle]:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="vehicle-under-test") as client:
        await client.subscribe(ACKS, qos=1)
        vehicle = Vehicle(client, box)
        listening = asyncio.create_task(vehicle.listen())
        try:
            yield vehicle
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening


@pytest.mark.mosquitto
@pytest.mark.postgres
async def test_events_a_worker_on_another_host_stored_reach_the_backends_services_once(
    tmp_path: Path, mosquitto: MosquittoBroker, postgres_url: PostgresUrl
) -> None:
    layout, box = _bench(tmp_path, mosquitto.url, postgres_url)
    log = tmp_path / "worker.log"
    async with _standalone_worker(layout, log) as worker, _vehicle(mosquitto, box) as vehicle:
        # The backend is not running: the worker alone stores and acknowledges seq 1, and its notice
        # goes to nobody.
        await vehicle.send_until_acked(range(1, 2))
        backend = BackendStub(load_backend_config(layout.backend_config, env={}))
        heard: list[ReceivedRecord] = []
        backend.ingest.add_observer(heard.append)  # where the services hear of records
        running = asyncio.create_task(backend.run())
        try:
            await eventually(lambda: len(heard) == 1, within=20, what="the backend catching up on seq 1")
            # Both on the shared subscription now: the broker takes turns.
            await vehicle.send_until_acked(range(2, 8))
            await eventually(lambda: len(heard) >= 7, within=20, what="every event heard of")
            await asyncio.sleep(0.3)  # a second hearing would come now
            assert worker.returncode is None, log.read_text()
            assert sorted(record.seq for record in heard) == list(range(1, 8))  # each once
            assert backend.ingest.stats.stored < 6, "the worker stored some while the backend ran"
            assert {record.body["n"] for record in heard} == set(range(1, 8))
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert worker.returncode == 0, log.read_text()


def test_a_worker_of_its_own_on_the_sqlite_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout, _ = _bench(tmp_path, "mqtt://127.0.0.1:1", None)
    capsys.readouterr()
    assert backend_cli(["ingest-worker", "--config", str(layout.backend_config)]) == 2
    assert "needs the record store on PostgreSQL ([store] url)" in capsys.readouterr().err
