"""The service catalogue and the data categories of the privacy menu.

The option codes of the terms of service, their services per brand and each service's term come from
option_codes.toml; the data categories each code needs and the path prefixes of the privacy menu from
catalogue.toml.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum
from importlib import resources
from typing import Any

from telematics_wire.errors import SpecError
from telematics_wire.terms import Term

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
# A path no prefix of catalogue.toml matches: personal (kept 4 weeks, never technical), and in a
# category no service needs, so a production car collects it only when a service is made to need it.
UNCLASSIFIED = Category.SENSORS
# "driver_profile" until issue 12: the terms' category is the user profile, the driver profile a part of it.
_LEGACY_NAMES = {"driver_profile": Category.USER_PROFILE}


class Brand(StrEnum):
    """The brands the catalogue lists services for."""

    BMW = "BMW"
    BMW_I = "BMW i"
    MINI = "MINI"


class EntryKind(StrEnum):
    OPTION = "option"  # an option code: the car is built with it (equipment)
    CODELESS = "codeless"  # listed without a code (Navigationskarten-Update): our stable id
    STORE = "store"  # a store package ("Connected Package ... (Store)"): our stable id


@dataclass(frozen=True, slots=True, kw_only=True)
class IncludedService:
    """One service of an option code, for some brands, with the term(s) the terms list for it."""

    name: str
    brands: frozenset[Brand]
    terms: tuple[Term, ...]  # two: the customer chooses ("[Laufzeit 3 Monate/Laufzeit 3 Jahre]")
    note: str | None = None

    @property
    def fixed_term(self) -> bool:
        """A service with a fixed term: a paid one ("befristeter kostenpflichtiger Dienst", AGB 3.2), which
        payment default suspends (AGB 5.5 c); an unlimited one comes with the car or the contract (AGB 1.3)."""
        return Term.UNLIMITED not in self.terms


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceDefinition:
    code: str
    name: str
    categories: frozenset[Category]
    legal: bool = False
    kind: EntryKind = EntryKind.OPTION
    services: tuple[IncludedService, ...] = ()

    @property
    def equipment(self) -> bool:
        """A code the car must be built with; code-less entries and store packages are not equipment."""
        return self.kind is EntryKind.OPTION

    @property
    def brands(self) -> frozenset[Brand]:
        return frozenset(b for s in self.services for b in s.brands)

    def services_for(self, brand: Brand) -> tuple[IncludedService, ...]:
        return tuple(s for s in self.services if brand in s.brands)

    def terms_for(self, brand: Brand) -> tuple[Term, ...]:
        """The terms a booking of this code may have for `brand`, in term order: those its fixed-term services
        list; `unlimited` only for a code whose services are all unlimited. (Its unlimited services run
        unlimited whatever term is booked: `included_terms`. Booking 6AP "unlimited" would let its 2+1
        Lademanagement run for ever, never invoiced.)"""
        services = self.services_for(brand)
        offered = {t for s in services if s.fixed_term for t in s.terms} or {t for s in services for t in s.terms}
        return tuple(t for t in Term if t in offered)

    def included_terms(self, brand: Brand, booked: Term) -> tuple[tuple[IncludedService, Term], ...]:
        """Each service a booking with term `booked` gives `brand`, with the term it runs on: `booked` where the
        service lists it, else the service's own (one term: checked at load). 6AP booked 2+1y: Lademanagement
        and Remote 3D View 2+1y, Remote Services unlimited."""
        return tuple((s, booked if booked in s.terms else s.terms[0]) for s in self.services_for(brand))

    def check_terms(self) -> None:
        """Raise ValueError for data `included_terms` cannot read: a service with an unlimited and a fixed
        term, or one whose term a booking leaves open (several listed, none the booked one)."""
        for service in self.services:
            if service.fixed_term is (Term.UNLIMITED in service.terms) or len(set(service.terms)) != len(service.terms):
                raise ValueError(f"{self.code} {service.name!r}: terms {[t.value for t in service.terms]}")
        for brand in self.brands:
            for booked in self.terms_for(brand):
                for service in self.services_for(brand):
                    if booked not in service.terms and len(service.terms) > 1:
                        raise ValueError(
                            f"{self.code} {service.name!r} for {brand}: booked {booked}, it lists "
                            f"{[t.value for t in service.terms]}: which one runs?"
                        )


LEGAL_ECALL = "6AF"
TELESERVICES = "6AE"
INTELLIGENT_ECALL = "6AC"
# The base services, by their names in the catalogue: the SIM is active while one of them runs
# (AGB 6.1), whichever booked code brings it (6AE, 6AC, 612, 6U1/6U2/6U3, 6FP, 6UM).
TELESERVICES_SERVICE = "Teleservices"
INTELLIGENT_ECALL_SERVICE = "Intelligenter Notruf"
BASE_SERVICES = frozenset({TELESERVICES_SERVICE, INTELLIGENT_ECALL_SERVICE})


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleFit:
    """What one vehicle is: its brand, the option codes it is built with (None: not stated, so every
    code of its brand), and its first registration ("Erstzulassung", None: not configured)."""

    brand: Brand = Brand.BMW
    equipment: frozenset[str] | None = None
    first_registration: date | None = None


def _read(name: str) -> str:
    return resources.files("telematics_wire").joinpath(name).read_text(encoding="utf-8")


def _included(code: str, item: Any) -> IncludedService:
    if not isinstance(item, dict):
        raise TypeError(f"{code}: a service entry must be a table, got {item!r}")
    brands = item["brands"]
    terms = item["terms"]
    if not isinstance(brands, list) or not brands or not isinstance(terms, list) or not terms:
        raise ValueError(f"{code} {item.get('service')!r}: brands and terms must be non-empty arrays")
    return IncludedService(
        name=str(item["service"]),
        brands=frozenset(Brand(b) for b in brands),
        terms=tuple(Term.of_label(t) for t in terms),
        note=None if item.get("note") is None else str(item["note"]),
    )


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The option codes (option_codes.toml) with their data categories and the privacy menu's path
    prefixes (catalogue.toml). `vehicle` is set on a vehicle's own copy (`for_vehicle`): the vehicle
    checks every file against its brand, equipment and first registration."""

    services: dict[str, ServiceDefinition]
    prefixes: tuple[tuple[str, Category], ...]  # longest first
    _categories: dict[str, Category] = field(default_factory=dict, compare=False, repr=False)
    vehicle: VehicleFit | None = None

    @classmethod
    def load(cls, text: str | None = None, codes_text: str | None = None) -> Catalogue:
        raw: dict[str, Any] = tomllib.loads(text if text is not None else _read("catalogue.toml"))
        codes: dict[str, Any] = tomllib.loads(codes_text if codes_text is not None else _read("option_codes.toml"))
        try:
            categories = raw["services"]
            entries = codes["codes"]
        except KeyError as exc:
            raise SpecError(f"service catalogue is invalid: no table {exc}") from exc
        if set(categories) != set(entries):
            raise SpecError(
                f"service catalogue is invalid: catalogue.toml [services] and option_codes.toml [codes] must list "
                f"the same codes; only in the first: {sorted(set(categories) - set(entries))}, only in the second: "
                f"{sorted(set(entries) - set(categories))}"
            )
        try:
            services = {
                code: ServiceDefinition(
                    code=code,
                    name=str(entry["name"]),
                    categories=frozenset(Category(c) for c in categories[code].get("categories", [])),
                    legal=bool(categories[code].get("legal", False)),
                    kind=EntryKind(entry.get("kind", EntryKind.OPTION)),
                    services=tuple(_included(code, item) for item in entry["services"]),
                )
                for code, entry in entries.items()
            }
            for definition in services.values():
                definition.check_terms()
            prefixes = tuple(
                sorted(((p, Category(c)) for p, c in raw["categories"].items()), key=lambda pc: -len(pc[0]))
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise SpecError(f"service catalogue is invalid: {exc!r}") from exc
        return cls(services=services, prefixes=prefixes)

    def for_vehicle(self, fit: VehicleFit) -> Catalogue:
        """This catalogue as one vehicle checks its files against it; refuses equipment it does not list."""
        if fit.equipment is not None:
            self.check_equipment(fit.equipment, fit.brand)
        return replace(self, vehicle=fit)

    def check_equipment(self, equipment: frozenset[str], brand: Brand) -> None:
        """Raise ValueError for a code that is no option code of `brand` (6AF: the legal-eCall setting)."""
        for code in sorted(equipment):
            entry = self.services.get(code)
            if code == LEGAL_ECALL:
                raise ValueError("6AF (legal eCall) is not listed as equipment: it is the vehicle's legal-eCall flag")
            if entry is None or not entry.equipment:
                raise ValueError(f"{code!r} is not an option code of the catalogue: {self.option_codes()}")
            if brand not in entry.brands:
                raise ValueError(f"option code {code} ({entry.name}) is not offered for {brand}")

    def option_codes(self) -> str:
        return ", ".join(sorted(c for c, e in self.services.items() if e.equipment))

    def booking_refusal(self, code: str, term: Term, *, brand: Brand, equipment: frozenset[str] | None) -> str | None:
        """Why `code` with `term` cannot be booked for this vehicle, or None when it can."""
        entry = self.services.get(code)
        if entry is None:
            return f"unknown service code {code!r}; the catalogue has {', '.join(sorted(self.services))}"
        if brand not in entry.brands:
            return f"service {code} ({entry.name}) is not offered for {brand}"
        if entry.equipment and code != LEGAL_ECALL and equipment is not None and code not in equipment:
            built = ", ".join(sorted(equipment)) or "none"
            return f"the vehicle is not built with option code {code} ({entry.name}); its equipment: {built}"
        offered = entry.terms_for(brand)
        if term not in offered:
            names = ", ".join(f"{t} ({t.label})" for t in offered)
            why = (
                " (the term of a booking is one its fixed-term services list; its unlimited services run "
                "unlimited anyway)"
                if term is Term.UNLIMITED and any(not s.fixed_term for s in entry.services_for(brand))
                else ""
            )
            return f"service {code} ({entry.name}) is offered for {brand} with the term(s) {names}, not {term}{why}"
        return None

    def category_of(self, path: str) -> Category:
        """The privacy-menu category of a VSS path: its longest prefix in catalogue.toml, else `UNCLASSIFIED`."""
        known = self._categories.get(path)  # a vehicle has a few hundred paths: remember them
        if known is not None:
            return known
        category = next(
            (c for prefix, c in self.prefixes if path == prefix or path.startswith(prefix + ".")),
            UNCLASSIFIED,
        )
        self._categories[path] = category
        return category

    def categories_of(self, codes: set[str] | frozenset[str]) -> frozenset[Category]:
        return frozenset(c for code in codes if code in self.services for c in self.services[code].categories)
