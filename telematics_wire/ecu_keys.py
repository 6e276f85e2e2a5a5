"""The ECU configuration key table both sides read: which keys exist, their defaults and their class.

Each key has a class from ecu_config.toml (AGB 3.4 a to d): `service` keys configure a service (named
with the key) and may be changed by a measure that fixes a fault of that service; `vehicle_function`
keys (brakes, engine start, steering, lights, airbag, eCall, locking) and `personal` keys (the
customer's settings) never are. The backend plans measures from it; the car refuses orders against it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

from telematics_wire.errors import SpecError

ConfigValue = str | int | float | bool


class KeyClass(StrEnum):
    SERVICE = "service"
    VEHICLE_FUNCTION = "vehicle_function"
    PERSONAL = "personal"


# The vehicle functions a remote measure may not impair, not even briefly (AGB 3.4 d: "auch nur
# kurzfristigen Ausfällen anderer Fahrzeugfunktionen"); brakes, steering and airbag are also operating
# safety (3.4 a). An order's `impairs` may name services only, never one of these.
VEHICLE_FUNCTIONS = frozenset({"airbag", "brakes", "ecall", "engine_start", "lights", "locking", "steering"})
_OWNER_FIELD = {KeyClass.SERVICE: "service", KeyClass.VEHICLE_FUNCTION: "function", KeyClass.PERSONAL: None}


@dataclass(frozen=True, slots=True)
class KeySpec:
    default: ConfigValue
    key_class: KeyClass
    owner: str | None = None  # the service a `service` key configures, the function of a `vehicle_function` key


def load_key_specs(text: str | None = None) -> dict[str, KeySpec]:
    raw: dict[str, Any] = tomllib.loads(
        text if text is not None else resources.files("telematics_wire").joinpath("ecu_config.toml").read_text()
    )
    try:
        return {key: _spec(key, item) for key, item in raw["keys"].items()}
    except (KeyError, ValueError, TypeError) as exc:
        raise SpecError(f"ECU configuration key table is invalid: {exc!r}") from exc


def _spec(key: str, item: dict[str, Any]) -> KeySpec:
    key_class = KeyClass(item["class"])
    owner_field = _OWNER_FIELD[key_class]
    allowed = {"default", "class"} | ({owner_field} if owner_field else set())
    if set(item) != allowed:
        raise ValueError(f"key {key!r} of class {key_class.value} takes exactly the fields {sorted(allowed)}")
    owner = item[owner_field] if owner_field else None
    if owner_field and (not isinstance(owner, str) or not owner):
        raise ValueError(f"key {key!r}: {owner_field} must be a name")
    if key_class is KeyClass.VEHICLE_FUNCTION and owner not in VEHICLE_FUNCTIONS:
        raise ValueError(f"key {key!r}: function {owner!r} is not one of {sorted(VEHICLE_FUNCTIONS)}")
    if key_class is KeyClass.SERVICE and owner in VEHICLE_FUNCTIONS:
        raise ValueError(f"key {key!r}: {owner!r} is a vehicle function, not a service")
    if not isinstance(item["default"], str | int | float | bool):
        raise TypeError(f"key {key!r}: default must be a text, number or bool")
    return KeySpec(item["default"], key_class, owner)


def services_of(specs: Mapping[str, KeySpec]) -> frozenset[str]:
    """The services whose configuration the key table holds: what a measure's fault may name."""
    return frozenset(s.owner for s in specs.values() if s.key_class is KeyClass.SERVICE and s.owner)
