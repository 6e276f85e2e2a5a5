"""A mapped CAN signal as the hot path sees it: a `CanTarget` (the conversion from the raw integer
cantools decodes to the VSS value, worked out once) and `convert`, which applies it to one raw value.
`ResolvedEntry` is a target with what `tcu check-config` shows about where it came from.

Targets are made by `tcu.vehicle.can_mapping.resolve_entry` (mapping entries) and
`tcu.vehicle.can_trigger.resolve_trigger` (eCall trigger rules).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from tcu.vehicle.state import Quality
from telematics_wire.signal_values import SignalValue

# How a target turns a raw value into its VSS value (plain ints: compared on the hot path).
LINEAR = 0  # raw * factor + offset, rounded; `table` overrides single raw values
TABLE = 1  # raw → value through `table` only; a raw value not in it is `miss`
THRESHOLD = 2  # a bool: low <= raw * factor + offset <= high
DERIVED = 3  # a bool: the value of `base` is in `members`, or within [low, high]


@dataclass(frozen=True, slots=True, kw_only=True)
class CanTarget:
    """One VSS signal fed by one DBC signal, with its conversion precomputed."""

    name: str  # signal name in its DBC message
    path: str
    kind: int
    factor: float = 1.0
    offset: float = 0.0
    decimals: int | None = None  # round() digits; None: an integer datatype (round to int)
    raw_min: float = -math.inf
    raw_max: float = math.inf
    table: Mapping[float, tuple[SignalValue, Quality]] = field(default_factory=dict)
    miss: tuple[SignalValue, Quality] | None = None  # TABLE: None means (str(raw), INVALID)
    low: float = -math.inf
    high: float = math.inf
    members: frozenset[SignalValue] = frozenset()
    base: CanTarget | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedEntry:
    """A mapping entry as `tcu check-config` shows it."""

    source: str  # Message.Signal
    message: str
    target: CanTarget
    datatype: str
    conversion: str  # e.g. "raw*0.01 km/h", "mph → km/h", "1-bit 0/1 → false/true"
    values: str  # the value table, "" when none
    origin: str  # where it was written: file and table, or ecall.trigger[n]


def convert(target: CanTarget, raw: float) -> tuple[SignalValue, Quality]:
    """The VSS value and quality of one raw value (the hot path: keep it flat)."""
    table = target.table
    if table:
        hit = table.get(raw)
        if hit is not None:
            return hit
    kind = target.kind
    if kind == LINEAR:
        value = raw * target.factor + target.offset
        if value - value:  # NaN or infinity, from an IEEE float signal: never a good reading, never rounded
            return float(value), Quality.INVALID
        good = target.raw_min <= raw <= target.raw_max
        decimals = target.decimals
        shown: SignalValue = round(value) if decimals is None else round(value, decimals)
        return shown, Quality.GOOD if good else Quality.INVALID
    if kind == TABLE:
        return target.miss if target.miss is not None else (str(raw), Quality.INVALID)
    if kind == THRESHOLD:
        if not target.raw_min <= raw <= target.raw_max:
            return False, Quality.INVALID
        return target.low <= raw * target.factor + target.offset <= target.high, Quality.GOOD
    base = target.base
    assert base is not None
    derived, quality = convert(base, raw)
    if quality is not Quality.GOOD:
        return False, quality
    if target.members:
        return derived in target.members, Quality.GOOD
    if isinstance(derived, bool) or not isinstance(derived, int | float):
        return False, Quality.INVALID
    return target.low <= derived <= target.high, Quality.GOOD
