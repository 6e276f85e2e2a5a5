"""A vehicle's desired services and the pure operations that change them (no I/O, no clock, no key).

backend_stub.provisioning.ProvisioningIssuer applies one of these to the newest file's state, runs
`normalise`, and signs the result as the next version. Each operation raises ProvisioningError, with
what to do instead, for a change the terms do not allow:

- `book`: a service with a term from a start date, checked against the catalogue of the terms
  (telematics_wire.catalogue) and the vehicle's record: a code offered for its brand, one it is built
  with (its equipment), a term the catalogue offers for that code and brand, and a first registration
  for the 5y and 2+1 terms, which run from it. A term that would already have ended is refused. A
  booking of the same service that has not ended must be extended or cancelled first; an ended one is
  replaced. Booking reactivates a deactivated SIM.
- `cancel`: records a notice dated `on` in the file, and the terms (telematics_wire.terms) decide its
  effect: an unlimited service stops six weeks after the notice (AGB 6.2); a 2+1 term noticed by its
  deadline does not renew, a later notice is refused as too late; any other fixed term runs out and
  cannot be cancelled — except on sale of the vehicle (`sale`, AGB 7.4): six weeks. Legal eCall never.
- `cancel_contract`: every unlimited service stops six weeks after the notice, every 2+1 term still
  in time does not renew; the rest runs out (AGB 3.2, 6.2).
- `extend`: 12, 6 or 1 months bought on a date: before the end they extend it, after it they start
  at the purchase.
- `suspend` / `resume`: payment default (AGB 5.5 c) per booked option code. The file names the
  suspended codes; the vehicle stops their fixed-term (paid) services — the intelligent call too
  where it comes with a suspended paid package such as 612 — and keeps their unlimited ones
  (telematics_wire.entitlements). Only an *invoiceable* code can be suspended: one booked, not ended,
  with at least one fixed-term service (an invoice is always for such a code, AGB 3.2). `suspend`
  without codes suspends every invoiceable booked code.
- `end_unpaid`: the bookings of the given codes end at once (the seller's unpaid, suspended
  bookings at an owner change, AGB 5.5 c "einstellen", 7.1).
- `deactivate_sim`: the dealer's deactivation (AGB 6.1): the SIM off; on a vehicle with legal eCall
  only 6AE and 6AC end and the SIM stays for the 112 eCall (eCall-only).
- `normalise`: the equipment rules, the recorded first registration, suspensions only of booked
  codes, and a stable order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime

from backend_stub.errors import ProvisioningError
from telematics_wire.catalogue import INTELLIGENT_ECALL, LEGAL_ECALL, TELESERVICES, Brand, Catalogue
from telematics_wire.entitlements import is_paid
from telematics_wire.provisioning import ProvisioningFile
from telematics_wire.terms import EXTENSION_MONTHS, Booking, Extension, ServiceStatus, Term, midnight, parse_term


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredState:
    """What a vehicle should have: the content of a provisioning file without its envelope."""

    bookings: tuple[Booking, ...] = ()
    suspended: frozenset[str] = frozenset()  # booked codes in payment default (AGB 5.5 c)
    sim: str = "active"
    first_registration: date | None = None

    @classmethod
    def of(cls, file: ProvisioningFile) -> DesiredState:
        return cls(
            bookings=file.bookings,
            suspended=file.suspended,
            sim=file.sim,
            first_registration=file.first_registration,
        )

    def booking(self, code: str) -> Booking | None:
        return next((b for b in self.bookings if b.code == code), None)

    def without(self, code: str) -> tuple[Booking, ...]:
        return tuple(b for b in self.bookings if b.code != code)


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleRecord:
    """What the backend knows of a vehicle's build, from enrolment."""

    legal_ecall: bool = False
    brand: Brand = Brand.BMW
    equipment: frozenset[str] | None = None  # None: not recorded (every option code of the brand)
    first_registration: date | None = None


# A change of desired state: (current state, the vehicle) -> new state; raises ProvisioningError.
Change = Callable[[DesiredState, VehicleRecord], DesiredState]


def _names(codes: Iterable[str]) -> str:
    return ", ".join(sorted(codes)) or "none"


def _booked(state: DesiredState, code: str) -> Booking:
    booking = state.booking(code)
    if booking is None:
        raise ProvisioningError(f"service {code} is not booked for this vehicle")
    return booking


def invoiceable(booking: Booking) -> bool:
    """A booked code with a fixed-term service is paid, so it can be invoiced and suspended (AGB 3.2);
    unlimited services come with the car or the contract (AGB 1.3). Legal eCall never."""
    return booking.code != LEGAL_ECALL and is_paid(booking)


