"""Our CarData catalogue: the keys a third party can ask for, each with where its value comes from.

The data (`catalogue.toml` beside this module) follows the names, categories, units and datatypes of
BMW's published telematics data catalogue, limited to what our vehicles actually send: each key names
the VSS signal whose last transmitted value fills it, or the vehicle event that makes it. A client
asks for keys (a container's `technicalDescriptors`) and an owner consents to keys or whole categories
(`expand`).

Values leave the backend through `CardataKey.wire_value` (streaming JSON) or `CardataKey.text` (the
REST API's string values): both are total — whatever a vehicle stored (a string where a number belongs,
NaN, a 5,000-digit integer) becomes a value of the key's datatype or None, never an exception.
"""

from __future__ import annotations

import functools
import itertools
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

from backend_stub.cardata.errors import BadRequest, quoted

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_REQUESTED",
    "CardataCatalogue",
    "CardataCategory",
    "CardataKey",
    "load_cardata_catalogue",
]

MAX_KEY_CHARS = 200  # BMW's longest key is ~100 characters
MAX_REQUESTED = 1000  # keys or categories in one request; BMW's whole catalogue has 244 keys
_MAX_EXACT_INT = 2**53  # beyond this a JSON reader (JavaScript, most parsers' floats) loses digits
PUSH_EVENTS = frozenset({"door", "lock", "service_call", "parked_position", "ecall"})
EVENT_KINDS = frozenset({"ecall"})  # record kinds an event-made key may come from
_FIELDS = frozenset(
    {
        "name",
        "category",
        "unit",
        "datatype",
        "streamable",
        "signal",
        "min_interval_s",
        "scale",
        "values",
        "push",
        "event",
        "extension",
    }
)
_DATATYPES = frozenset({"boolean", "string", "float", "double", "int8", "int16", "int32", "uint8", "uint16", "uint32"})


class CardataCategory(StrEnum):
    """BMW's catalogue categories."""

    BASIC_DATA = "BASIC_DATA"
    VEHICLE_STATUS = "VEHICLE_STATUS"
    USAGE_BASED = "USAGE_BASED"
    EVENTS = "EVENTS"
    BEV_PHEV_DATA = "BEV_PHEV_DATA"
    META_DATA = "META_DATA"
    TYRE_DATA = "TYRE_DATA"
    CD_CONTRACT = "CD_CONTRACT"


@dataclass(frozen=True, slots=True, kw_only=True)
class CardataKey:
    key: str  # BMW's technical descriptor, e.g. "vehicle.cabin.door.row1.driver.isOpen"
    name: str
    category: CardataCategory
    unit: str | None
    datatype: str
    streamable: bool
    signal: str | None  # our VSS path; None for a key an event makes (`event`)
    min_interval_s: float
    scale: float = 1.0
    values: Mapping[str, str] = field(default_factory=dict)
    push: frozenset[str] = frozenset()  # vehicle events that send the key at once
    event: str | None = None  # the record kind that makes a key without a signal
    extension: bool = False  # not in BMW's catalogue

    def __post_init__(self) -> None:
        if (self.signal is None) == (self.event is None):
            raise ValueError(f"{self.key}: give exactly one of signal and event")
        if self.datatype not in _DATATYPES:
            raise ValueError(f"{self.key}: datatype {self.datatype!r} is not one of {sorted(_DATATYPES)}")
        if not math.isfinite(self.min_interval_s) or self.min_interval_s < 0:
            raise ValueError(f"{self.key}: min_interval_s must be a finite number >= 0")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"{self.key}: scale must be finite and not 0")
        if not self.push <= PUSH_EVENTS:
            raise ValueError(f"{self.key}: push events {sorted(self.push - PUSH_EVENTS)} unknown")
        if self.event is not None and self.event not in EVENT_KINDS:
            raise ValueError(f"{self.key}: event {self.event!r} is not one of {sorted(EVENT_KINDS)}")

    @property
    def numeric(self) -> bool:
        return self.datatype not in ("boolean", "string")

    def wire_value(self, raw: object) -> bool | int | float | str | None:
        """The value as CarData sends it (JSON), or None when what was stored is no value of this key."""
        if self.datatype == "boolean":
            return raw if isinstance(raw, bool) else None
        if self.datatype == "string":
            if not isinstance(raw, str):
                return None
            return self.values.get(raw, raw)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None
        if isinstance(raw, int) and abs(raw) > _MAX_EXACT_INT:
            return None  # also keeps a 5,000-digit integer away from float()
        value = raw * self.scale if self.scale != 1.0 else raw
        if not math.isfinite(value):
            return None
        if self.datatype.startswith(("int", "uint")):
            return round(value)
        return round(value, 6) if isinstance(value, float) else value

    def text(self, raw: object) -> str | None:
        """The value as the REST API's `TelematicDataEntryDto.value` (a string), or None."""
        value = self.wire_value(raw)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)


