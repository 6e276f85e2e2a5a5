"""Personal data held in the vehicle: up to three driver profiles, privacy consents, paired accounts.

Stored as one canonical CBOR file written atomically, so that a snapshot is a byte string: remote
measures compare "before" and "after rollback" byte for byte. The privacy menu allows or blocks
upload per data category; it never touches the eCall. An owner change wipes everything personal and
keeps technical vehicle data (queue, provisioning, legal-eCall state).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cbor2

from tcu.errors import StorageError
from tcu.persist import read_optional, write_atomic
from tcu.services.catalogue import Category

_LOGGER = logging.getLogger(__name__)

MAX_PROFILES = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverProfile:
    name: str
    seat_position: int = 0
    mirror_position: int = 0
    climate_c: float = 21.0
    radio_presets: tuple[str, ...] = ()


def _default_consents() -> dict[Category, bool]:
    return dict.fromkeys(Category, True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonalData:
    profiles: tuple[DriverProfile, ...] = ()
    consents: Mapping[Category, bool] = field(default_factory=_default_consents)
    paired_accounts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.profiles) > MAX_PROFILES:
            raise ValueError(f"at most {MAX_PROFILES} driver profiles, got {len(self.profiles)}")

    def allows(self, category: Category) -> bool:
        return self.consents.get(category, True)

    def with_consent(self, category: Category, allowed: bool) -> PersonalData:
        return replace(self, consents={**self.consents, category: allowed})

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "profiles": [
                    {
                        "name": p.name,
                        "seat": p.seat_position,
                        "mirror": p.mirror_position,
                        "climate_c": p.climate_c,
                        "radio": list(p.radio_presets),
                    }
                    for p in self.profiles
                ],
                "consents": {c.value: allowed for c, allowed in sorted(self.consents.items())},
                "accounts": list(self.paired_accounts),
            },
            canonical=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> PersonalData:
        raw: Any = cbor2.loads(data)
        return cls(
            profiles=tuple(
                DriverProfile(
                    name=p["name"],
                    seat_position=p["seat"],
                    mirror_position=p["mirror"],
                    climate_c=p["climate_c"],
                    radio_presets=tuple(p["radio"]),
                )
                for p in raw["profiles"]
            ),
            # An old category name maps to its successor, an unknown one is ignored (both logged).
            consents={
                **_default_consents(),
                **{cat: bool(a) for c, a in raw["consents"].items() if (cat := Category.from_stored(c)) is not None},
            },
            paired_accounts=tuple(raw["accounts"]),
        )


class PersonalStore:
    """The personal data file in the data dir; every change is one atomic write."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._data = PersonalData()
        self._seen: tuple[int, int] | None = None

    @property
    def data(self) -> PersonalData:
        return self._data

    def current(self) -> PersonalData:
        """The data, re-read if another process (the `tcu privacy` command) changed the file."""
        try:
            info = self._path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._seen:
            self.load()
        return self._data

    def load(self) -> PersonalData:
        try:
            info = self._path.stat()
            self._seen = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            self._seen = None
        raw = read_optional(self._path)
        if raw is not None:
            try:
                self._data = PersonalData.decode(raw)
            except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError) as exc:
                # Unreadable personal data must not stop the car's telematics or eCall; start clean, say so.
                _LOGGER.error("personal data %s unreadable (%s); starting with defaults", self._path, exc)
                self._data = PersonalData()
        return self._data

    def save(self, data: PersonalData) -> None:
        write_atomic(self._path, data.encode())
        self._data = data
        info = self._path.stat()
        self._seen = (info.st_mtime_ns, info.st_size)

    def snapshot(self) -> bytes:
        return self._data.encode()

    def restore(self, snapshot: bytes) -> None:
        self.save(PersonalData.decode(snapshot))

    def owner_change(self) -> dict[str, Any]:
        """Wipe everything personal; returns what was wiped, for the report to the backend."""
        before = self._data
        try:
            self.save(PersonalData())
        except StorageError:
            _LOGGER.exception("owner change could not be written")
            raise
        return {
            "type": "owner_change",
            "wiped": {
                "driver_profiles": len(before.profiles),
                "paired_accounts": len(before.paired_accounts),
                "consents_reset": True,
            },
            "kept": ["technical vehicle data", "provisioned services", "legal eCall"],
        }
