"""The OBD-II → VSS mapping (`tcu/vehicle/mapping/obd.toml`) as frozen, validated dataclasses.

A mode 01 PID uses the formula of `tcu.sources.obd_pids.PIDS` unless its entry gives one; any other
PID (mode 01 beyond our table, mode 22 manufacturer DIDs) brings its own as data:
`"22F40D" = { path = "...", interval_s = 1, bytes = 1, formula = "A-40" }`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcu.errors import ConfigError, ProtocolError
from tcu.sources.elm327_session import Elm327Session
from tcu.sources.obd_pids import MODE_CURRENT_DATA, MODE_ENHANCED_DATA, PIDS, Formula, decode_formula
from tcu.vehicle.mapping import load_mapping

_PID_KEY = re.compile(r"(01)([0-9A-F]{2})|(22)([0-9A-F]{4})")
_ENTRY_KEYS = frozenset({"path", "interval_s", "bytes", "formula"})


def _check_path(path: object, where: str) -> str:
    if not isinstance(path, str) or not path.startswith("Vehicle."):
        raise ConfigError(f"OBD mapping {where}: {path!r} is not a VSS path (must start with 'Vehicle.')")
    return path


def _check_interval(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"OBD mapping {where}: interval_s must be a positive, finite number of seconds")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class PidMapping:
    """One PID polled every `interval_s` into the VSS signal `path`: mode 01 (8-bit PID) or 22 (16-bit DID).

    `formula` None: a mode 01 PID of `obd_pids.PIDS`. Otherwise the entry's own formula over `size` bytes.
    """

    pid: int
    path: str
    interval_s: float
    mode: int = MODE_CURRENT_DATA
    size: int = 0
    formula: Formula | None = None

    def __post_init__(self) -> None:
        where = self.request
        if self.mode not in (MODE_CURRENT_DATA, MODE_ENHANCED_DATA):
            raise ConfigError(f"OBD mapping {where}: mode {self.mode:02X} is not 01 or 22")
        if self.formula is None and (self.mode != MODE_CURRENT_DATA or self.pid not in PIDS):
            raise ConfigError(
                f"OBD mapping {where}: no formula in tcu.sources.obd_pids.PIDS; give bytes = N and formula = "
                '"..." over A, B, C, D (e.g. "(A*256+B)/4") in the entry'
            )
        if self.formula is not None and not self.formula.bytes_used <= self.size <= 4:
            raise ConfigError(
                f"OBD mapping {where}: bytes = {self.size}, but the formula {self.formula.text!r} reads "
                f"{self.formula.bytes_used} byte(s); bytes must be 1..4 and cover every letter used"
            )
        _check_path(self.path, where)
        _check_interval(self.interval_s, where)

    @property
    def request(self) -> str:
        return f"{self.mode:02X}{self.pid:0{2 if self.mode == MODE_CURRENT_DATA else 4}X}"

    def describe(self) -> str:
        """The formula as `tcu check-config` shows it."""
        if self.formula is not None:
            return f"{self.formula.text} over {self.size} byte(s)"
        spec = PIDS[self.pid]
        return f"raw*{spec.scale:g}{'' if not spec.offset else f'{spec.offset:+g}'} {spec.unit} ({spec.name})"

    async def read(self, session: Elm327Session) -> float:
        """Ask the vehicle and decode the first ECU's usable answer (lowest CAN id first)."""
        if self.formula is None:
            return (await session.read_pid(self.pid)).value
        reply = await session.request(self.request)
        reply.raise_for_status()
        reasons = list(reply.problems)
        for message in sorted(reply.messages, key=lambda m: (m.ecu is None, m.ecu or "")):
            try:
                return decode_formula(
                    message.payload, mode=self.mode, pid=self.pid, size=self.size, formula=self.formula
                )
            except ProtocolError as exc:
                reasons.append(f"ECU {message.ecu}: {exc}" if message.ecu else str(exc))
        raise ProtocolError(f"no usable answer to {self.request}: {'; '.join(reasons)}")


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
            raise ConfigError(
                f"OBD mapping pids.{key}: expected a mode 01 request like '010D' or mode 22 like '22F40D'"
            )
        if not isinstance(entry, Mapping):
            raise ConfigError(f"OBD mapping pids.{key}: expected {{ path = ..., interval_s = ... }}")
        if unknown := set(entry) - _ENTRY_KEYS:
            raise ConfigError(f"OBD mapping pids.{key}: unknown key(s) {', '.join(sorted(unknown))}")
        mode, pid = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        pids.append(
            PidMapping(
                pid=int(pid, 16),
                mode=int(mode, 16),
                path=_check_path(entry.get("path"), f"pids.{key}.path"),
                interval_s=_check_interval(entry.get("interval_s"), f"pids.{key}.interval_s"),
                **_formula(entry, f"pids.{key}"),
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


def _formula(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    if "formula" not in entry and "bytes" not in entry:
        return {}
    size, text = entry.get("bytes"), entry.get("formula")
    if isinstance(size, bool) or not isinstance(size, int) or not isinstance(text, str):
        raise ConfigError(f'OBD mapping {where}: give both bytes = 1..4 and formula = "..." (over A, B, C, D)')
    try:
        return {"size": size, "formula": Formula.parse(text)}
    except ValueError as exc:
        raise ConfigError(f"OBD mapping {where}.formula: {exc}") from None


def load_obd_mapping(path: Path | None = None) -> ObdMapping:
    """The packaged `obd.toml`, or the file at `path`."""
    return parse_obd_mapping(load_mapping("obd", path))
