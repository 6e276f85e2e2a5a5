"""A car whose data partition is already full when it starts (a real 2 MB tmpfs, through Mosquitto).

The agent must start, keep every record it makes in memory (or name what it sheds), keep its status
file current, and deliver on its own once space returns: no restart loop, no traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_stub.store import BackendStore
from hil.audit import audit_vehicle
from hil.layout import BenchLayout
from hil.small_disk import BALLAST, SmallDiskUnavailableError, fill, small_filesystem
from tests.conftest import VIN, eventually
from tests.integration.conftest import running_agent, vehicle_config

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def full_data_dir(layout: BenchLayout) -> Iterator[Path]:
    data_dir = layout.data_dir(VIN)
    try:
        with small_filesystem(data_dir, 2 * 1024 * 1024) as disk:
            yield disk
    except SmallDiskUnavailableError as exc:
        pytest.skip(str(exc))


async def test_an_agent_started_on_a_full_disk_runs_and_delivers_once_space_returns(
    layout: BenchLayout, full_data_dir: Path, backend_store: BackendStore, caplog: pytest.LogCaptureFixture
) -> None:
    config = vehicle_config(layout, interval_s=0.05)
    (full_data_dir / "status.json").write_text("{}")  # an old status file, as after a previous run
    fill(full_data_dir)
    with caplog.at_level(logging.WARNING):
        async with running_agent(config) as agent:
            await eventually(lambda: agent.outbox.stats().spilled_in_memory >= 20, what="records held in memory")
            assert agent.outbox.stats().storage_full
            status = json.loads((full_data_dir / "status.json").read_text() or "{}")
            assert status.get("queue", {}).get("storage_full") is True, "the status file stays current"
            (full_data_dir / BALLAST).unlink()  # space returns
            await eventually(lambda: agent.outbox.stats().spilled_in_memory == 0, within=30, what="memory written")
            await eventually(lambda: len(backend_store.seqs(VIN)) >= 20, what="delivery resumed by itself")
            agent.telemetry.enabled = False
            await eventually(lambda: agent.outbox.stats().depth == 0, what="queue drained")
            issued = agent.outbox.stats().next_seq - 1
    assert "restarting it" not in caplog.text, "telematics must not restart over a full disk"
    audit = audit_vehicle(backend_store, VIN, issued_through=issued)
    assert audit.ok, audit.describe()
