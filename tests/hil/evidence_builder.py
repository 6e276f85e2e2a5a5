"""A real backend (BenchLayout + BackendStub, its SQLite store and PSAP table) filled with crafted
records, for the expectation tests: what a run would have left behind, without running one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.psap_archive import PsapArchive
from hil.expectations import Evidence, evaluate
from hil.layout import BenchLayout
from hil.scenario import Step, parse_scenario
from hil.timeline import Event, EventKind, ExpectationResult
from tcu.vehicle.drive_cycle import DriveCycle
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis
from tests.conftest import VIN

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # the bench's wall time at scenario second 0
HEAD = 'name = "t"\nduration_s = 40\n'  # the scenario around one [[expect]]: the checks read only that


def wall(scenario_s: float) -> datetime:
    return START + timedelta(seconds=scenario_s)


def ms(scenario_s: float) -> int:
    return to_millis(wall(scenario_s))


def position_at(scenario_s: float) -> tuple[float, float]:
    sample = DriveCycle().at(scenario_s)
    return sample.latitude, sample.longitude


def assert_fails(result: ExpectationResult, found: str) -> None:
    """The check failed and said why."""
    assert not result.passed, result
    assert found in result.detail, result.detail


@dataclass
class BenchRecords:
    backend: BackendStub
    steps: list[Step] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # the runner's: link up/down, agent down/started
    time_scale: float = 1.0
    seq: int = 0

    def _add(self, kind: RecordKind, created_s: float, received_s: float, body: dict[str, Any]) -> None:
        self.seq += 1
        record = ReceivedRecord(vin=VIN, seq=self.seq, kind=kind, created=wall(created_s), body=body)
        self.backend.store.add_record(record, wall(received_s))

    def telemetry(self, created_s: float, received_s: float, signals: dict[str, Any]) -> None:
        """A snapshot: each signal read at `created_s` unless given as (value, read_at_s)."""
        encoded = {}
        for path, value in signals.items():
            reading, read_s = value if isinstance(value, tuple) else (value, created_s)
            encoded[path] = {"v": reading, "t": ms(read_s)}
        self._add(RecordKind.TELEMETRY, created_s, received_s, {"signals": encoded})

    def door_event(self, path: str, value: bool, changed_s: float, received_s: float) -> None:
        body = {"type": "door", "path": path, "value": value, "previous": not value, "changed_at": ms(changed_s)}
        self._add(RecordKind.EVENT, changed_s + 1.0, received_s, body)  # sent after the 1 s debounce

    def ecall(
        self,
        to: str,
        at_s: float,
        received_s: float,
        *,
        session: int = 1,
        started_s: float | None = None,
        call_type: str = "automatic",
        reason: str | None = None,
    ) -> None:
        started = at_s if started_s is None else started_s
        body = {
            "event": "transition",
            "session": session,
            "session_started_ms": ms(started),
            "call_type": call_type,
            "from": "?",
            "to": to,
            "reason": reason or ("crash detected" if to == "triggered" else to),
            "at_ms": ms(at_s),
            "elapsed_s": round(at_s - started, 3),
        }
        self._add(RecordKind.ECALL, at_s, received_s, body)

    def capabilities(self, created_s: float, running: list[str], suspended: Sequence[str] = ()) -> None:
        """A capability report, received half a second after the vehicle made it."""
        body = {
            "type": "capabilities",
            "running": running,
            "suspended": list(suspended),
            "provisioning_version": self.seq + 1,
        }
        self._add(RecordKind.EVENT, created_s, created_s + 0.5, body)

    def msd(self, received_s: float, position: tuple[float, float] | None, kind: str = "automatic") -> None:
        latitude, longitude = position if position is not None else (None, None)
        with contextlib.closing(sqlite3.connect(self.backend.config.database)) as db, db:
            db.execute(
                "INSERT INTO psap_msds (call_id, received_ms, kind, message_identifier, vin, latitude_deg,"
                " longitude_deg, position_trusted, raw_hex, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (1, ms(received_s), kind, 1, VIN, latitude, longitude, 1, "00", None),
            )

    def step(self, at: float, do: str, **args: Any) -> None:
        self.steps.append(Step(at=at, do=do, args=args))

    def event(self, t: float, kind: str, label: str) -> None:
        self.events.append(Event(t=t, kind=EventKind(kind), label=label))

    def evidence(self, *, steps: Sequence[Step] | None = None, with_position: bool = True) -> Evidence:
        return Evidence(
            vin=VIN,
            backend=self.backend,
            next_seq=self.seq + 1,
            queued=0,
            events=tuple(self.events),
            steps=tuple(self.steps if steps is None else steps),
            scenario_seconds=lambda moment: (moment - START).total_seconds(),
            position_at=position_at if with_position else None,
            time_scale=self.time_scale,
        )

    def check(self, expect: str) -> ExpectationResult:
        """One `[[expect]]` (its TOML lines) through the scenario parser and the runner's evaluation."""
        (result,) = evaluate(parse_scenario(HEAD + "[[expect]]\n" + expect), self.evidence())
        return result


async def _open_psap_archive(database: Path) -> None:
    archive = PsapArchive(database)
    await archive.open()
    await archive.close()


@contextlib.contextmanager
def bench_records(root: Path) -> Iterator[BenchRecords]:
    layout = BenchLayout(root=root, broker_url="mqtt://127.0.0.1:1")  # nothing is connected
    layout.create_backend()
    layout.backend_config.write_text(layout.backend_config.read_text() + "\n[psap]\nport = 1\nvoice_s = 10\n")
    backend = BackendStub(load_backend_config(layout.backend_config, env={}))
    # The PSAP's MSD table, as its archive makes it when the backend runs (on a loop and thread of its
    # own: a test using these records may be inside a running loop).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _open_psap_archive(backend.config.database)).result()
    try:
        yield BenchRecords(backend=backend)
    finally:  # what BackendStub.run closes when it ends
        for store in (
            backend.retention_tables,
            backend.invoice_store,
            backend.accounts,
            backend.measure_store,
            backend.provisioning_store,
            backend.store,
        ):
            store.close()
