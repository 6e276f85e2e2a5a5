"""Provisioning on the backend: each vehicle's desired services, issued as versioned, signed files.

The backend owns the *desired state* of every vehicle — the booked services with their terms, the
payment default, the SIM — and turns every change into a new, complete provisioning file
(tcu.services.provisioning): the next version for that VIN, signed with the backend's Ed25519 key,
valid for a configurable time (30 days by default). Complete files rather than deltas, so that a late
or repeated delivery converges. The desired state *is* the content of the newest file: there is no
second copy that could drift from what was signed.

Operations (each one issues the next version; a change that would change nothing is refused, so the
history shows only real changes):

- `book`: a service with a term from a start date (default today). A booking of the same service
  that has not ended must be extended or cancelled first; an ended one is replaced. Booking
  reactivates a deactivated SIM, since no booked service can run without it.
- `cancel`: for a 2+1 term, records the notice of cancellation dated `on` (default today); the terms
  (tcu.services.terms) decide whether that is in time to stop the renewal, and the service runs to the
  end of its term either way. Any other term is removed from the desired state at once: the service
  stops when the vehicle applies the file. `on` is refused for those, rather than silently ignored.
- `extend`: 12, 6 or 1 months, added to the end of the term.
- `suspend` / `resume`: payment default on / off; it suspends every booked service (reversibly).
- `deactivate_sim`: refused for a vehicle with legal eCall, as the vehicle itself would refuse the file.
- `reissue`: the same desired state under a new version and expiry (an expired, unapplied file).

Legal eCall is equipment, recorded per vehicle at enrolment (`backend-stub enroll --legal-ecall`):
every file for such a vehicle carries 6AF unlimited and an active SIM, and no file for another vehicle
carries 6AF. The vehicle's own rules (tcu.services.provisioning.check_change) run on every file before
it is signed, so the backend never issues a file the vehicle is bound to refuse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from nacl.signing import SigningKey

from backend_stub.errors import BackendError, UnknownVehicleError
from tcu.clock import Clock
from tcu.errors import RejectedMessageError
from tcu.services.catalogue import LEGAL_ECALL, Catalogue
from tcu.services.provisioning import MAX_FILE_BYTES, ProvisioningFile, check_change, sign_file
from tcu.services.terms import EXTENSION_MONTHS, Booking, ServiceStatus, Term

if TYPE_CHECKING:  # the store imports this module's types
    from backend_stub.provisioning_store import ProvisioningStore

_LOGGER = logging.getLogger(__name__)

DEFAULT_VALIDITY = timedelta(days=30)


class ProvisioningError(BackendError):
    """A change of desired state refused; the message says why and what to do instead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredState:
    """What a vehicle should have: the content of a provisioning file without its envelope."""

    bookings: tuple[Booking, ...] = ()
    payment_default: bool = False
    sim: str = "active"

    @classmethod
    def of(cls, file: ProvisioningFile) -> DesiredState:
        return cls(bookings=file.bookings, payment_default=file.payment_default, sim=file.sim)

    def booking(self, code: str) -> Booking | None:
        return next((b for b in self.bookings if b.code == code), None)

    def without(self, code: str) -> tuple[Booking, ...]:
        return tuple(b for b in self.bookings if b.code != code)


class FileState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    APPLIED = "applied"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


UNRESOLVED = frozenset({FileState.PENDING, FileState.DELIVERED})


class ResultStatus(StrEnum):
    """What the vehicle answered (inbound: anything unforeseen is UNKNOWN and only logged)."""

    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> ResultStatus:
        return cls.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedFile:
    vin: str
    version: int
    operation: str  # what a person asked for, e.g. "book 6AE 3y from 2026-11-23"
    issued: datetime
    expires: datetime
    contents: ProvisioningFile  # what the signed payload says
    signed: bytes  # the COSE_Sign1 message exactly as published
    state: FileState
    changed: datetime
    code: str | None = None
    reason: str | None = None
    publications: int = 0
    published: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleResult:
    """One `provisioning_result` event as the vehicle sent it, and the file it was booked against."""

    vin: str
    seq: int
    created: datetime
    received: datetime
    version: int | None
    status: ResultStatus
    epoch: bytes = b""  # the vehicle's queue epoch: (epoch, seq) names the event
    code: str | None = None
    reason: str | None = None
    attributed: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CapabilityReport:
    vin: str
    seq: int
    created: datetime
    received: datetime
    report: dict[str, Any]  # the event body, as the vehicle sent it
    ordinal: int = 0  # of its queue epoch: within one epoch the higher seq is newer, across epochs the later received


