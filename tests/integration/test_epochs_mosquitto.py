"""A re-flashed car through a real Mosquitto: a new queue epoch, both queues complete at the backend."""

from __future__ import annotations

import shutil

import pytest

from backend_stub.app import BackendStub
from backend_stub.store import BackendStore
from hil.layout import BenchLayout
from tests.conftest import VIN, eventually
from tests.integration.conftest import running_agent, vehicle_config


@pytest.mark.mosquitto
async def test_reflashing_a_car_end_to_end_loses_nothing(
    layout: BenchLayout, backend: BackendStub, backend_store: BackendStore
) -> None:
    config = vehicle_config(layout, interval_s=0.05)
    async with running_agent(config) as agent:
        await eventually(lambda: len(backend_store.seqs(VIN)) >= 20, what="records from the first flash")
        agent.telemetry.enabled = False
        await eventually(lambda: agent.outbox.stats().depth == 0, what="first queue drained")
        first_epoch, first_count = agent.outbox.epoch, agent.outbox.stats().next_seq - 1
    shutil.rmtree(layout.data_dir(VIN))  # the SD card is re-flashed: same VIN, same keys, empty queue
    async with running_agent(config) as agent:
        assert agent.outbox.epoch != first_epoch
        await eventually(lambda: len(backend_store.seqs(VIN)) >= 20, what="records from the second flash")
        agent.telemetry.enabled = False
        await eventually(lambda: agent.outbox.stats().depth == 0, what="second queue drained")
        second_count = agent.outbox.stats().next_seq - 1
    assert backend_store.seqs(VIN, first_epoch) == list(range(1, first_count + 1))
    assert backend_store.seqs(VIN) == list(range(1, second_count + 1))
    assert backend.ingest.stats.new_epochs == 2
