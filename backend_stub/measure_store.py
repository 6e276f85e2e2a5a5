"""Remote measures in the backend's SQLite file: each measure, and the history of its attempts.

A measure is `pending` until an attempt succeeds (`succeeded`), it is given up (`abandoned`: the
vehicle refused it for a reason retrying cannot fix, or it ran out of attempts), its deadline
passes (`expired`), or an attempt ran into the 10-minute cap (`needs_plan`: its plan misjudged the
time, so sending it again unchanged would only impair the services again; a person re-plans it).
Attempts are `sent`, then `succeeded`, `rolled_back`, `not_started`, `rejected`, `already_applied`
(the vehicle's words) or `lost` (no answer in time).

Each measure keeps its plan (the fault it fixes and its steps, telematics_wire.measure_plan) as CBOR in
`plan`; `changes` holds every change of the plan, for people reading the table. A row written before
plans existed has no `plan`: it reads as one step per change of `step_s` each and no fault, which the
plan rule refuses, so the scheduler abandons it with that reason instead of sending it.

Like the provisioning store it has its own connection: `backend-stub measure send` writes while the
backend runs, and the running scheduler polls `changes()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import cbor2

from backend_stub.database import migrate, open_database, transaction
from telematics_wire.measure_plan import Fault, MeasureStep, one_step_per_change
from telematics_wire.records import from_millis, to_millis

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measures (
    measure_id     TEXT PRIMARY KEY,
    vin            TEXT NOT NULL,
    category       TEXT NOT NULL,
    allowed_states TEXT NOT NULL,
    changes        BLOB NOT NULL,
    impairs        TEXT NOT NULL,
    step_s         REAL NOT NULL,
    created_ms     INTEGER NOT NULL,
    deadline_ms    INTEGER NOT NULL,
    max_attempts   INTEGER NOT NULL,
    state          TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_ms        INTEGER NOT NULL,
    reason         TEXT,
    waiting_for    TEXT,            -- 'online' or 'allowed_state': retry at once when that comes
    plan           BLOB             -- CBOR {fault, steps}; NULL in rows written before plans existed
);
CREATE INDEX IF NOT EXISTS measures_by_state ON measures (state, vin);
CREATE TABLE IF NOT EXISTS measure_attempts (
    measure_id  TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    sent_ms     INTEGER NOT NULL,
    ended_ms    INTEGER,
    status      TEXT NOT NULL,
    code        TEXT,
    reason      TEXT,
    impaired_s  REAL,
    PRIMARY KEY (measure_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS measure_changes (id INTEGER PRIMARY KEY CHECK (id = 1), counter INTEGER NOT NULL);
INSERT OR IGNORE INTO measure_changes VALUES (1, 0);
"""


