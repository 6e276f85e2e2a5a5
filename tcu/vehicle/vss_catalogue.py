"""The VSS datatype, unit and allowed values of each signal we know (`vss_signals.toml`, from COVESA VSS 4.x).

A mapping entry is checked against its target here at start-up: a boolean must come out as a bool, a
string as one of the allowed values, a number in the VSS unit and the range of its datatype.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from tcu.errors import ConfigError
from tcu.vehicle.units import canonical_unit

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "uint8": (0, 0xFF),
    "uint16": (0, 0xFFFF),
    "uint32": (0, 0xFFFF_FFFF),
    "uint64": (0, 0xFFFF_FFFF_FFFF_FFFF),
    "int8": (-0x80, 0x7F),
    "int16": (-0x8000, 0x7FFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "int64": (-0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF),
}
FLOATS = frozenset({"float", "double"})
DATATYPES = frozenset({*INTEGER_RANGES, *FLOATS, "boolean", "string", "string[]"})


@dataclass(frozen=True, slots=True, kw_only=True)
class VssSpec:
    path: str
    datatype: str
    unit: str = ""  # a VSS unit name, "" for none
    allowed: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    extension: bool = False  # our own path; VSS has no such signal

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ConfigError(
                f"VSS {self.path}: datatype {self.datatype!r} is not one of {', '.join(sorted(DATATYPES))}"
            )
        if self.unit and canonical_unit(self.unit) != self.unit:
            raise ConfigError(f"VSS {self.path}: unit {self.unit!r} is not a VSS unit we can convert to")

    @property
    def numeric(self) -> bool:
        return self.datatype in FLOATS or self.datatype in INTEGER_RANGES


def spec_from_table(path: str, entry: Mapping[str, Any], *, where: str) -> VssSpec:
    """One `{ datatype = ..., unit = ..., allowed = [...], min = ..., max = ... }` table."""
    known = {"datatype", "unit", "allowed", "min", "max", "extension"}
    if unknown := set(entry) - known:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    allowed = entry.get("allowed", [])
    if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
        raise ConfigError(f"{where}: allowed must be a list of strings")
    bounds = [entry.get("min"), entry.get("max")]
    if any(b is not None and (isinstance(b, bool) or not isinstance(b, int | float)) for b in bounds):
        raise ConfigError(f"{where}: min and max must be numbers")
    datatype, unit = entry.get("datatype"), entry.get("unit", "")
    if not isinstance(datatype, str) or not isinstance(unit, str):
        raise ConfigError(f"{where}: datatype and unit must be strings")
    return VssSpec(
        path=path,
        datatype=datatype,
        unit=canonical_unit(unit) or unit,
        allowed=tuple(allowed),
        minimum=None if bounds[0] is None else float(bounds[0]),
        maximum=None if bounds[1] is None else float(bounds[1]),
        extension=entry.get("extension") is True,
    )


@cache
def catalogue() -> Mapping[str, VssSpec]:
    text = resources.files("tcu.vehicle").joinpath("vss_signals.toml").read_text("utf-8")
    table = tomllib.loads(text)["signals"]
    return {
        path: spec_from_table(path, entry, where=f"tcu/vehicle/vss_signals.toml {path}")
        for path, entry in table.items()
    }


def vss_spec(path: str) -> VssSpec | None:
    """What VSS says about `path`, or None for a path this catalogue does not list."""
    return catalogue().get(path)
