"""The simulated ECU configuration: the key/value settings a remote measure may change.

Each key has a class from ecu_config.toml: `normal` keys may be changed remotely; `safety` keys
(operating safety, eCall) and `personal` keys (the customer's settings) never are. The values live
in one canonical CBOR file written atomically, so a snapshot is a byte string and a rollback
restores it exactly.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import cbor2

from tcu.errors import ConfigError
from tcu.persist import read_optional, write_atomic

ConfigValue = str | int | float | bool


class KeyClass(StrEnum):
    NORMAL = "normal"
    SAFETY = "safety"
    PERSONAL = "personal"


@dataclass(frozen=True, slots=True)
class KeySpec:
    default: ConfigValue
    key_class: KeyClass


def load_key_specs(text: str | None = None) -> dict[str, KeySpec]:
    raw: dict[str, Any] = tomllib.loads(
        text if text is not None else resources.files("tcu.services").joinpath("ecu_config.toml").read_text()
    )
    try:
        return {key: KeySpec(item["default"], KeyClass(item["class"])) for key, item in raw["keys"].items()}
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"ECU configuration key table is invalid: {exc!r}") from exc


class EcuConfiguration:
    """Current values, persisted; unknown keys cannot be set."""

    def __init__(self, path: Path, specs: Mapping[str, KeySpec]) -> None:
        self._path = path
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

    def restore(self, snapshot: bytes) -> None:
        self._values = dict(cbor2.loads(snapshot))
        write_atomic(self._path, snapshot)

    def set(self, key: str, value: ConfigValue) -> None:
        if key not in self._specs:
            raise KeyError(key)
        self._values[key] = value
        write_atomic(self._path, self.snapshot())
