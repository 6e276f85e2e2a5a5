"""End to end into PostgreSQL: an agent's records through a real Mosquitto, stored by the backend's ingest
and a second ingest worker (a shared subscription) in one PostgreSQL database, each exactly once, read
back by the backend CLI from the configured store — and nothing of them in the SQLite file."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from backend_stub.cli import main as backend_cli
from backend_stub.store import BackendStore
from backend_stub.store_url import PostgresUrl
from hil.broker import MosquittoBroker
from hil.fixtures.backend import running_backend
from hil.layout import BenchLayout
from tests.conftest import VIN, eventually
from tests.integration.conftest import running_agent, vehicle_config


@pytest.mark.mosquitto
@pytest.mark.postgres
async def test_records_through_mosquitto_are_stored_once_in_postgresql_by_two_ingest_workers(
    tmp_path: Path, mosquitto: MosquittoBroker, postgres_url: PostgresUrl, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = BenchLayout(root=tmp_path / "bench", broker_url=mosquitto.url)
    layout.create_backend()
    with layout.backend_config.open("a") as config:
        config.write(f'\n[store]\nurl = "{postgres_url.url}"\n\n[ingest]\nworkers = 2\n')
    agent_config = vehicle_config(layout, interval_s=0.02)  # enrolled in the SQLite file by the layout ...
    public_key = layout.keys / f"{VIN}.x25519.pub"
    enrol = ["enroll", VIN, "--public-key", str(public_key), "--config", str(layout.backend_config)]
    assert backend_cli(enrol) == 0  # ... and in PostgreSQL by the CLI, which writes the configured store
    async with running_backend(layout.backend_config) as backend, running_agent(agent_config) as agent:
        with contextlib.closing(backend.reader()) as stored:
            # Until the second worker (a process, a second or so to start) has stored records too:
            # those in PostgreSQL that the backend's own ingest did not store.
            await eventually(
                lambda: stored.count(VIN) > max(60, backend.ingest.stats.stored),
                within=60,
                what="records from both ingest workers in PostgreSQL",
            )
            agent.telemetry.enabled = False
            await eventually(lambda: agent.outbox.stats().depth == 0, what="the agent's queue drained")
            sent = agent.outbox.stats().next_seq - 1
            await eventually(lambda: stored.count(VIN) == sent, what="every record stored")
            assert stored.seqs(VIN) == list(range(1, sent + 1)), f"gaps: {stored.gaps(VIN)}"
            assert 0 < backend.ingest.stats.stored < sent, "each worker stored some"
            speed = agent.state.get("Vehicle.Speed")
            assert speed is not None
            assert stored.last_value(VIN, "Vehicle.Speed") == speed.value
    with contextlib.closing(BackendStore(layout.root / "backend.sqlite3")) as sqlite_file:
        assert sqlite_file.count(VIN) == 0
    capsys.readouterr()
    assert backend_cli(["records", VIN, "--config", str(layout.backend_config), "--json"]) == 0
    assert f'"seq": {sent}' in capsys.readouterr().out
