"""The service catalogue and the data categories of the privacy menu, loaded from catalogue.toml."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

from tcu.errors import ConfigError


class Category(StrEnum):
    VEHICLE_STATUS = "vehicle_status"
    POSITION = "position"  # position and movement
    MAINTENANCE = "maintenance"
    ENVIRONMENT = "environment"
    DRIVER_PROFILE = "driver_profile"


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
