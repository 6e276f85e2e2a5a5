"""The typed CAN → VSS mapping: entries as written, checked against the CAN database and the VSS catalogue.

A mapping file (`tcu/vehicle/mapping/can.toml` documents the format) has `[vss]` and `[extension]`
tables of `"Message.Signal" = "Vehicle.Path"` (shorthand) or `"Message.Signal" = { path = ..., ... }`.
`resolve_entry` turns one entry into a `CanTarget` (`tcu.vehicle.can_target`): everything the hot path
needs, worked out once —
the conversion from the raw integer cantools decodes (`scaling=False`) to the VSS value folded into
one multiply-add, the rounding to the source resolution, the plausible raw range, and a table for
value names, booleans and values meaning "not available". Every check a person can get wrong
happens here, at start-up, and raises `ConfigError` naming the file, the entry and what is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from tcu.errors import ConfigError
from tcu.vehicle.can_dbc_lookup import find_signal, raw_bounds, raw_key
from tcu.vehicle.can_target import LINEAR, TABLE, CanTarget, ResolvedEntry
from tcu.vehicle.state import Quality
from tcu.vehicle.units import canonical_unit, conversion
from tcu.vehicle.vss_catalogue import FLOATS, INTEGER_RANGES, VssSpec, vss_spec
from telematics_wire.signal_values import SignalValue

# A 1-bit flag with a VAL_ table maps to a boolean by default (raw 1 → true) only when its names read
# that way: raw 1 says "yes" in a word we know and nothing says otherwise. Anything else ("Not pressed",
# "Door_Closed", "Open"/"Shut", names we cannot read) needs `values` written out: a guessed default
# could invert a crash flag or an SOS button, a false eCall on every healthy car.
_YES_WORDS = frozenset(
    {"OPEN", "OPENED", "ON", "ACTIVE", "TRUE", "YES", "PRESSED", "LOCKED", "DEPLOYED", "DETECTED", "CRASH", "AJAR"}
    | {"SET"}
)
_NO_WORDS = frozenset(
    {
        "CLOSED",
        "CLOSE",
        "SHUT",
        "OFF",
        "FALSE",
        "NO",
        "NOT",
        "NONE",
        "INACTIVE",
        "RELEASED",
        "UNLOCKED",
        "INVALID",
        "SNA",
        "ERROR",
        "INIT",
        "UNKNOWN",
    }
)


def _words(name: str) -> frozenset[str]:
    return frozenset(word for word in re.split(r"[^A-Z0-9]+", name.upper()) if word)


def _reads_as_default_flag(choices: Mapping[int, str]) -> bool:
    """True when the VAL_ names say raw 1 is "yes" and raw 0 is not (no names at all also qualifies)."""
    if not choices:
        return True
    one, zero = _words(choices.get(1, "")), _words(choices.get(0, ""))
    one_says_yes = bool(one & _YES_WORDS) and not one & _NO_WORDS
    zero_says_yes = bool(zero & _YES_WORDS) and not zero & _NO_WORDS
    return one_says_yes and not zero_says_yes


_ENTRY_KEYS = frozenset({"path", "scale", "offset", "unit", "values", "invalid", "decimals", "datatype", "vss_unit"})
_MAX_DECIMALS = 12


def _decimals(*numbers: float) -> int:
    """Digits that show each step exactly (0.25 → 2, 0.1 → 1), at most one past its magnitude."""
    digits = 0
    for signed in numbers:
        number = abs(signed)
        if number == 0 or number.is_integer():
            continue
        limit = min(_MAX_DECIMALS, max(0, math.ceil(-math.log10(number))) + 1)
        exact = next((d for d in range(limit + 1) if abs(round(number, d) - number) <= number * 1e-9), limit)
        digits = max(digits, exact)
    return digits


def _vss_spec(path: str, entry: Mapping[str, Any], source_datatype: str, where: str) -> tuple[VssSpec, bool]:
    """The target's spec from the catalogue, or from the entry's `datatype`/`vss_unit`; (spec, inferred)."""
    spec = vss_spec(path)
    datatype, vss_unit = entry.get("datatype"), entry.get("vss_unit")
    if spec is not None:
        if datatype is not None and datatype != spec.datatype:
            raise ConfigError(f"{where}: datatype {datatype!r} contradicts VSS, where {path} is {spec.datatype}")
        if vss_unit is not None and canonical_unit(str(vss_unit)) != spec.unit:
            raise ConfigError(
                f"{where}: vss_unit {vss_unit!r} contradicts VSS, where {path} is in {spec.unit or 'no unit'}"
            )
        return spec, False
    if (datatype is not None and not isinstance(datatype, str)) or (
        vss_unit is not None and not isinstance(vss_unit, str)
    ):
        raise ConfigError(f"{where}: datatype and vss_unit must be strings")
    unit = "" if vss_unit is None else canonical_unit(vss_unit)
    if unit is None:
        raise ConfigError(f"{where}: vss_unit {vss_unit!r} is not a unit we know")
    try:
        return VssSpec(path=path, datatype=datatype or source_datatype, unit=unit), datatype is None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _number(entry: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def resolve_entry(database: Any, key: str, spec_in: str | Mapping[str, Any], *, where: str) -> ResolvedEntry:
    """One mapping entry checked against the database and VSS; ConfigError names `where` and the fault."""
    entry: Mapping[str, Any] = {"path": spec_in} if isinstance(spec_in, str) else spec_in
    if not isinstance(entry, Mapping):
        raise ConfigError(f'{where}: expected "Vehicle.Path" or {{ path = "Vehicle.Path", ... }}, got {spec_in!r}')
    if unknown := set(entry) - _ENTRY_KEYS:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(_ENTRY_KEYS))}"
        )
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("Vehicle."):
        raise ConfigError(f"{where}: {path!r} is not a VSS path (must start with 'Vehicle.')")
    message, signal = find_signal(database, key, where)
    choices = {int(raw): str(name) for raw, name in (signal.choices or {}).items()}
    inferred = "string" if choices else "boolean" if signal.length == 1 else "float"
    spec, guessed = _vss_spec(path, entry, inferred, where)
    values = entry.get("values")
    if values is not None and (not isinstance(values, Mapping) or not values):
        raise ConfigError(f"{where}: values must be a table {{ NAME_OR_RAW = vss_value, ... }}")
    invalid_keys = entry.get("invalid", [])
    if not isinstance(invalid_keys, list):
        raise ConfigError(f"{where}: invalid must be a list of VAL_ names or raw values")
    table: dict[float, tuple[SignalValue, Quality]] = {}
    for item in invalid_keys:
        raw = raw_key(signal, item, f"{where} invalid")
        table[raw] = (choices.get(raw, str(raw)), Quality.INVALID)
    note = " (datatype inferred: not in the VSS catalogue)" if guessed else ""
    common = {"source": key, "message": message.name, "datatype": spec.datatype + note, "origin": where}
    if spec.datatype == "boolean":
        return _boolean(signal, spec, values=values, table=table, choices=choices, where=where, common=common)
    if spec.datatype == "string":
        return _string(signal, spec, values=values, table=table, choices=choices, where=where, common=common)
    if not spec.numeric:
        raise ConfigError(f"{where}: {path} is {spec.datatype}; a CAN signal cannot feed it")
    return _linear(signal, spec, entry=entry, values=values, table=table, where=where, common=common)


def _boolean(
    signal: Any,
    spec: VssSpec,
    *,
    values: Any,
    table: dict[float, Any],
    choices: dict[int, str],
    where: str,
    common: dict[str, Any],
) -> ResolvedEntry:
    if values is None:
        if signal.length != 1:
            names = ", ".join(f"{raw}={name}" for raw, name in sorted(choices.items())) or "no VAL_ table"
            raise ConfigError(
                f"{where}: {spec.path} is boolean but {signal.name} is {signal.length} bits ({names}); "
                "say which values are true with values = { NAME = true, OTHER = false } "
                "(only a 1-bit signal maps to a boolean by default, raw 0 → false, 1 → true)"
            )
        if not _reads_as_default_flag(choices):
            names = ", ".join(f"{raw} {name!r}" for raw, name in sorted(choices.items()))
            raise ConfigError(
                f"{where}: {spec.path} is boolean and the 1-bit {signal.name} names its values {names}; "
                "these names do not say that raw 1 means true, and a guessed default could invert it: "
                "write values = { NAME = true, OTHER = false } for both raw values"
            )
        for raw, flag in ((0, False), (1, True)):
            table.setdefault(raw, (flag, Quality.GOOD))
        if signal.is_signed:  # a signed 1-bit signal decodes as 0 / -1
            table.setdefault(-1, (True, Quality.GOOD))
        shown = ", ".join(
            f"{raw}{f' ({choices[raw]})' if raw in choices else ''} → {str(flag).lower()}"
            for raw, flag in ((0, False), (1, True))
        )
        target = CanTarget(name=signal.name, path=spec.path, kind=TABLE, table=table, miss=(False, Quality.INVALID))
        return ResolvedEntry(target=target, conversion="1-bit default", values=shown, **common)
    for key, flag in values.items():
        if not isinstance(flag, bool):
            raise ConfigError(f"{where} values.{key}: {spec.path} is boolean; expected true or false, got {flag!r}")
        table[raw_key(signal, key, f"{where} values")] = (flag, Quality.GOOD)
    target = CanTarget(name=signal.name, path=spec.path, kind=TABLE, table=table, miss=(False, Quality.INVALID))
    return ResolvedEntry(target=target, conversion="values", values=_show(values, table), **common)


def _string(
    signal: Any,
    spec: VssSpec,
    *,
    values: Any,
    table: dict[float, Any],
    choices: dict[int, str],
    where: str,
    common: dict[str, Any],
) -> ResolvedEntry:
    if values is None:
        if not choices:
            raise ConfigError(
                f"{where}: {spec.path} is a string but {signal.name} has no VAL_ table; "
                'give values = { 0 = "...", 1 = "..." }'
            )
        values = {name: name for raw, name in choices.items() if raw not in table}
        how = "VAL_ names"
    else:
        how = "values"
    for key, text in values.items():
        if not isinstance(text, str):
            raise ConfigError(f"{where} values.{key}: {spec.path} is a string; got {text!r}")
        table.setdefault(raw_key(signal, key, f"{where} values"), (text, Quality.GOOD))
    if spec.allowed:
        wrong = sorted({str(v) for v, q in table.values() if q is Quality.GOOD and v not in spec.allowed})
        if wrong:
            raise ConfigError(
                f"{where}: {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not allowed for {spec.path} "
                f"(VSS allows {', '.join(spec.allowed)}); "
                "map them with values = { ... } or list them in invalid = [...]"
            )
    target = CanTarget(name=signal.name, path=spec.path, kind=TABLE, table=table)
    return ResolvedEntry(target=target, conversion=how, values=_show(values, table), **common)


def _linear(
    signal: Any,
    spec: VssSpec,
    *,
    entry: Mapping[str, Any],
    values: Any,
    table: dict[float, Any],
    where: str,
    common: dict[str, Any],
) -> ResolvedEntry:
    scale, offset = _number(entry, "scale", 1.0, where), _number(entry, "offset", 0.0, where)
    if scale == 0:
        raise ConfigError(f"{where}: scale must not be 0")
    written = entry.get("unit", signal.unit or "")
    if not isinstance(written, str):
        raise ConfigError(f"{where}: unit must be a string")
    unit = canonical_unit(written)
    if unit is None:
        raise ConfigError(
            f"{where}: unit {written!r} of {signal.name} is not one we know; write the unit of the value "
            f'as unit = "..." in the entry (VSS wants {spec.unit or "no unit"})'
        )
    how = f"raw*{_g(signal.scale)}{_signed(signal.offset)}"
    if scale != 1 or offset != 0:
        how += f" then *{_g(scale)}{_signed(offset)}"
    factor, shift = float(signal.scale) * scale, float(signal.offset) * scale + offset
    if spec.unit and unit and unit != spec.unit:
        converted = conversion(unit, spec.unit)
        if converted is None:
            raise ConfigError(
                f"{where}: {signal.name} is in {unit}, which does not convert to {spec.path}'s {spec.unit}"
            )
        factor, shift = factor * converted[0], shift * converted[0] + converted[1]
        how += f" {unit} → {spec.unit}"
    elif spec.unit:
        how += f" {spec.unit}" + ("" if unit else " (unit assumed: the DBC gives none)")
    raw_min, raw_max = raw_bounds(signal)
    if spec.datatype in INTEGER_RANGES or spec.minimum is not None or spec.maximum is not None:
        low, high = INTEGER_RANGES.get(spec.datatype, (-math.inf, math.inf))
        low = max(low, spec.minimum if spec.minimum is not None else -math.inf)
        high = min(high, spec.maximum if spec.maximum is not None else math.inf)
        ends = sorted(((low - shift) / factor, (high - shift) / factor))
        raw_min, raw_max = max(raw_min, ends[0] - 1e-9), min(raw_max, ends[1] + 1e-9)
    decimals: int | None
    if spec.datatype in FLOATS:
        declared = entry.get("decimals")
        if declared is not None and (
            isinstance(declared, bool) or not isinstance(declared, int) or not 0 <= declared <= 15
        ):
            raise ConfigError(f"{where}: decimals must be an integer 0..15")
        decimals = _decimals(factor, shift) if declared is None else declared
        how += f", {decimals} decimals"
    else:
        decimals = None
    for key, number in (values or {}).items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ConfigError(
                f"{where} values.{key}: {spec.path} is {spec.datatype}; expected a number, got {number!r}"
            )
        table.setdefault(raw_key(signal, key, f"{where} values"), (number, Quality.GOOD))
    target = CanTarget(
        name=signal.name,
        path=spec.path,
        kind=LINEAR,
        factor=factor,
        offset=shift,
        decimals=decimals,
        raw_min=raw_min,
        raw_max=raw_max,
        table=table,
    )
    shown = ", ".join(f"{k} → {v[0]}{' (invalid)' if v[1] is Quality.INVALID else ''}" for k, v in table.items())
    return ResolvedEntry(target=target, conversion=how, values=shown, **common)


def _show(values: Mapping[str, Any], table: Mapping[float, tuple[SignalValue, Quality]] | None = None) -> str:
    shown = [f"{key} → {str(v).lower() if isinstance(v, bool) else v}" for key, v in values.items()]
    invalid = [str(raw) for raw, (_, quality) in (table or {}).items() if quality is Quality.INVALID]
    return ", ".join(shown + ([f"invalid: {', '.join(invalid)}"] if invalid else []))


def _g(number: float) -> str:
    return f"{number:g}"


def _signed(number: float) -> str:
    return "" if number == 0 else f"{'+' if number > 0 else '-'}{abs(number):g}"