def why_not_invoiceable(state: DesiredState, code: str, now: datetime) -> str | None:
    """None when `code` is booked, has not ended and is paid; else why it cannot be invoiced or suspended."""
    if code == LEGAL_ECALL:
        return "legal eCall (6AF) is part of the vehicle's type approval: it is never invoiced or suspended"
    booking = state.booking(code)
    if booking is None:
        return f"service {code[:40]!r} is not booked for this vehicle"
    if not invoiceable(booking):
        return (
            f"service {code} has no fixed-term service: it comes with the car or the contract and is free "
            "(AGB 1.3, 3.2), so it is never invoiced or suspended"
        )
    if booking.status(now) is ServiceStatus.EXPIRED:
        return f"service {code} ended on {booking.end()}"
    return None


def suspendable(state: DesiredState, now: datetime) -> frozenset[str]:
    """The booked codes payment default can suspend at `now`: invoiceable and not ended."""
    return frozenset(b.code for b in state.bookings if why_not_invoiceable(state, b.code, now) is None)


def choose_term(catalogue: Catalogue, code: str, term: Term | str | None, brand: Brand) -> Term:
    """The term asked for, or the only one the catalogue offers for `code` and `brand` when none is."""
    if term is not None:
        try:
            return parse_term(str(term))
        except ValueError as exc:
            raise ProvisioningError(str(exc)) from exc
    entry = catalogue.services.get(code)
    if entry is None:
        raise ProvisioningError(
            f"unknown service code {code!r}; the catalogue has {', '.join(sorted(catalogue.services))}"
        )
    offered = entry.terms_for(brand)
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
    # A new booking replaces an ended one: whatever suspended the ended one does not carry over.
    return replace(state, bookings=(*state.without(code), booking), suspended=state.suspended - {code}, sim="active")


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


def suspend(state: DesiredState, *, codes: Iterable[str] | None, now: datetime) -> DesiredState:
    """Suspend `codes` for payment default; None: every invoiceable booked code (never a free one)."""
    if codes is None:
        wanted = suspendable(state, now)
        if not wanted:
            raise ProvisioningError(
                "no booked service with a fixed term (a paid one) to suspend: unlimited services are free and "
                "never suspended (AGB 1.3, 5.5 c)"
            )
    else:
        wanted = frozenset(codes)
        if not wanted:
            raise ProvisioningError("name at least one option code to suspend")
        for code in sorted(wanted):
            refusal = why_not_invoiceable(state, code, now)
            if refusal is not None:
                raise ProvisioningError(f"{code[:40]} cannot be suspended: {refusal}")
    if wanted <= state.suspended:
        raise ProvisioningError(f"already suspended for payment default: {_names(wanted)}")
    return replace(state, suspended=state.suspended | wanted)


def resume(state: DesiredState, *, codes: Iterable[str] | None) -> DesiredState:
    """Lift the suspension of `codes`; None: of every suspended code."""
    if not state.suspended:
        raise ProvisioningError("the vehicle is not suspended for payment default: nothing to resume")
    wanted = state.suspended if codes is None else frozenset(codes)
    if not wanted:
        raise ProvisioningError("name at least one option code to resume")
    if not wanted <= state.suspended:
        raise ProvisioningError(
            f"not suspended: {_names(wanted - state.suspended)} (suspended: {_names(state.suspended)}); "
            "nothing to resume"
        )
    return replace(state, suspended=state.suspended - wanted)


def end_unpaid(state: DesiredState, *, codes: Iterable[str]) -> DesiredState:
    """The bookings of `codes` end at once, and with them their suspension."""
    wanted = frozenset(codes)
    missing = [code for code in sorted(wanted) if state.booking(code) is None or code == LEGAL_ECALL]
    if missing or not wanted:
        raise ProvisioningError(f"nothing to end: {_names(missing)} not booked (or legal eCall)")
    return replace(
        state, bookings=tuple(b for b in state.bookings if b.code not in wanted), suspended=state.suspended - wanted
    )


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
    """Apply the equipment rules, the recorded first registration, suspensions only of booked codes
    (never legal eCall) and a stable order (by code), whatever the operation did."""
    try:
        others = tuple(
            replace(b, first_registration=first_registration) if b.term.from_first_registration else b
            for b in state.without(LEGAL_ECALL)
        )
    except ValueError as exc:  # a first registration no longer recorded, or one a notice no longer fits
        raise ProvisioningError(f"the recorded first registration does not fit the booked services: {exc}") from exc
    booked = frozenset(b.code for b in others)  # a code no longer booked has nothing left to suspend
    state = replace(state, first_registration=first_registration, suspended=state.suspended & booked)
    if not legal_ecall:
        return replace(state, bookings=tuple(sorted(others, key=lambda b: b.code)))
    legal = state.booking(LEGAL_ECALL)
    if legal is None or legal.term is not Term.UNLIMITED or legal.cancelled_on is not None:
        legal = Booking(code=LEGAL_ECALL, term=Term.UNLIMITED, start=legal.start if legal else today)
    return replace(state, bookings=tuple(sorted((legal, *others), key=lambda b: b.code)), sim="active")
