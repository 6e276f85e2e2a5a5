"""Personal data held in the vehicle: up to three driver profiles, privacy consents, paired accounts.

Stored as one canonical CBOR file written atomically, so that a snapshot is a byte string that tests
compare byte for byte. A remote measure never writes this file nor puts an old snapshot of it back:
the driver may change it while a measure runs, and its rollback must not lose that (AGB 3.4 d;
tcu.services.measures). The privacy menu allows or blocks upload per data category; it never
touches the eCall. An owner change (AGB 7.2) wipes everything personal — driver profiles, consents,
the paired account, a security code on display — and keeps technical vehicle data (queue,
provisioning, legal-eCall state).

A driver profile needs a paired ConnectedDrive account (privacy part B: "nur mit einem gültigen
ConnectedDrive Account"); the account is paired through the backend's portal with a security code
sent into the car (AGB 1.6 a, tcu.services.account_link).

Two technical counters survive an owner change: `owner` counts owner changes (the sale check reads
it: the wipe happened); `messages_seen` is the highest account message number applied, so that a
replayed "linked" message cannot re-pair the previous owner's account.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cbor2

from tcu.errors import ProfileRefusedError, StorageError
from tcu.persist import AtomicFile, read_optional
from telematics_wire.catalogue import Category

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
class SecurityCode:
    """A pairing code the car shows the customer, to be entered in the portal (AGB 1.6 a)."""

    code: str
    account: str
    expires_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonalData:
    profiles: tuple[DriverProfile, ...] = ()
    consents: Mapping[Category, bool] = field(default_factory=_default_consents)
    paired_accounts: tuple[str, ...] = ()
    security_code: SecurityCode | None = None
    owner: int = 0  # technical: owner changes so far
    messages_seen: int = 0  # technical: highest account message number applied

    def __post_init__(self) -> None:
        if len(self.profiles) > MAX_PROFILES:
            raise ValueError(f"at most {MAX_PROFILES} driver profiles, got {len(self.profiles)}")

    def allows(self, category: Category) -> bool:
        return self.consents.get(category, True)

    def with_consent(self, category: Category, allowed: bool) -> PersonalData:
        return replace(self, consents={**self.consents, category: allowed})

    def with_profile(self, profile: DriverProfile) -> PersonalData:
        """A new driver profile; refused without a paired account, beyond three, or under a name in use."""
        if not self.paired_accounts:
            raise ProfileRefusedError(
                f"driver profile {profile.name!r} refused: a driver profile needs a paired ConnectedDrive account; "
                "pair one in the portal with the security code the car shows (backend-stub account request-code)"
            )
        if len(self.profiles) >= MAX_PROFILES:
            raise ProfileRefusedError(
                f"driver profile {profile.name!r} refused: the vehicle holds at most {MAX_PROFILES} driver profiles"
            )
        if any(p.name == profile.name for p in self.profiles):
            raise ProfileRefusedError(f"driver profile {profile.name!r} refused: a profile of that name exists")
        return replace(self, profiles=(*self.profiles, profile))

    def for_new_owner(self) -> PersonalData:
        """Nothing personal left; only the technical counters carry over."""
        return PersonalData(owner=self.owner + 1, messages_seen=self.messages_seen)

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
                "code": None
                if self.security_code is None
                else {
                    "code": self.security_code.code,
                    "account": self.security_code.account,
                    "expires": self.security_code.expires_ms,
                },
                "owner": self.owner,
                "seen": self.messages_seen,
            },
            canonical=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> PersonalData:
        raw: Any = cbor2.loads(data)
        if not isinstance(raw, dict):
            raise TypeError(f"personal data is a {type(raw).__name__}, not a map")
        code = raw.get("code")  # files written before security codes and counters lack these keys
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
            security_code=None
            if code is None
            else SecurityCode(code=str(code["code"]), account=str(code["account"]), expires_ms=int(code["expires"])),
            owner=_count(raw.get("owner", 0)),
            messages_seen=_count(raw.get("seen", 0)),
        )


def _count(value: object) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValueError(f"a counter must be an integer in 0..2^63-1, got {type(value).__name__}")
    return value


RECHECK_S = 0.001


class PersonalStore:
    """The personal data file in the data dir; every change is one atomic write, off the event loop."""

    def __init__(self, path: Path, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._file = AtomicFile(path)
        self._data = PersonalData()
        self._seen: tuple[int, int] | None = None
        self._monotonic = monotonic
        self._looked_at: float | None = None  # when `current` last looked at the file

    @property
    def data(self) -> PersonalData:
        return self._data

    def current(self) -> PersonalData:
        """The data, re-read if another process (the `tcu privacy` command) changed the file.

        Calls within `RECHECK_S` of the last look share it: a snapshot asks once per data category
        (four `stat`s in a row, 1.5 % of a fleet vehicle's CPU), while a person's change from another
        process still counts from the next millisecond on."""
        now = self._monotonic()
        if self._looked_at is not None and now - self._looked_at < RECHECK_S:
            return self._data
        self._looked_at = now
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

    async def save(self, data: PersonalData) -> None:
        """Returns once `data` is durable, and only then is it the data in force (StorageError: unchanged)."""
        await self._file.write(data.encode())
        self._data = data
        info = self._path.stat()
        self._seen = (info.st_mtime_ns, info.st_size)

    def snapshot(self) -> bytes:
        return self._data.encode()

    async def owner_change(self) -> dict[str, Any]:
        """Wipe everything personal; returns what was wiped, for the report to the backend."""
        before = self.current()
        try:
            await self.save(before.for_new_owner())
        except StorageError:
            _LOGGER.exception("owner change could not be written")
            raise
        return {
            "type": "owner_change",
            "wiped": {
                "driver_profiles": len(before.profiles),
                "paired_accounts": len(before.paired_accounts),
                "consents_reset": True,
                "security_code": before.security_code is not None,
            },
            "kept": ["technical vehicle data", "provisioned services", "legal eCall"],
        }
