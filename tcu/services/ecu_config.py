"""The simulated ECU configuration: the key/value settings a remote measure may change.

Which keys exist and what class each has is the shared key table (`telematics_wire.ecu_keys`). The
values live in one canonical CBOR file written atomically (off the event loop: tcu.persist.AtomicFile),
so a snapshot is a byte string and a rollback restores it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cbor2

from tcu.persist import AtomicFile, read_optional
from telematics_wire.ecu_keys import ConfigValue, KeySpec


class EcuConfiguration:
    """Current values, persisted; unknown keys cannot be set."""

    def __init__(self, path: Path, specs: Mapping[str, KeySpec]) -> None:
        self._path = path
        self._file = AtomicFile(path)
        self._specs = dict(specs)
        self._values: dict[str, ConfigValue] = {k: s.default for k, s in specs.items()}

    @property
    def specs(self) -> Mapping[str, KeySpec]:
        return self._specs

    @property
    def values(self) -> Mapping[str, ConfigValue]:
        return dict(self._values)

    def load(self) -> None:
        raw = read_optional(self._path)
        if raw is not None:
            stored = cbor2.loads(raw)
            self._values = {k: stored.get(k, s.default) for k, s in self._specs.items()}

    def snapshot(self) -> bytes:
        return cbor2.dumps(self._values, canonical=True)

    async def restore(self, snapshot: bytes) -> None:
        """The values are in force at once; returns once they are durable (StorageError: they are not)."""
        self._values = dict(cbor2.loads(snapshot))
        await self._file.write(snapshot)

    async def set(self, key: str, value: ConfigValue) -> None:
        """As `restore`: in force at once, durable on return. Each write holds every value set before it."""
        if key not in self._specs:
            raise KeyError(key)
        self._values[key] = value
        await self._file.write(self.snapshot())
