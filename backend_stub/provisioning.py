"""Provisioning on the backend: each vehicle's desired services, issued as versioned, signed files.

The backend owns the *desired state* of every vehicle — the booked services with their terms, the
payment default, the SIM — and turns every change into a new, complete provisioning file
(tcu.services.provisioning): the next version for that VIN, signed with the backend's Ed25519 key,
valid for a configurable time (30 days by default). Complete files rather than deltas, so that a late
or repeated delivery converges. The desired state *is* the content of the newest file: there is no
second copy that could drift from what was signed.

Operations (each one issues the next version; a change that would change nothing is refused, so the
history shows only real changes):

- `book`: a service with a term from a start date (default today), checked against the catalogue of
  the terms (tcu.services.catalogue) and the vehicle's record: a code offered for its brand, one it is
  built with (its equipment), a term the catalogue offers for that code and brand (the only one when
  none is given), and a first registration for the 5y and 2+1 terms, which run from it. A term that
  would already have ended is refused. A booking of the same service that has not ended must be
  extended or cancelled first; an ended one is replaced. Booking reactivates a deactivated SIM.
- `cancel`: records a notice of cancellation dated `on` (default today) in the file, and the terms
  (tcu.services.terms) decide its effect: an unlimited service stops six weeks after the notice
  (AGB 6.2); a 2+1 term noticed by its deadline does not renew, a later notice is refused as too late;
  any other fixed term runs out and cannot be cancelled — except on sale of the vehicle (`sale`,
  AGB 7.4), where a fixed term stops six weeks after the notice. Legal eCall (6AF) never.
- `cancel_contract`: the ConnectedDrive contract (AGB 3.2, 6.2): every unlimited service stops six
  weeks after the notice, every 2+1 term still in time does not renew; the rest runs out.
- `extend`: 12, 6 or 1 months bought on a date (default today): before the end they extend the end,
  after it they start at the purchase.
- `suspend` / `resume`: payment default on / off (AGB 5.5 c); the vehicle suspends its paid (fixed-term)
  services and 6AC, reversibly (tcu.services.entitlements). backend_stub/invoices.py starts and ends it.
- `deactivate_sim`: the dealer's deactivation (AGB 6.1): the SIM off; on a vehicle with legal eCall only
  6AE and 6AC end and the SIM stays for the 112 eCall (eCall-only).
- `reissue`: the same desired state under a new version and expiry (an expired, unapplied file).

Legal eCall, the brand, the option codes the vehicle is built with and its first registration are
recorded per vehicle at enrolment (`backend-stub enroll --legal-ecall --brand --equipment
--first-registration`); every file carries the first registration.
Legal eCall is equipment:
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
from tcu.services.catalogue import INTELLIGENT_ECALL, LEGAL_ECALL, TELESERVICES, Brand, Catalogue
from tcu.services.provisioning import MAX_FILE_BYTES, ProvisioningFile, check_change, sign_file
from tcu.services.terms import EXTENSION_MONTHS, Booking, Extension, ServiceStatus, Term, midnight, parse_term

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
    first_registration: date | None = None

    @classmethod
    def of(cls, file: ProvisioningFile) -> DesiredState:
        return cls(
            bookings=file.bookings,
            payment_default=file.payment_default,
            sim=file.sim,
            first_registration=file.first_registration,
        )

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
    operation: str  # what a person asked for, e.g. "book 6AE unlimited from 2026-11-23"
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


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleRecord:
    """What the backend knows of a vehicle's build, from enrolment."""

    legal_ecall: bool = False
    brand: Brand = Brand.BMW
    equipment: frozenset[str] | None = None  # None: not recorded (every option code of the brand)
    first_registration: date | None = None


# A change of desired state: (current state, the vehicle) -> new state; raises ProvisioningError.
Change = Callable[[DesiredState, VehicleRecord], DesiredState]


def _booked(state: DesiredState, code: str) -> Booking:
    booking = state.booking(code)
    if booking is None:
        raise ProvisioningError(f"service {code} is not booked for this vehicle")
    return booking


def choose_term(catalogue: Catalogue, code: str, term: Term | str | None, brand: Brand) -> Term:
    """The term asked for, or the only one the catalogue offers for `code` and `brand` when none is."""
    if term is not None:
        try:
            return parse_term(str(term))
        except ValueError as exc:
            raise ProvisioningError(str(exc)) from exc
    entry = catalogue.services.get(code)
    offered = entry.terms_for(brand) if entry is not None else ()
    if len(offered) != 1:
        names = ", ".join(f"{t} ({t.label})" for t in offered) or "none"
        raise ProvisioningError(f"service {code}: give a term; the catalogue offers for {brand}: {names}")
    return offered[0]


