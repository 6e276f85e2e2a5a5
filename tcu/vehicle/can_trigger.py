"""eCall trigger rules on the CAN bus (crash, airbag, SOS button) as boolean `CanTarget`s.

A rule names either a `Message.Signal` (values as VAL_ names or raw integers, thresholds physical in
the DBC's unit) or a VSS path that an entry of the mapping feeds (values and thresholds in VSS terms),
and is checked at start-up so that a rule that could never fire is refused with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tcu.errors import ConfigError
from tcu.vehicle.can_dbc_lookup import find_signal, raw_bounds, raw_key
from tcu.vehicle.can_target import DERIVED, TABLE, THRESHOLD, CanTarget, ResolvedEntry
from tcu.vehicle.state import Quality
from telematics_wire.signal_values import SignalValue


def resolve_trigger(
    database: Any,
    *,
    path: str,
    signal_key: str,
    values: tuple[Any, ...],
    at_least: float | None,
    at_most: float | None,
    invalid: tuple[Any, ...],
    entries: Mapping[str, ResolvedEntry],
    where: str,
) -> ResolvedEntry:
    """A crash/airbag/SOS rule as a boolean target on `path`: True while the signal is in `values` or range.

    `signal_key` is "Message.Signal" (values are VAL_ names or raw integers; thresholds physical, in
    the DBC's unit) or a VSS path some entry of the mapping feeds (values and thresholds in VSS terms).
    """
    low = -math.inf if at_least is None else at_least
    high = math.inf if at_most is None else at_most
    if any(not math.isfinite(bound) for bound in (at_least, at_most) if bound is not None) or low > high:
        raise ConfigError(f"{where}: at_least / at_most must be finite numbers with at_least <= at_most")
    if signal_key.startswith("Vehicle."):
        base = entries.get(signal_key)
        if base is None:
            raise ConfigError(f"{where}: signal {signal_key} is fed by no entry of the CAN mapping")
        _check_fires_on_base(base, values, low, high, where)
        if invalid:
            raise ConfigError(
                f"{where}: invalid applies to a Message.Signal; mark {signal_key}'s invalid values in its mapping entry"
            )
        target = CanTarget(
            name=base.target.name,
            path=path,
            kind=DERIVED,
            base=base.target,
            members=frozenset(values),
            low=low,
            high=high,
        )
        condition = f"in {list(values)}" if values else _range(at_least, at_most)
        return ResolvedEntry(
            source=base.source,
            message=base.message,
            target=target,
            datatype="boolean",
            conversion=f"{signal_key} {condition}",
            values="",
            origin=where,
        )
    message, signal = find_signal(database, signal_key, where)
    choices = {int(raw): str(name) for raw, name in (signal.choices or {}).items()}
    table: dict[float, tuple[SignalValue, Quality]] = {}
    for item in invalid:
        table[raw_key(signal, item, f"{where} invalid")] = (False, Quality.INVALID)
    if values:
        raws = set()
        for item in values:
            if isinstance(item, bool) and signal.length != 1:
                raise ConfigError(
                    f"{where}: {item!r} names no value of the {signal.length}-bit {signal.name}; "
                    "use VAL_ names or raw integers"
                )
            raws.add(raw_key(signal, int(item) if isinstance(item, bool) else item, f"{where} values"))
        for raw in raws:
            table.setdefault(raw, (True, Quality.GOOD))
        for raw in choices:
            table.setdefault(raw, (False, Quality.GOOD))
        # A raw value the DBC names nothing is an unknown state, not "no crash": INVALID, never a trigger.
        miss: tuple[SignalValue, Quality] = (False, Quality.INVALID) if choices else (False, Quality.GOOD)
        target = CanTarget(name=signal.name, path=path, kind=TABLE, table=table, miss=miss)
        shown = ", ".join(f"{raw}{f' ({choices[raw]})' if raw in choices else ''} → true" for raw in sorted(raws))
        return ResolvedEntry(
            source=signal_key,
            message=message.name,
            target=target,
            datatype="boolean",
            conversion="rule: values",
            values=shown,
            origin=where,
        )
    raw_min, raw_max = raw_bounds(signal)
    ends = [raw * float(signal.scale) + float(signal.offset) for raw in (raw_min, raw_max)]
    if not signal.is_float and (max(ends) < low or min(ends) > high):
        raise ConfigError(
            f"{where}: {signal_key} carries {min(ends):g} .. {max(ends):g} {signal.unit or ''}; "
            f"{_range(at_least, at_most)} can never hold, so this trigger could never fire"
        )
    target = CanTarget(
        name=signal.name,
        path=path,
        kind=THRESHOLD,
        factor=float(signal.scale),
        offset=float(signal.offset),
        raw_min=raw_min,
        raw_max=raw_max,
        table=table,
        low=low,
        high=high,
    )
    unit = f" {signal.unit}" if signal.unit else ""
    return ResolvedEntry(
        source=signal_key,
        message=message.name,
        target=target,
        datatype="boolean",
        conversion=f"rule: physical value {_range(at_least, at_most)}{unit}",
        values="",
        origin=where,
    )


def _check_fires_on_base(base: ResolvedEntry, values: tuple[Any, ...], low: float, high: float, where: str) -> None:
    """A rule on a VSS path must be able to fire: its values are ones the entry feeding it can produce."""
    good = {value for value, quality in base.target.table.values() if quality is Quality.GOOD}
    if values:
        if base.target.kind == TABLE and not good & set(values):
            shown = ", ".join(sorted(repr(value) for value in good)) or "nothing good"
            raise ConfigError(
                f"{where}: none of {list(values)} is a value {base.target.path} can take ({shown}); "
                "this trigger could never fire"
            )
    elif base.datatype in ("boolean", "string"):
        raise ConfigError(f"{where}: at_least / at_most need a numeric signal; {base.target.path} is {base.datatype}")


def _range(at_least: float | None, at_most: float | None) -> str:
    parts = ([] if at_least is None else [f">= {at_least:g}"]) + ([] if at_most is None else [f"<= {at_most:g}"])
    return " and ".join(parts)
