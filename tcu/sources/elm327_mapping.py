"""The OBD-II → VSS mapping (`tcu/vehicle/mapping/obd.toml`) as frozen, validated dataclasses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcu.errors import ConfigError
from tcu.sources.obd_pids import PIDS
from tcu.vehicle.mapping import load_mapping

_PID_KEY = re.compile(r"01([0-9A-F]{2})")


def _check_path(path: object, where: str) -> str:
    if not isinstance(path, str) or not path.startswith("Vehicle."):
        raise ConfigError(f"OBD mapping {where}: {path!r} is not a VSS path (must start with 'Vehicle.')")
    return path


def _check_interval(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"OBD mapping {where}: interval_s must be a positive number of seconds")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class PidMapping:
    """One mode 01 PID polled every `interval_s` into the VSS signal `path`."""

    pid: int
    path: str
    interval_s: float

    def __post_init__(self) -> None:
        if self.pid not in PIDS:
            raise ConfigError(f"OBD mapping 01{self.pid:02X}: no formula in tcu.sources.obd_pids.PIDS")
        _check_path(self.path, f"01{self.pid:02X}")
        _check_interval(self.interval_s, f"01{self.pid:02X}")

    @property
    def request(self) -> str:
        return f"01{self.pid:02X}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObdMapping:
    source: str
    pids: tuple[PidMapping, ...]
    vin_path: str | None = None
    dtc_count_path: str | None = None
    dtc_list_path: str | None = None  # VSS Vehicle.OBD.DTCList (string[]): the stored codes themselves
    dtc_interval_s: float = 60.0

    def __post_init__(self) -> None:
        seen = [m.path for m in self.pids]
        if duplicates := sorted({p for p in seen if seen.count(p) > 1}):
            raise ConfigError(f"OBD mapping: {', '.join(duplicates)} fed by more than one PID")


def _table(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"OBD mapping: [{key}] must be a table")
    return value


def parse_obd_mapping(doc: Mapping[str, Any]) -> ObdMapping:
    """Validate a parsed `obd.toml`; every `ConfigError` names the key at fault."""
    source = doc.get("source", "obd")
    if not isinstance(source, str) or not source:
        raise ConfigError("OBD mapping: source must be a non-empty string")
    pids = []
    for key, entry in _table(doc, "pids").items():
        match = _PID_KEY.fullmatch(key.upper())
        if match is None:
            raise ConfigError(f"OBD mapping pids.{key}: expected a mode 01 request like '010D'")
        if not isinstance(entry, Mapping):
            raise ConfigError(f"OBD mapping pids.{key}: expected {{ path = ..., interval_s = ... }}")
        pids.append(
            PidMapping(
                pid=int(match.group(1), 16),
                path=_check_path(entry.get("path"), f"pids.{key}.path"),
                interval_s=_check_interval(entry.get("interval_s"), f"pids.{key}.interval_s"),
            )
        )
    vin = _table(doc, "vin")
    dtc = _table(doc, "dtc")
    return ObdMapping(
        source=source,
        pids=tuple(pids),
        vin_path=_check_path(vin["path"], "vin.path") if "path" in vin else None,
        dtc_count_path=_check_path(dtc["count_path"], "dtc.count_path") if "count_path" in dtc else None,
        dtc_list_path=_check_path(dtc["list_path"], "dtc.list_path") if "list_path" in dtc else None,
        dtc_interval_s=_check_interval(dtc.get("interval_s", 60.0), "dtc.interval_s"),
    )


def load_obd_mapping(path: Path | None = None) -> ObdMapping:
    """The packaged `obd.toml`, or the file at `path`."""
    return parse_obd_mapping(load_mapping("obd", path))