def book(
    state: DesiredState,
    *,
    code: str,
    term: Term,
    start: date,
    now: datetime,
    catalogue: Catalogue,
    vehicle: VehicleRecord | None = None,
) -> DesiredState:
    vehicle = vehicle or VehicleRecord()
    if code == LEGAL_ECALL:
        raise ProvisioningError(
            "legal eCall (6AF) is not booked: every file of a vehicle equipped with it carries it, unlimited "
            "(record the equipment with: backend-stub enroll VIN --legal-ecall)"
        )
    refusal = catalogue.booking_refusal(code, term, brand=vehicle.brand, equipment=vehicle.equipment)
    if refusal is not None:
        hint = (
            " (record the equipment with: backend-stub enroll VIN --equipment ...)" if "built with" in refusal else ""
        )
        raise ProvisioningError(refusal + hint)
    if term.from_first_registration and vehicle.first_registration is None:
        raise ProvisioningError(
            f"the term {term} ({term.label}) runs from the vehicle's first registration, which is not recorded "
            "(backend-stub enroll VIN --first-registration YYYY-MM-DD)"
        )
    existing = state.booking(code)
    if existing is not None and existing.status(now) is not ServiceStatus.EXPIRED:
        raise ProvisioningError(
            f"service {code} is already booked ({existing.term} from {existing.start}, "
            f"{existing.status(now)}); extend it or cancel it instead"
        )
    try:
        booking = Booking(code=code, term=term, start=start, first_registration=vehicle.first_registration)
        end = booking.end()
    except (ValueError, OverflowError) as exc:
        raise ProvisioningError(str(exc)) from exc
    if end is not None and midnight(end) <= now:
        raise ProvisioningError(
            f"service {code} with the term {term} ({term.label}) from {start} would have ended on {end} already"
            + (
                f" (it runs from the first registration on {vehicle.first_registration})"
                if term.from_first_registration
                else ""
            )
        )
    return replace(state, bookings=(*state.without(code), booking), sim="active")


def _noticed(booking: Booking, notice: date, *, sale: bool) -> Booking:
    if booking.cancelled_on is not None:
        raise ProvisioningError(
            f"service {booking.code} already has a notice of cancellation dated {booking.cancelled_on} "
            f"(it ends on {booking.end()})"
        )
    if notice < booking.start:
        raise ProvisioningError(f"a notice on {notice} comes before service {booking.code} starts on {booking.start}")
    if booking.status(midnight(notice)) is ServiceStatus.EXPIRED:
        raise ProvisioningError(f"service {booking.code} ended on {booking.end()}, before the notice on {notice}")
    try:
        return replace(booking, cancelled_on=notice, sale=sale)
    except ValueError as exc:
        hint = "" if sale else "; if the vehicle is sold, cancel with --sale (AGB 7.4)"
        raise ProvisioningError(f"{exc}{hint}") from exc


def cancel(
    state: DesiredState, *, code: str, on: date | None, today: date, legal_ecall: bool, sale: bool = False
) -> DesiredState:
    if code == LEGAL_ECALL:
        raise ProvisioningError("legal eCall (6AF) cannot be cancelled: the vehicle keeps it, unlimited, for its life")
    noticed = _noticed(_booked(state, code), on or today, sale=sale)
    return replace(state, bookings=(*state.without(code), noticed))


def cancel_contract(state: DesiredState, *, on: date | None, today: date) -> DesiredState:
    """Notice of the ConnectedDrive contract: unlimited services stop six weeks after it (AGB 6.2),
    2+1 terms still in time do not renew; fixed terms run out (they cannot be cancelled, AGB 6.2)."""
    notice = on or today
    bookings = []
    changed = False
    for booking in state.bookings:
        deadline = booking.renewal_deadline()
        cancellable = (
            booking.code != LEGAL_ECALL
            and booking.cancelled_on is None
            and booking.status(midnight(notice)) is not ServiceStatus.EXPIRED
            and notice >= booking.start
            and (booking.term is Term.UNLIMITED or (deadline is not None and notice <= deadline))
        )
        bookings.append(replace(booking, cancelled_on=notice) if cancellable else booking)
        changed = changed or cancellable
    if not changed:
        raise ProvisioningError(
            f"no unlimited service and no 2+1 term still in time to cancel on {notice}: the fixed terms run out"
        )
    return replace(state, bookings=tuple(bookings))


