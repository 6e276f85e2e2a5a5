"""The service catalogue and the data categories of the privacy menu, loaded from catalogue.toml."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

from tcu.errors import ConfigError

_LOGGER = logging.getLogger(__name__)


class Category(StrEnum):
    """The data categories of the privacy menu, as the terms' privacy part B lists them.

    The values are what the consent file, the `tcu privacy` command and the capability report say; the
    German label is the terms' own name. A renamed value keeps its old name in `_LEGACY_NAMES`, so a
    consent file written before the rename still loads (`Category.from_stored`).
    """

    VEHICLE_STATUS = "vehicle_status"  # mileage, battery voltage, door and flap state
    POSITION = "position"  # position and movement: time, position, speed
    MAINTENANCE = "maintenance"  # Condition Based Service: next service due, oil level, brake wear
    TRAFFIC = "traffic"  # dynamic traffic information: jams, obstacles, signs, parking spaces
    ENVIRONMENT = "environment"  # temperature, rain
    USER_PROFILE = "user_profile"  # profile data, navigation/media/phone settings, driver profile, climate/light
    SENSORS = "sensors"  # radar, ultrasound, gesture, speech

    @property
    def label(self) -> str:
        """The category's name in the terms (privacy part B)."""
        return _LABELS[self]

    @property
    def technical(self) -> bool:
        """Technical vehicle data (privacy part D: status and maintenance data), kept for the vehicle's
        life; every other category is personal data, deleted after 4 weeks (part B)."""
        return self in _TECHNICAL

    @classmethod
    def from_stored(cls, name: object) -> Category | None:
        """The category a stored name means: a current value, or an old name mapped to its successor;
        None (logged) for a name no version of this agent wrote, which the caller ignores."""
        if isinstance(name, str):
            if name in cls._value2member_map_:
                return cls(name)
            successor = _LEGACY_NAMES.get(name)
            if successor is not None:
                _LOGGER.info("stored data category %r is now %r", name, successor.value)
                return successor
        _LOGGER.warning("stored data category %r is not one of %s: ignored", name, ", ".join(c.value for c in cls))
        return None


_LABELS = {
    Category.VEHICLE_STATUS: "Fahrzeug Statusdaten",
    Category.POSITION: "Positions- und Bewegungsdaten",
    Category.MAINTENANCE: "Fahrzeug Wartungsdaten",
    Category.TRAFFIC: "Dynamische Verkehrsinformationen",
    Category.ENVIRONMENT: "Umwelt Informationen",
    Category.USER_PROFILE: "Nutzerprofil",
    Category.SENSORS: "Sensorinformationen",
}
_TECHNICAL = frozenset({Category.VEHICLE_STATUS, Category.MAINTENANCE})
# "driver_profile" until issue 12: the terms' category is the user profile, the driver profile a part of it.
_LEGACY_NAMES = {"driver_profile": Category.USER_PROFILE}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceDefinition:
    code: str
    name: str
    categories: frozenset[Category]
    legal: bool = False


LEGAL_ECALL = "6AF"
TELESERVICES = "6AE"
INTELLIGENT_ECALL = "6AC"


@dataclass(frozen=True, slots=True)
class Catalogue:
    services: dict[str, ServiceDefinition]
    prefixes: tuple[tuple[str, Category], ...]  # longest first
    _categories: dict[str, Category] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, text: str | None = None) -> Catalogue:
        raw: dict[str, Any] = tomllib.loads(
            text if text is not None else resources.files("tcu.services").joinpath("catalogue.toml").read_text()
        )
        try:
            services = {
                code: ServiceDefinition(
                    code=code,
                    name=str(item["name"]),
                    categories=frozenset(Category(c) for c in item.get("categories", [])),
                    legal=bool(item.get("legal", False)),
                )
                for code, item in raw["services"].items()
            }
            prefixes = tuple(
                sorted(((p, Category(c)) for p, c in raw["categories"].items()), key=lambda pc: -len(pc[0]))
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"service catalogue is invalid: {exc!r}") from exc
        return cls(services=services, prefixes=prefixes)

    def category_of(self, path: str) -> Category:
        known = self._categories.get(path)  # a vehicle has a few hundred paths: remember them
        if known is not None:
            return known
        category = next(
            (c for prefix, c in self.prefixes if path == prefix or path.startswith(prefix + ".")),
            Category.VEHICLE_STATUS,
        )
        self._categories[path] = category
        return category

    def categories_of(self, codes: set[str] | frozenset[str]) -> frozenset[Category]:
        return frozenset(c for code in codes if code in self.services for c in self.services[code].categories)