class MeasureState(StrEnum):
    """Where a measure stands (the module's docstring tells each); stored as its value."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    ABANDONED = "abandoned"
    EXPIRED = "expired"
    NEEDS_PLAN = "needs_plan"


LEGACY_STEP_S = 0.0  # what `step_s` holds for a planned measure: its steps carry their own durations


@dataclass(frozen=True, slots=True, kw_only=True)
class Measure:
    measure_id: str
    vin: str
    category: str
    allowed_states: tuple[str, ...]
    fault: Fault | None  # None only in a row written before plans existed
    steps: tuple[MeasureStep, ...]
    impairs: tuple[str, ...]
    created: datetime
    deadline: datetime
    max_attempts: int
    state: MeasureState
    attempts: int
    next_attempt: datetime
    reason: str | None
    waiting_for: str | None = None

    @property
    def changes(self) -> dict[str, Any]:
        return {key: value for step in self.steps for key, value in step.changes.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    measure_id: str
    attempt: int
    sent: datetime
    ended: datetime | None
    status: str
    code: str | None
    reason: str | None
    impaired_s: float | None


def encode_plan(fault: Fault | None, steps: tuple[MeasureStep, ...]) -> bytes:
    return cbor2.dumps(
        {
            "fault": None if fault is None else {"ref": fault.ref, "service": fault.service},
            "steps": [{"changes": dict(step.changes), "expected_ms": step.expected_ms} for step in steps],
        }
    )


def _plan(changes: bytes, step_s: float, plan: bytes | None) -> tuple[Fault | None, tuple[MeasureStep, ...]]:
    if plan is None:  # written before plans existed
        return None, one_step_per_change(cbor2.loads(changes), expected_ms=round(step_s * 1000))
    data = cbor2.loads(plan)
    fault = None if data["fault"] is None else Fault(ref=data["fault"]["ref"], service=data["fault"]["service"])
    steps = tuple(MeasureStep(changes=s["changes"], expected_ms=s["expected_ms"]) for s in data["steps"])
    return fault, steps


def _measure(row: tuple[Any, ...]) -> Measure:
    fault, steps = _plan(row[4], row[6], row[15])
    return Measure(
        measure_id=row[0],
        vin=row[1],
        category=row[2],
        allowed_states=tuple(row[3].split(",")),
        fault=fault,
        steps=steps,
        impairs=tuple(filter(None, row[5].split(","))),
        created=from_millis(row[7]),
        deadline=from_millis(row[8]),
        max_attempts=row[9],
        state=MeasureState(row[10]),
        attempts=row[11],
        next_attempt=from_millis(row[12]),
        reason=row[13],
        waiting_for=row[14],
    )


def _attempt(row: tuple[Any, ...]) -> Attempt:
    measure_id, attempt, sent, ended, status, code, reason, impaired_s = row
    return Attempt(
        measure_id=measure_id,
        attempt=attempt,
        sent=from_millis(sent),
        ended=None if ended is None else from_millis(ended),
        status=status,
        code=code,
        reason=reason,
        impaired_s=impaired_s,
    )


class MeasureStore:
    def __init__(self, path: Path) -> None:
        self._db = open_database(path, _SCHEMA)
        migrate(self._db, table="measures", column="plan", script="ALTER TABLE measures ADD COLUMN plan BLOB")

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        with transaction(self._db):
            count = self._db.execute(sql, params).rowcount
            self._db.execute("UPDATE measure_changes SET counter = counter + 1")
        return count

    def changes(self) -> int:
        return int(self._db.execute("SELECT counter FROM measure_changes").fetchone()[0])

    def add(self, measure: Measure) -> None:
        self._write(
            "INSERT INTO measures (measure_id, vin, category, allowed_states, changes, impairs, step_s, created_ms, "
            "deadline_ms, max_attempts, state, attempts, next_ms, reason, waiting_for, plan) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                measure.measure_id,
                measure.vin,
                measure.category,
                ",".join(measure.allowed_states),
                cbor2.dumps(measure.changes),
                ",".join(measure.impairs),
                LEGACY_STEP_S,
                to_millis(measure.created),
                to_millis(measure.deadline),
                measure.max_attempts,
                measure.state,
                measure.attempts,
                to_millis(measure.next_attempt),
                measure.reason,
                measure.waiting_for,
                encode_plan(measure.fault, measure.steps),
            ),
        )

    def get(self, measure_id: str) -> Measure | None:
        row = self._db.execute("SELECT * FROM measures WHERE measure_id=?", (measure_id,)).fetchone()
        return None if row is None else _measure(row)

    def all(self, vin: str | None = None) -> list[Measure]:
        if vin is None:
            rows = self._db.execute("SELECT * FROM measures ORDER BY created_ms")
        else:
            rows = self._db.execute("SELECT * FROM measures WHERE vin=? ORDER BY created_ms", (vin,))
        return [_measure(row) for row in rows]

    def pending(self) -> list[Measure]:
        return [
            _measure(row)
            for row in self._db.execute(
                "SELECT * FROM measures WHERE state=? ORDER BY created_ms", (MeasureState.PENDING,)
            )
        ]

    def needing_plan(self) -> list[Measure]:
        return [
            _measure(row)
            for row in self._db.execute(
                "SELECT * FROM measures WHERE state=? ORDER BY created_ms", (MeasureState.NEEDS_PLAN,)
            )
        ]

    def set_state(self, measure_id: str, state: MeasureState, reason: str | None = None) -> None:
        self._write("UPDATE measures SET state=?, reason=? WHERE measure_id=?", (state, reason, measure_id))

    def schedule(
        self, measure_id: str, at: datetime, reason: str | None = None, waiting_for: str | None = None
    ) -> None:
        self._write(
            "UPDATE measures SET next_ms=?, reason=?, waiting_for=? WHERE measure_id=?",
            (to_millis(at), reason, waiting_for, measure_id),
        )

    def replan(
        self, measure_id: str, *, steps: tuple[MeasureStep, ...], max_attempts: int, at: datetime, reason: str
    ) -> bool:
        """Give a measure that needs a plan its new steps (or its old ones again) and make it pending;
        False when it is not waiting for a plan."""
        measure = self.get(measure_id)
        if measure is None or measure.state != MeasureState.NEEDS_PLAN:
            return False
        changes = {key: value for step in steps for key, value in step.changes.items()}
        return bool(
            self._write(
                "UPDATE measures SET plan=?, changes=?, step_s=?, max_attempts=?, state=?, next_ms=?, reason=?, "
                "waiting_for=NULL WHERE measure_id=? AND state=?",
                (
                    encode_plan(measure.fault, steps),
                    cbor2.dumps(changes),
                    LEGACY_STEP_S,
                    max_attempts,
                    MeasureState.PENDING,
                    to_millis(at),
                    reason,
                    measure_id,
                    MeasureState.NEEDS_PLAN,
                ),
            )
        )

    def start_attempt(self, measure_id: str, attempt: int, at: datetime) -> None:
        with transaction(self._db):
            self._db.execute("UPDATE measures SET attempts=? WHERE measure_id=?", (attempt, measure_id))
            self._db.execute(
                "INSERT INTO measure_attempts (measure_id, attempt, sent_ms, status) VALUES (?, ?, ?, 'sent')",
                (measure_id, attempt, to_millis(at)),
            )
            self._db.execute("UPDATE measure_changes SET counter = counter + 1")

    def end_attempt(
        self,
        measure_id: str,
        attempt: int,
        *,
        status: str,
        at: datetime,
        code: str | None = None,
        reason: str | None = None,
        impaired_s: float | None = None,
    ) -> bool:
        """Record the vehicle's answer; False when that attempt already has one (a duplicate)."""
        return bool(
            self._write(
                "UPDATE measure_attempts SET status=?, ended_ms=?, code=?, reason=?, impaired_s=? "
                "WHERE measure_id=? AND attempt=? AND status='sent'",
                (status, to_millis(at), code, reason, impaired_s, measure_id, attempt),
            )
        )

    def history(self, measure_id: str) -> list[Attempt]:
        rows = self._db.execute("SELECT * FROM measure_attempts WHERE measure_id=? ORDER BY attempt", (measure_id,))
        return [_attempt(row) for row in rows]

    def open_attempt(self, vin: str) -> Attempt | None:
        """The attempt in flight on this vehicle, if any: there is never more than one."""
        row = self._db.execute(
            "SELECT a.* FROM measure_attempts a JOIN measures m USING (measure_id) "
            "WHERE m.vin=? AND a.status='sent' ORDER BY a.sent_ms DESC LIMIT 1",
            (vin,),
        ).fetchone()
        return None if row is None else _attempt(row)