@dataclass(frozen=True, slots=True)
class CardataCatalogue:
    """The keys by name, with look-ups by signal and category."""

    entries: Mapping[str, CardataKey]
    _by_signal: Mapping[str, tuple[CardataKey, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_signal: dict[str, list[CardataKey]] = {}
        for entry in self.entries.values():
            if entry.signal is not None:
                by_signal.setdefault(entry.signal, []).append(entry)
        object.__setattr__(self, "_by_signal", {path: tuple(keys) for path, keys in by_signal.items()})

    def get(self, key: str) -> CardataKey | None:
        return self.entries.get(key)

    def keys(self) -> tuple[str, ...]:
        return tuple(sorted(self.entries))

    def for_signal(self, path: str) -> tuple[CardataKey, ...]:
        """The keys a VSS signal fills (usually one)."""
        return self._by_signal.get(path, ())

    def in_category(self, category: CardataCategory) -> tuple[CardataKey, ...]:
        return tuple(entry for name, entry in sorted(self.entries.items()) if entry.category is category)

    def signals(self) -> frozenset[str]:
        return frozenset(self._by_signal)

    def check_keys(self, keys: Iterable[object], *, what: str = "key") -> frozenset[str]:
        """Every item a key of this catalogue; else BadRequest naming the first unknown one."""
        return self._checked(keys, what=what, categories=False)

    def expand(self, keys_or_categories: Iterable[object]) -> frozenset[str]:
        """Keys and category names (BMW's, e.g. "VEHICLE_STATUS") → the set of keys they mean.

        BadRequest naming the first unknown item, or for an empty or oversized request."""
        return self._checked(keys_or_categories, what="key or category", categories=True)

    def _checked(self, items: Iterable[object], *, what: str, categories: bool) -> frozenset[str]:
        if isinstance(items, str | bytes):
            raise BadRequest(f"expected a list of {what}s, got a single string")
        requested = list(itertools.islice(items, MAX_REQUESTED + 1))  # a generator of millions stops here
        if len(requested) > MAX_REQUESTED:
            raise BadRequest(f"at most {MAX_REQUESTED} {what}s in one request")
        keys: set[str] = set()
        for item in requested:
            if not isinstance(item, str) or not 0 < len(item) <= MAX_KEY_CHARS:
                raise BadRequest(f"{what} {quoted(item)} is not a name of 1..{MAX_KEY_CHARS} characters")
            if item in self.entries:
                keys.add(item)
            elif categories and item in CardataCategory.__members__:
                keys.update(entry.key for entry in self.in_category(CardataCategory(item)))
            elif item in CardataCategory.__members__:
                raise BadRequest(f"{quoted(item)} is a category: name its keys here")
            else:
                raise BadRequest(f"unknown CarData {what} {quoted(item)}: see the catalogue ({len(self.entries)} keys)")
        if not keys and not categories:
            raise BadRequest(f"name at least one CarData {what}")
        return frozenset(keys)


def _entry(key: str, raw: Mapping[str, Any]) -> CardataKey:
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"{key}: unknown fields {sorted(unknown)}")
    if not 0 < len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"{key[:80]!r}: a key is 1..{MAX_KEY_CHARS} characters")
    values = raw.get("values", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        raise ValueError(f"{key}: values must map text to text")
    return CardataKey(
        key=key,
        name=str(raw["name"]),
        category=CardataCategory(raw["category"]),
        unit=None if raw.get("unit") is None else str(raw["unit"]),
        datatype=str(raw["datatype"]),
        streamable=bool(raw.get("streamable", True)),
        signal=None if raw.get("signal") is None else str(raw["signal"]),
        min_interval_s=float(raw["min_interval_s"]),
        scale=float(raw.get("scale", 1.0)),
        values=dict(values),
        push=frozenset(str(event) for event in raw.get("push", [])),
        event=None if raw.get("event") is None else str(raw["event"]),
        extension=bool(raw.get("extension", False)),
    )


def parse_cardata_catalogue(text: str) -> CardataCatalogue:
    """A catalogue from TOML text; ValueError naming the key and field for anything wrong."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
        return CardataCatalogue({key: _entry(key, entry) for key, entry in raw.items()})
    except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"CarData catalogue is invalid: {exc!r}") from exc


@functools.cache
def load_cardata_catalogue() -> CardataCatalogue:
    """The shipped catalogue (read once: it is immutable)."""
    text = resources.files("backend_stub.cardata").joinpath("catalogue.toml").read_text(encoding="utf-8")
    return parse_cardata_catalogue(text)
