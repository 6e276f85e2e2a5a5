"""`tcu-hil fleet`: a fleet over two processes against a backend with two ingest workers loses nothing.

CI runs a small fleet (2 processes x 50 vehicles, 2 ingest workers, a short window); the big run is on
demand:

    TCU_FLEET_VEHICLES=5000 TCU_FLEET_SECONDS=60 python -m pytest tests/hil/test_fleet.py -m fleet_large -s
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend_stub.store import BackendStore
from hil.fleet import FleetPlan, raised_open_file_limit, run_fleet, summary_lines
from hil.fleet_audit import audit_fleet
from tcu.clock import SystemClock
from telematics_wire.records import ReceivedRecord, RecordKind
from tests.conftest import require_mosquitto

LARGE_VEHICLES = int(os.environ.get("TCU_FLEET_VEHICLES", "0") or 0)
LARGE_SECONDS = float(os.environ.get("TCU_FLEET_SECONDS", "60") or 60)


@pytest.mark.mosquitto
@pytest.mark.timeout(150)
async def test_a_fleet_over_two_processes_and_two_ingest_workers_loses_nothing(tmp_path: Path) -> None:
    require_mosquitto()
    plan = FleetPlan(vehicles=100, processes=2, ingest_workers=2, seconds=5.0, drain_window_s=30.0)
    result = await run_fleet(tmp_path, plan)
    print("\n".join(summary_lines([result])))
    assert (result.vehicles, result.connected, result.processes, result.ingest_workers) == (100, 100, 2, 2)
    assert result.queued >= 100 * 5  # every vehicle produced through the window (and its start-up reports)
    assert result.lost == 0
    assert result.stored == result.queued  # each record once, whichever worker stored it
    assert result.left_in_queues == 0  # every record acknowledged end to end
    # The records went through both ingest processes: the backend's log names the second worker.
    assert "backend_stub.ingest_worker: ingest worker 1" in (tmp_path / "backend.log").read_text()


def test_the_audit_names_a_vehicle_whose_record_is_missing(tmp_path: Path) -> None:
    database = tmp_path / "backend.sqlite3"
    store = BackendStore(database)
    now = SystemClock().now()
    with store.transaction():
        for vin, seqs in (("WTCZZZ00000000000", (1, 2, 3)), ("WTCZZZ00000000001", (1, 3))):
            for seq in seqs:
                record = ReceivedRecord(vin=vin, seq=seq, kind=RecordKind.TELEMETRY, created=now, body={"signals": {}})
                store.add_record(record, now)
    store.close()
    audit = audit_fleet(database, {"WTCZZZ00000000000": 3, "WTCZZZ00000000001": 3})
    assert (audit.queued, audit.stored, audit.lost, audit.short) == (6, 5, 1, ("WTCZZZ00000000001",))
    assert not audit.passed


@pytest.mark.mosquitto
@pytest.mark.fleet_large
@pytest.mark.timeout(LARGE_SECONDS + 900)
@pytest.mark.skipif(not LARGE_VEHICLES, reason="on demand: set TCU_FLEET_VEHICLES (and TCU_FLEET_SECONDS)")
async def test_a_large_fleet_keeps_to_its_rate_with_a_punctual_loop_and_loses_nothing(tmp_path: Path) -> None:
    require_mosquitto()
    plan = FleetPlan(vehicles=LARGE_VEHICLES, seconds=LARGE_SECONDS)
    with raised_open_file_limit():
        result = await run_fleet(tmp_path, plan)
    print("\n".join(summary_lines([result])))
    assert result.passed
    assert result.loop_lag_p99_ms < 100
