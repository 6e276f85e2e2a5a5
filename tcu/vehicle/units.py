"""Units of measure: the spellings DBC files use, and the affine conversion between two units.

VSS names its units (`km/h`, `celsius`, `V`, `percent`, ... from the VSS unit catalogue); DBC files
spell them as their authors liked (`kph`, `degC`, `°C`, Vector's `Unit_KiloMeterPerHour`, or nothing
at all). `canonical_unit` maps a spelling to the VSS name; `conversion(source, target)` gives the
`(factor, offset)` with `target = source * factor + offset`, or None when the two do not measure the
same quantity. Every conversion is affine, so a mapping entry folds it into one multiply-add.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Unit:
    quantity: str
    factor: float  # value in the quantity's base unit = value * factor + offset
    offset: float = 0.0


# VSS unit names (COVESA VSS 4.x units.yaml) we may meet on a car, by quantity.
_UNITS: dict[str, _Unit] = {
    "km/h": _Unit("speed", 1 / 3.6),
    "m/s": _Unit("speed", 1.0),
    "mph": _Unit("speed", 0.44704),
    "km": _Unit("length", 1000.0),
    "m": _Unit("length", 1.0),
    "cm": _Unit("length", 0.01),
    "mm": _Unit("length", 0.001),
    "mi": _Unit("length", 1609.344),
    "celsius": _Unit("temperature", 1.0),
    "fahrenheit": _Unit("temperature", 5 / 9, -32 * 5 / 9),
    "kelvin": _Unit("temperature", 1.0, -273.15),
    "V": _Unit("voltage", 1.0),
    "mV": _Unit("voltage", 0.001),
    "A": _Unit("current", 1.0),
    "mA": _Unit("current", 0.001),
    "percent": _Unit("ratio", 1.0),
    "rpm": _Unit("rotation", 1.0),
    "Pa": _Unit("pressure", 1.0),
    "kPa": _Unit("pressure", 1000.0),
    "hPa": _Unit("pressure", 100.0),
    "mbar": _Unit("pressure", 100.0),
    "bar": _Unit("pressure", 100_000.0),
    "psi": _Unit("pressure", 6894.757293168),
    "s": _Unit("time", 1.0),
    "ms": _Unit("time", 0.001),
    "min": _Unit("time", 60.0),
    "h": _Unit("time", 3600.0),
    "days": _Unit("time", 86400.0),
    "l": _Unit("volume", 1.0),
    "ml": _Unit("volume", 0.001),
    "degrees": _Unit("angle", 1.0),
    "degrees/s": _Unit("angular speed", 1.0),
    "m/s^2": _Unit("acceleration", 1.0),
    "g": _Unit("acceleration", 9.80665),
    "W": _Unit("power", 1.0),
    "kW": _Unit("power", 1000.0),
    "Nm": _Unit("torque", 1.0),
    "kg": _Unit("mass", 1.0),
    "Hz": _Unit("frequency", 1.0),
    "l/100km": _Unit("consumption", 1.0),
    "g/s": _Unit("mass flow", 1.0),
}

# Spellings seen in DBC/KCD/ARXML files (including Vector's `Unit_...` names in many OEM DBCs).
_ALIASES: dict[str, str] = {
    "kph": "km/h",
    "kmh": "km/h",
    "km/hr": "km/h",
    "unit_kilometerperhour": "km/h",
    "meter/s": "m/s",
    "mps": "m/s",
    "unit_meterpersecon": "m/s",
    "miles/h": "mph",
    "unit_mileperhour": "mph",
    "kilometer": "km",
    "kilometers": "km",
    "unit_kilometer": "km",
    "meter": "m",
    "meters": "m",
    "unit_meter": "m",
    "unit_millimeter": "mm",
    "unit_centimeter": "cm",
    "miles": "mi",
    "mile": "mi",
    "unit_mile": "mi",
    "degc": "celsius",
    "deg c": "celsius",
    "°c": "celsius",
    "c": "celsius",
    "grad c": "celsius",
    "unit_degrecelsi": "celsius",
    "degf": "fahrenheit",
    "°f": "fahrenheit",
    "f": "fahrenheit",
    "k": "kelvin",
    "v": "V",
    "volt": "V",
    "volts": "V",
    "unit_volt": "V",
    "mv": "mV",
    "unit_millivolt": "mV",
    "a": "A",
    "amp": "A",
    "ampere": "A",
    "unit_amper": "A",
    "ma": "mA",
    "%": "percent",
    "pct": "percent",
    "unit_percent": "percent",
    "1/min": "rpm",
    "u/min": "rpm",
    "unit_minutinver": "rpm",
    "pa": "Pa",
    "kpa": "kPa",
    "hpa": "hPa",
    "mbar": "mbar",
    "unit_millibar": "mbar",
    "unit_bar": "bar",
    "sec": "s",
    "secs": "s",
    "seconds": "s",
    "unit_secon": "s",
    "unit_millisecon": "ms",
    "unit_minut": "min",
    "unit_hours": "h",
    "hours": "h",
    "hr": "h",
    "unit_day": "days",
    "liter": "l",
    "litre": "l",
    "unit_liter": "l",
    "unit_milliliter": "ml",
    "deg": "degrees",
    "°": "degrees",
    "unit_degreofarc": "degrees",
    "deg/s": "degrees/s",
    "°/s": "degrees/s",
    "unit_degreofarcpersecon": "degrees/s",
    "m/s2": "m/s^2",
    "m/s²": "m/s^2",
    "unit_meterperseconsquar": "m/s^2",
    "unit_forceofgravi": "g",
    "unit_watt": "W",
    "unit_kilowatt": "kW",
    "nm": "Nm",
    "unit_newtometer": "Nm",
    "unit_kilogram": "kg",
    "unit_hertz": "Hz",
}


def canonical_unit(spelling: str) -> str | None:
    """The VSS name of a unit as a file spells it; None when we do not know it. '' stays ''."""
    text = spelling.strip()
    if not text or text in _UNITS:
        return text
    folded = text.lower()
    return _ALIASES.get(folded) or next((name for name in _UNITS if name.lower() == folded), None)


def conversion(source: str, target: str) -> tuple[float, float] | None:
    """`(factor, offset)` turning a value in `source` into `target` (both VSS names); None if impossible."""
    if source == target:
        return 1.0, 0.0
    a, b = _UNITS.get(source), _UNITS.get(target)
    if a is None or b is None or a.quantity != b.quantity:
        return None
    # base = x * a.factor + a.offset; target = (base - b.offset) / b.factor
    return a.factor / b.factor, (a.offset - b.offset) / b.factor


def known_units() -> tuple[str, ...]:
    return tuple(_UNITS)