# A change of desired state: (current state, legal eCall equipped) -> new state; raises ProvisioningError.
Change = Callable[[DesiredState, bool], DesiredState]


def _booked(state: DesiredState, code: str) -> Booking:
    booking = state.booking(code)
    if booking is None:
        raise ProvisioningError(f"service {code} is not booked for this vehicle")
    return booking


def book(
    state: DesiredState, *, code: str, term: Term, start: date, now: datetime, catalogue: Catalogue
) -> DesiredState:
    if code not in catalogue.services:
        known = ", ".join(sorted(catalogue.services))
        raise ProvisioningError(f"unknown service code {code!r}; the catalogue has {known}")
    if code == LEGAL_ECALL:
        raise ProvisioningError(
            "legal eCall (6AF) is not booked: every file of a vehicle equipped with it carries it, unlimited "
            "(record the equipment with: backend-stub enroll VIN --legal-ecall)"
        )
    existing = state.booking(code)
    if existing is not None and existing.status(now) is not ServiceStatus.EXPIRED:
        raise ProvisioningError(
            f"service {code} is already booked ({existing.term} from {existing.start}, "
            f"{existing.status(now)}); extend it or cancel it instead"
        )
    booking = Booking(code=code, term=term, start=start)
    return replace(state, bookings=(*state.without(code), booking), sim="active")


def cancel(state: DesiredState, *, code: str, on: date | None, today: date, legal_ecall: bool) -> DesiredState:
    if code == LEGAL_ECALL and legal_ecall:
        raise ProvisioningError("legal eCall (6AF) cannot be cancelled: the vehicle keeps it, unlimited, for its life")
    booking = _booked(state, code)
    if booking.term is not Term.YEARS_2_PLUS_1:
        if on is not None:
            raise ProvisioningError(
                f"a cancellation date applies to 2+1 terms only (the notice against the renewal); service {code} "
                f"has term {booking.term} and is removed at once: cancel it without a date"
            )
        return replace(state, bookings=state.without(code))
    if booking.cancelled_on is not None:
        raise ProvisioningError(f"service {code} already has a notice of cancellation dated {booking.cancelled_on}")
    noticed = replace(booking, cancelled_on=on or today)
    return replace(state, bookings=(*state.without(code), noticed))


def extend(state: DesiredState, *, code: str, months: int) -> DesiredState:
    if months not in EXTENSION_MONTHS:
        raise ProvisioningError(f"extensions are sold in 12, 6 or 1 months, not {months}")
    booking = _booked(state, code)
    try:
        extended = replace(booking, extensions=(*booking.extensions, months))
    except ValueError as exc:
        raise ProvisioningError(str(exc)) from exc
    return replace(state, bookings=(*state.without(code), extended))


def suspend(state: DesiredState) -> DesiredState:
    if state.payment_default:
        raise ProvisioningError("the vehicle is already suspended for payment default")
    return replace(state, payment_default=True)


def resume(state: DesiredState) -> DesiredState:
    if not state.payment_default:
        raise ProvisioningError("the vehicle is not suspended for payment default: nothing to resume")
    return replace(state, payment_default=False)


def deactivate_sim(state: DesiredState, *, legal_ecall: bool) -> DesiredState:
    if legal_ecall:
        # The vehicle's own words (check_change), so the operator reads the same reason on both sides.
        raise ProvisioningError("the SIM of a vehicle with legal eCall cannot be deactivated")
    if state.sim == "deactivated":
        raise ProvisioningError("the SIM is already deactivated")
    return replace(state, sim="deactivated")


def normalise(state: DesiredState, *, legal_ecall: bool, today: date) -> DesiredState:
    """Apply the equipment rules and a stable order (by code), whatever the operation did."""
    others = state.without(LEGAL_ECALL)
    if not legal_ecall:
        return replace(state, bookings=tuple(sorted(others, key=lambda b: b.code)))
    legal = state.booking(LEGAL_ECALL)
    if legal is None or legal.term is not Term.UNLIMITED or legal.cancelled_on is not None:
        legal = Booking(code=LEGAL_ECALL, term=Term.UNLIMITED, start=legal.start if legal else today)
    return replace(state, bookings=tuple(sorted((legal, *others), key=lambda b: b.code)), sim="active")


