"""eCall reports still waiting for telematics when the agent stops are kept, not lost with the queue."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from hil.layout import BenchLayout
from tcu.app import Agent
from tcu.config import load_agent_config
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN


def _queued_rows(queue: Path) -> int:
    with contextlib.closing(sqlite3.connect(queue)) as db:
        (count,) = db.execute("SELECT count(*) FROM outbox").fetchone()
    return int(count)


async def test_reports_the_drain_had_not_stored_are_committed_before_the_queue_closes(tmp_path: Path) -> None:
    bench = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1")  # no broker: nothing is acked away
    bench.create_backend()
    config = bench.add_vehicle(VIN, ecall={"legal_ecall": True, "port": str(tmp_path / "no-modem")})
    agent = Agent(load_agent_config(config, env={}))
    assert agent.ecall is not None
    running = asyncio.create_task(agent.run())
    await agent.ready.wait()
    agent.telemetry.enabled = False
    await agent.outbox.committed()
    before = agent.outbox.stats().depth

    for n in range(3):
        agent.ecall.reports.put(
            Record(kind=RecordKind.EVENT, created=agent.clock.now(), body={"type": "ecall", "n": n})
        )
    running.cancel()  # in the same loop turn: the report drain never got to them
    with contextlib.suppress(asyncio.CancelledError):
        await running

    assert agent.ecall.reports.pending == 0
    assert _queued_rows(agent.config.queue_path) == before + 3
