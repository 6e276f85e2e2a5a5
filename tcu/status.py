"""The agent's own status, written atomically to `status.json` in the data dir once a second.

For people (`tcu status` on a Pi) and for the HIL runner's live view, which watch an agent running
in another process: link, queue, services, eCall and measure state, and a few key signals. Local
only; nothing here leaves the vehicle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcu.errors import StorageError
from tcu.persist import write_atomic

KEY_SIGNALS = (
    "Vehicle.Speed",
    "Vehicle.TraveledDistance",
    "Vehicle.Mode",
    "Vehicle.CurrentLocation.Latitude",
    "Vehicle.CurrentLocation.Longitude",
)


class StatusWriter:
    def __init__(self, path: Path, collect: Callable[[], dict[str, Any]], interval_s: float = 1.0) -> None:
        self._path = path
        self._collect = collect
        self._interval_s = interval_s

    def write(self) -> None:
        content = json.dumps(self._collect(), default=str).encode()
        try:
            # Atomic (a reader never sees half a file) but not fsynced: a fleet of agents would
            # otherwise spend its disk on a file a power cut may well lose.
            write_atomic(self._path, content, durable=False)
        except StorageError:
            # A full disk has no room for the temporary copy; overwriting in place reuses the file's
            # own blocks, so the status stays current (a reader may rarely catch it half written).
            with contextlib.suppress(OSError), self._path.open("r+b") as file:
                file.write(content)
                file.truncate()

    async def run(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(self._interval_s)


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