class ProvisioningIssuer:
    """Applies operations to a vehicle's desired state and issues each result as the next signed version.

    Version allocation, the change and the new file happen in one immediate transaction, so the CLI
    and a running backend can issue concurrently without ever sharing a version; a refused change
    rolls back and consumes nothing.
    """

    def __init__(
        self,
        store: ProvisioningStore,
        *,
        signing_key: SigningKey,
        clock: Clock,
        enrolled: Callable[[str], bool],
        validity: timedelta = DEFAULT_VALIDITY,
    ) -> None:
        if validity <= timedelta(0):
            raise ValueError(f"provisioning file validity must be positive, not {validity}")
        self._store = store
        self._key = signing_key
        self._clock = clock
        self._enrolled = enrolled
        self.validity = validity

    def book(self, vin: str, code: str, term: Term | str, start: date | None = None) -> IssuedFile:
        try:
            term = Term(term)
        except ValueError as exc:
            raise ProvisioningError(f"unknown term {term!r}; terms are {', '.join(t.value for t in Term)}") from exc
        now = self._clock.now()
        first = start or now.date()
        catalogue = self._store.catalogue
        return self._issue(
            vin,
            f"book {code} {term} from {first}",
            lambda state, _legal: book(state, code=code, term=term, start=first, now=now, catalogue=catalogue),
        )

    def cancel(self, vin: str, code: str, on: date | None = None) -> IssuedFile:
        today = self._clock.now().date()
        return self._issue(
            vin,
            f"cancel {code}" + (f" on {on}" if on else ""),
            lambda state, legal: cancel(state, code=code, on=on, today=today, legal_ecall=legal),
        )

    def extend(self, vin: str, code: str, months: int) -> IssuedFile:
        return self._issue(vin, f"extend {code} by {months} months", lambda s, _l: extend(s, code=code, months=months))

    def suspend(self, vin: str) -> IssuedFile:
        return self._issue(vin, "suspend (payment default)", lambda state, _legal: suspend(state))

    def resume(self, vin: str) -> IssuedFile:
        return self._issue(vin, "resume (payment default over)", lambda state, _legal: resume(state))

    def deactivate_sim(self, vin: str) -> IssuedFile:
        return self._issue(vin, "deactivate SIM", lambda state, legal: deactivate_sim(state, legal_ecall=legal))

    def reissue(self, vin: str, why: str) -> IssuedFile:
        """The same desired state under a new version and expiry; refused for a vehicle with no file."""
        if self._store.head(vin) is None:
            raise ProvisioningError(f"vehicle {vin} has no provisioning file to reissue")
        return self._issue(vin, f"reissue: {why}", lambda state, _legal: state, allow_same=True)

    def _issue(self, vin: str, operation: str, change: Change, *, allow_same: bool = False) -> IssuedFile:
        if not self._enrolled(vin):
            raise UnknownVehicleError(f"vehicle {vin} is not enrolled (backend-stub enroll)")
        now = self._clock.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the file carries milliseconds
        with self._store.transaction():
            legal = self._store.legal_ecall(vin)
            head = self._store.head(vin)
            current = DesiredState() if head is None else DesiredState.of(head.contents)
            try:
                desired = normalise(change(current, legal), legal_ecall=legal, today=now.date())
            except ProvisioningError as exc:
                raise ProvisioningError(f"{operation} refused for {vin}: {exc}") from exc
            if head is not None and desired == current and not allow_same:
                raise ProvisioningError(f"{operation} refused for {vin}: it changes nothing")
            file = ProvisioningFile(
                vin=vin,
                version=self._store.next_version(vin),
                issued=now,
                expires=now + self.validity,
                bookings=desired.bookings,
                payment_default=desired.payment_default,
                sim=desired.sim,
            )
            try:
                check_change(file, legal_ecall_equipped=legal)
            except RejectedMessageError as exc:  # a bug in the rules above: never sign what the car refuses
                raise ProvisioningError(f"{operation} refused for {vin}: {exc}") from exc
            signed = sign_file(file, self._key)
            if len(signed) > MAX_FILE_BYTES:
                raise ProvisioningError(f"{operation} refused: a file of {len(signed)} bytes > {MAX_FILE_BYTES}")
            issued = self._store.add_file(file, signed, operation=operation, now=now)
        _LOGGER.info("issued provisioning file version %d for %s: %s", file.version, vin, operation)
        return issued
