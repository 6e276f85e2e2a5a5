"""The measures the vehicle has seen, and the snapshot of an attempt in progress, on disk.

Written atomically before the first change of an attempt and cleared after it ends: if the agent
dies mid-apply, the next boot finds the snapshot and restores it before anything else runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from tcu.persist import read_optional, write_atomic


@dataclass(frozen=True, slots=True, kw_only=True)
class InProgress:
    measure_id: str
    attempt: int
    config: bytes
    personal: bytes


class MeasureJournal:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: dict[str, dict[str, Any]] = {}
        self._in_progress: InProgress | None = None

    def load(self) -> None:
        raw = read_optional(self._path)
        if raw is None:
            return
        data = cbor2.loads(raw)
        self._seen = {k: dict(v) for k, v in data["seen"].items()}
        current = data.get("in_progress")
        self._in_progress = None if current is None else InProgress(**current)

    def _save(self) -> None:
        current = self._in_progress
        write_atomic(
            self._path,
            cbor2.dumps(
                {
                    "seen": self._seen,
                    "in_progress": None
                    if current is None
                    else {
                        "measure_id": current.measure_id,
                        "attempt": current.attempt,
                        "config": current.config,
                        "personal": current.personal,
                    },
                },
                canonical=True,
            ),
        )

    @property
    def in_progress(self) -> InProgress | None:
        return self._in_progress

    def last_attempt(self, measure_id: str) -> int:
        return int(self._seen.get(measure_id, {}).get("attempt", 0))

    def applied(self, measure_id: str) -> bool:
        return bool(self._seen.get(measure_id, {}).get("applied", False))

    def seen(self, measure_id: str, attempt: int) -> None:
        self._seen[measure_id] = {**self._seen.get(measure_id, {}), "attempt": attempt}
        self._save()

    def begin(self, progress: InProgress) -> None:
        self._in_progress = progress
        self._seen[progress.measure_id] = {"attempt": progress.attempt, "applied": False}
        self._save()

    def end(self, *, applied: bool) -> None:
        if self._in_progress is not None:
            self._seen[self._in_progress.measure_id]["applied"] = applied
        self._in_progress = None
        self._save()