def extend(state: DesiredState, *, code: str, months: int, bought: date) -> DesiredState:
    if months not in EXTENSION_MONTHS:
        raise ProvisioningError(f"extensions are sold in 12, 6 or 1 months, not {months}")
    booking = _booked(state, code)
    if booking.cancelled_on is not None:
        raise ProvisioningError(
            f"service {code} has a notice of cancellation dated {booking.cancelled_on}: it cannot be extended"
        )
    try:
        extended = replace(booking, extensions=(*booking.extensions, Extension(months=months, bought=bought)))
        extended.end()
    except (ValueError, OverflowError) as exc:
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
    """The dealer deactivates the base services and with them the SIM ("Wie kann ich die Dienste
    deaktivieren", AGB 6.1). On a vehicle with legal eCall only Teleservices and the intelligent
    emergency call end: "Die SIM-Karte des Fahrzeugs sowie der gesetzliche Notruf bleiben … aktiv", so
    the vehicle goes eCall-only."""
    if legal_ecall:
        base = {TELESERVICES, INTELLIGENT_ECALL}
        if not any(b.code in base for b in state.bookings):
            raise ProvisioningError(
                "Teleservices (6AE) and the intelligent emergency call (6AC) are not booked: the SIM of this "
                "vehicle with legal eCall is eCall-only already, and it cannot be deactivated further"
            )
        return replace(state, bookings=tuple(b for b in state.bookings if b.code not in base))
    if state.sim == "deactivated":
        raise ProvisioningError("the SIM is already deactivated")
    return replace(state, sim="deactivated")


def normalise(
    state: DesiredState, *, legal_ecall: bool, today: date, first_registration: date | None = None
) -> DesiredState:
    """Apply the equipment rules, the recorded first registration and a stable order (by code),
    whatever the operation did."""
    try:
        others = tuple(
            replace(b, first_registration=first_registration) if b.term.from_first_registration else b
            for b in state.without(LEGAL_ECALL)
        )
    except ValueError as exc:  # a first registration no longer recorded, or one a notice no longer fits
        raise ProvisioningError(f"the recorded first registration does not fit the booked services: {exc}") from exc
    state = replace(state, first_registration=first_registration)
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

    def book(self, vin: str, code: str, term: Term | str | None = None, start: date | None = None) -> IssuedFile:
        now = self._clock.now()
        first = start or now.date()
        catalogue = self._store.catalogue
        chosen = choose_term(catalogue, code, term, self._store.vehicle(vin).brand)
        return self._issue(
            vin,
            f"book {code} {chosen} from {first}",
            lambda state, vehicle: book(
                state, code=code, term=chosen, start=first, now=now, catalogue=catalogue, vehicle=vehicle
            ),
        )

    def cancel(self, vin: str, code: str, on: date | None = None, *, sale: bool = False) -> IssuedFile:
        notice = on or self._clock.now().date()
        return self._issue(
            vin,
            f"cancel {code} on {notice}" + (" (sale of the vehicle)" if sale else ""),
            lambda state, vehicle: cancel(
                state, code=code, on=notice, today=notice, legal_ecall=vehicle.legal_ecall, sale=sale
            ),
        )

    def cancel_contract(self, vin: str, on: date | None = None) -> IssuedFile:
        notice = on or self._clock.now().date()
        return self._issue(
            vin,
            f"cancel the ConnectedDrive contract on {notice}",
            lambda s, _v: cancel_contract(s, on=notice, today=notice),
        )

    def extend(self, vin: str, code: str, months: int, bought: date | None = None) -> IssuedFile:
        day = bought or self._clock.now().date()
        return self._issue(
            vin,
            f"extend {code} by {months} months bought on {day}",
            lambda s, _v: extend(s, code=code, months=months, bought=day),
        )

    def suspend(self, vin: str) -> IssuedFile:
        return self._issue(vin, "suspend (payment default)", lambda state, _vehicle: suspend(state))

    def resume(self, vin: str) -> IssuedFile:
        return self._issue(vin, "resume (payment default over)", lambda state, _vehicle: resume(state))

    def deactivate_sim(self, vin: str) -> IssuedFile:
        return self._issue(
            vin, "deactivate SIM", lambda state, vehicle: deactivate_sim(state, legal_ecall=vehicle.legal_ecall)
        )

    def reissue(self, vin: str, why: str) -> IssuedFile:
        """The same desired state under a new version and expiry; refused for a vehicle with no file."""
        if self._store.head(vin) is None:
            raise ProvisioningError(f"vehicle {vin} has no provisioning file to reissue")
        return self._issue(vin, f"reissue: {why}", lambda state, _vehicle: state, allow_same=True)

    def _issue(self, vin: str, operation: str, change: Change, *, allow_same: bool = False) -> IssuedFile:
        if not self._enrolled(vin):
            raise UnknownVehicleError(f"vehicle {vin} is not enrolled (backend-stub enroll)")
        now = self._clock.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the file carries milliseconds
        with self._store.transaction():
            vehicle = self._store.vehicle(vin)
            legal = vehicle.legal_ecall
            head = self._store.head(vin)
            current = DesiredState() if head is None else DesiredState.of(head.contents)
            try:
                desired = normalise(
                    change(current, vehicle),
                    legal_ecall=legal,
                    today=now.date(),
                    first_registration=vehicle.first_registration,
                )
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
                first_registration=desired.first_registration,
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
