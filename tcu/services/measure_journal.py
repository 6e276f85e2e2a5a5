"""The measures the vehicle has seen, and the snapshot of an attempt in progress, on disk.

Written atomically before the first change of an attempt and cleared after it ends: if the agent
dies mid-apply, the next boot finds the snapshot and restores it before anything else runs. Written off
the event loop (tcu.persist.AtomicFile); each change is made to the journal as the last one left it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from tcu.persist import AtomicFile, read_optional

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class InProgress:
    """The attempt under way and the ECU configuration to restore. No personal settings: a measure
    never writes them, so a rollback must leave them as the driver has them now (AGB 3.4 d)."""

    measure_id: str
    attempt: int
    config: bytes


def _in_progress(stored: dict[str, Any]) -> InProgress:
    """The attempt as stored. A journal written by an older agent also holds a snapshot of the personal
    settings: it is ignored (never restored, see InProgress) and gone from the file at the next write."""
    measure_id, attempt, config = stored["measure_id"], stored["attempt"], stored["config"]
    if type(measure_id) is not str or type(attempt) is not int or type(config) is not bytes:
        raise TypeError(
            f"in_progress holds {type(measure_id).__name__}, {type(attempt).__name__}, "
            f"{type(config).__name__}; expected str, int, bytes"
        )
    return InProgress(measure_id=measure_id, attempt=attempt, config=config)


class MeasureJournal:
    """Every change is written before it is believed: when the write fails (StorageError, a full disk)
    the journal in memory stays as it was on disk, so the caller can refuse the order it was about to
    accept and a later attempt finds the same state."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file = AtomicFile(path)
        # Held from reading the journal to believing the change: a change made while another one is
        # being written would start from the journal before it and lose it on disk.
        self._changing = asyncio.Lock()
        self._seen: dict[str, dict[str, Any]] = {}
        self._in_progress: InProgress | None = None

    def load(self) -> None:
        raw = read_optional(self._path)
        if raw is None:
            return
        try:
            data = cbor2.loads(raw)
            seen = {str(k): dict(v) for k, v in data["seen"].items()}
            current = data.get("in_progress")
            progress = None if current is None else _in_progress(current)
        except Exception as exc:  # written atomically by us: only a damaged file gets here; boot must go on
            _LOGGER.error(
                "measure journal %s is unreadable (%s); starting with an empty one: a measure interrupted "
                "before this boot is not rolled back, and old attempts are not recognised as replays",
                self._path,
                exc,
            )
            return
        self._seen, self._in_progress = seen, progress

    async def _save(self, seen: dict[str, dict[str, Any]], in_progress: InProgress | None) -> None:
        """Called under `_changing`; returns once the change is durable, and only then believes it."""
        await self._file.write(
            cbor2.dumps(
                {
                    "seen": seen,
                    "in_progress": None
                    if in_progress is None
                    else {
                        "measure_id": in_progress.measure_id,
                        "attempt": in_progress.attempt,
                        "config": in_progress.config,
                    },
                },
                canonical=True,
            ),
        )
        self._seen, self._in_progress = seen, in_progress

    @property
    def in_progress(self) -> InProgress | None:
        return self._in_progress

    def last_attempt(self, measure_id: str) -> int:
        return int(self._seen.get(measure_id, {}).get("attempt", 0))

    def applied(self, measure_id: str) -> bool:
        return bool(self._seen.get(measure_id, {}).get("applied", False))

    async def seen(self, measure_id: str, attempt: int) -> None:
        """Raises StorageError (and remembers nothing) when the journal cannot be written."""
        async with self._changing:
            seen = {**self._seen, measure_id: {**self._seen.get(measure_id, {}), "attempt": attempt}}
            await self._save(seen, self._in_progress)

    async def begin(self, progress: InProgress) -> None:
        async with self._changing:
            seen = {**self._seen, progress.measure_id: {"attempt": progress.attempt, "applied": False}}
            await self._save(seen, progress)

    async def end(self, *, applied: bool) -> None:
        async with self._changing:
            seen = dict(self._seen)
            if self._in_progress is not None:
                measure_id = self._in_progress.measure_id
                seen[measure_id] = {**seen.get(measure_id, {}), "applied": applied}
            await self._save(seen, None)
