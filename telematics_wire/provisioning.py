"""Provisioning files: the backend's signed statement of every service one vehicle has.

A file is a COSE_Sign1 message (telematics_wire.cose) whose payload is a CBOR map:

    {"type": "provisioning", "vin": str, "version": uint, "issued": ms, "expires": ms,
     "first_registration": "2026-11-23",          # optional; required by any 5y or 2+1y term
     "services": [{"code": "6AK", "term": "2+1y", "start": "2026-11-23",
                   "extensions": [{"months": 12, "bought": "2029-01-05"}],   # optional
                   "cancelled_on": "2027-01-05", "sale": false}],              # optional
     "suspended": ["6AM"],                        # booked codes suspended for payment default, sorted
     "sim": "active" | "deactivated"}

It carries the complete desired state, never a delta, so a late or repeated delivery converges
(Uptane's lesson). The vehicle accepts a file only if it is signed by the pinned backend key, names
this VIN, has a higher version than the one applied (an identical re-delivery of the applied file is
acknowledged again, not re-applied), has not expired, and makes no forbidden change: a legal-eCall
vehicle keeps 6AF, unlimited, unsuspended, and its SIM. Every booking is checked against the catalogue of the terms
(telematics_wire.catalogue): a known code, offered for the vehicle's brand, with a term the catalogue
offers for it; a vehicle that knows its equipment refuses a code it is not built with, and one that
knows its first registration refuses a file that names another.

`suspended` names the booked codes whose payment is in default (AGB 5.5 c): the backend knows which
invoice is unpaid, so it names the codes; the vehicle derives which of their services stop
(telematics_wire.entitlements: the fixed-term, paid ones). Legal eCall is never suspended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import cbor2
from nacl.signing import SigningKey, VerifyKey

from telematics_wire import payload_fields as fields
from telematics_wire.catalogue import LEGAL_ECALL, Catalogue, VehicleFit
from telematics_wire.cose import decode, sign1, verify1
from telematics_wire.errors import RejectedMessageError
from telematics_wire.payload_fields import shown
from telematics_wire.records import to_millis
from telematics_wire.terms import Booking, Extension, Term, parse_term

MAX_FILE_BYTES = 16 * 1024
SIM_STATES = ("active", "deactivated")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningFile:
    vin: str
    version: int
    issued: datetime
    expires: datetime
    bookings: tuple[Booking, ...] = ()
    suspended: frozenset[str] = frozenset()  # booked codes in payment default (AGB 5.5 c)
    sim: str = "active"
    first_registration: date | None = None  # "Erstzulassung": 5y and 2+1y terms run from it
    codes: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", frozenset(b.code for b in self.bookings))
        object.__setattr__(self, "suspended", frozenset(self.suspended))
        if not self.suspended <= self.codes:
            raise ValueError(f"suspended code(s) {', '.join(sorted(self.suspended - self.codes))} not booked")
        for booking in self.bookings:
            if booking.term.from_first_registration and booking.first_registration != self.first_registration:
                raise ValueError(
                    f"service {booking.code} runs from first registration {booking.first_registration}, but the "
                    f"file says {self.first_registration}"
                )

    @property
    def payment_default(self) -> bool:
        """Whether any booking is suspended for payment default (status displays, the backend)."""
        return bool(self.suspended)

    def booking(self, code: str) -> Booking | None:
        return next((b for b in self.bookings if b.code == code), None)


def encode_payload(file: ProvisioningFile) -> bytes:
    services = []
    for booking in file.bookings:
        item: dict[str, Any] = {"code": booking.code, "term": booking.term.value, "start": booking.start.isoformat()}
        if booking.extensions:
            item["extensions"] = [{"months": e.months, "bought": e.bought.isoformat()} for e in booking.extensions]
        if booking.cancelled_on is not None:
            item["cancelled_on"] = booking.cancelled_on.isoformat()
            item["sale"] = booking.sale
        services.append(item)
    payload: dict[str, Any] = {
        "type": "provisioning",
        "vin": file.vin,
        "version": file.version,
        "issued": to_millis(file.issued),
        "expires": to_millis(file.expires),
        "services": services,
        "suspended": sorted(file.suspended),
        "sim": file.sim,
    }
    if file.first_registration is not None:
        payload["first_registration"] = file.first_registration.isoformat()
    return cbor2.dumps(payload)


def sign_file(file: ProvisioningFile, key: SigningKey) -> bytes:
    return sign1(encode_payload(file), key, kid=b"backend")


def _malformed(detail: str) -> RejectedMessageError:
    return RejectedMessageError(f"malformed provisioning file: {detail}", code="malformed")


def _other_vehicle(named: str, vin: str) -> RejectedMessageError:
    return RejectedMessageError(
        f"provisioning file is for vehicle {shown(named)}, not this vehicle {vin}", code="other_vehicle"
    )


def _date(value: Any, what: str) -> date:
    if not isinstance(value, str):
        raise _malformed(f"{what} must be a YYYY-MM-DD text string, got {shown(value)}")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise _malformed(f"{what} {shown(value)} is not a YYYY-MM-DD date") from exc


def _extension(value: Any, code: str) -> Extension:
    if not isinstance(value, Mapping) or set(value) != {"months", "bought"} or not fields.is_int(value["months"]):
        raise _malformed(
            f"service {code}: each extension must be a map {{'months': 12 | 6 | 1, 'bought': 'YYYY-MM-DD'}}, "
            f"got {shown(value)}"
        )
    try:
        return Extension(months=value["months"], bought=_date(value["bought"], f"service {code} extension bought"))
    except ValueError as exc:
        raise _malformed(f"service {code}: {exc}") from exc


def _booking(item: Any, catalogue: Catalogue, first_registration: date | None) -> Booking:
    if not isinstance(item, Mapping):
        raise _malformed(f"a service entry is {shown(item)}, not a map")
    code = fields.text(item, "code", _malformed)
    if code not in catalogue.services:
        raise _malformed(f"unknown service code {shown(code)}")
    term_text = fields.text(item, "term", _malformed)
    try:
        term = parse_term(term_text)
    except ValueError as exc:
        raise _malformed(f"service {code}: {exc}") from exc
    extensions = item.get("extensions", [])
    if not isinstance(extensions, list | tuple):
        raise _malformed(f"service {code}: extensions must be an array, got {shown(extensions)}")
    cancelled = item.get("cancelled_on")
    sale = item.get("sale", False)
    if not isinstance(sale, bool):
        raise _malformed(f"service {code}: sale must be true or false, got {shown(sale)}")
    try:
        booking = Booking(
            code=code,
            term=term,
            start=_date(item.get("start"), f"service {code} start"),
            first_registration=first_registration,
            extensions=tuple(_extension(e, code) for e in extensions),
            cancelled_on=None if cancelled is None else _date(cancelled, f"service {code} cancelled_on"),
            sale=sale,
        )
    except (ValueError, OverflowError) as exc:
        raise _malformed(str(exc)) from exc
    # The vehicle recomputes the end at every boot and tick: it must be a date Python can hold.
    try:
        booking.renewal_deadline()
        booking.end()
    except (ValueError, OverflowError) as exc:
        raise _malformed(f"service {code}: its term ends after the year 9999 ({exc})") from exc
    _check_included(booking, catalogue, first_registration)
    return booking


def _check_included(booking: Booking, catalogue: Catalogue, first_registration: date | None) -> None:
    """Each service the booking brings, on its own term, for every brand the code is offered to, must be
    one the vehicle can compute (a 612 booked 3m brings 2+1y services, which need the first registration)."""
    entry = catalogue.services[booking.code]
    for brand in sorted(entry.brands):
        for service, term in entry.included_terms(brand, booking.term):
            try:
                booking.for_term(term, first_registration=first_registration).end()
            except ValueError as exc:
                raise _malformed(f"service {booking.code}, its service {service.name!r} on {term}: {exc}") from exc
            except OverflowError as exc:
                raise _malformed(
                    f"service {booking.code}: its service {service.name!r} on {term} ends after the year 9999"
                ) from exc


def parse_payload(payload: bytes, catalogue: Catalogue, *, vin: str | None = None) -> ProvisioningFile:
    """Read a verified payload; any bytes give a file or RejectedMessageError (bounds: payload_fields).

    With `vin`, a file for another vehicle is refused as such before the rest is read. A refusal of a
    file for this vehicle whose version could be read carries that version, so that the backend can
    book it against its file (never another vehicle's version: the backend would book it against ours).
    """
    data = decode(payload, what="provisioning file payload")
    if not isinstance(data, Mapping) or data.get("type") != "provisioning":
        raise _malformed("payload is not a map of type 'provisioning'")
    version = fields.integer(data, "version", _malformed, low=1)
    named = fields.text(data, "vin", _malformed)
    if vin is not None and named != vin:
        raise _other_vehicle(named, vin)
    try:
        return _parse_fields(data, catalogue, version)
    except RejectedMessageError as exc:
        exc.version = version  # signed and versioned: the backend can book the refusal against its file
        raise


def _suspended(data: Mapping[Any, Any], booked: frozenset[str]) -> frozenset[str]:
    """The field 'suspended': a sorted array of distinct booked codes (so one state has one encoding)."""
    value = data.get("suspended")
    if not isinstance(value, list | tuple):
        raise _malformed(f"field 'suspended' must be an array of booked codes, got {shown(value)}")
    if len(value) > len(booked):
        raise _malformed(f"field 'suspended' names {len(value)} codes, but only {len(booked)} are booked")
    for code in value:
        if not isinstance(code, str):
            raise _malformed(f"field 'suspended' must hold option codes as text, got {shown(code)}")
        if code not in booked:
            raise _malformed(f"field 'suspended' names {shown(code)}, which the file does not book")
    if list(value) != sorted(set(value)):
        raise _malformed(f"field 'suspended' must be sorted and without repeats, got {', '.join(value)}")
    return frozenset(value)


def _parse_fields(data: Mapping[Any, Any], catalogue: Catalogue, version: int) -> ProvisioningFile:
    services = data.get("services")
    if not isinstance(services, list | tuple):
        raise _malformed(f"field 'services' must be an array, got {shown(services)}")
    registered = data.get("first_registration")
    first_registration = None if registered is None else _date(registered, "first_registration")
    bookings = tuple(_booking(item, catalogue, first_registration) for item in services)
    if len({b.code for b in bookings}) != len(bookings):
        raise _malformed("a service code appears twice")
    sim = fields.text(data, "sim", _malformed)
    if sim not in SIM_STATES:
        raise _malformed(f"sim must be one of {SIM_STATES}, got {shown(sim)}")
    issued = fields.moment(data, "issued", _malformed)
    expires = fields.moment(data, "expires", _malformed)
    return ProvisioningFile(
        vin=fields.text(data, "vin", _malformed),
        version=version,
        issued=issued,
        expires=expires,
        bookings=bookings,
        suspended=_suspended(data, frozenset(b.code for b in bookings)),
        sim=sim,
        first_registration=first_registration,
    )


def check_change(file: ProvisioningFile, *, legal_ecall_equipped: bool) -> None:
    """Refuse what no contract change may do; raises RejectedMessageError(code='forbidden_change')."""
    legal = file.booking(LEGAL_ECALL)
    if legal_ecall_equipped:
        if legal is None:
            raise RejectedMessageError(
                "forbidden change: the file removes legal eCall (6AF) from a vehicle equipped with it",
                code="forbidden_change",
            )
        if legal.term is not Term.UNLIMITED:
            raise RejectedMessageError(
                f"forbidden change: legal eCall (6AF) must be unlimited, not {legal.term}", code="forbidden_change"
            )
        if LEGAL_ECALL in file.suspended:
            raise RejectedMessageError(
                "forbidden change: legal eCall (6AF) cannot be suspended, not even for payment default (AGB 1.5, 6.1)",
                code="forbidden_change",
            )
        if file.sim == "deactivated":
            raise RejectedMessageError(
                "forbidden change: the SIM of a vehicle with legal eCall cannot be deactivated",
                code="forbidden_change",
            )
    elif legal is not None:
        raise RejectedMessageError(
            "forbidden change: legal eCall (6AF) booked on a vehicle not equipped with it", code="forbidden_change"
        )


def check_fit(file: ProvisioningFile, catalogue: Catalogue, fit: VehicleFit) -> None:
    """Refuse a file that does not fit this vehicle: its brand, its equipment, its first registration."""
    if fit.first_registration is not None and file.first_registration not in (None, fit.first_registration):
        raise RejectedMessageError(
            f"forbidden change: the file says first registration {file.first_registration}, this vehicle was first "
            f"registered on {fit.first_registration}",
            code="forbidden_change",
        )
    for booking in file.bookings:
        if booking.code == LEGAL_ECALL:
            continue  # governed by the legal-eCall equipment: check_change
        refusal = catalogue.booking_refusal(booking.code, booking.term, brand=fit.brand, equipment=fit.equipment)
        if refusal is not None:
            raise RejectedMessageError(f"booking refused: {refusal}", code="not_offered")


@dataclass(frozen=True, slots=True)
class Accepted:
    file: ProvisioningFile
    already_applied: bool  # an identical re-delivery of the applied file: acknowledge, apply nothing


def _check_file(
    file: ProvisioningFile,
    message: bytes,
    *,
    vin: str,
    now: datetime,
    applied: bytes | None,
    applied_version: int,
    legal_ecall_equipped: bool,
    catalogue: Catalogue,
) -> bool:
    """The checks of a verified, parsed file; True when it is the applied file delivered again."""
    if file.vin != vin:
        raise _other_vehicle(file.vin, vin)
    if file.version <= applied_version:
        if file.version == applied_version and message == applied:
            return True
        raise RejectedMessageError(
            f"provisioning file version {file.version} is not newer than the applied version {applied_version} "
            "(replayed or rolled back)",
            code="old_version",
        )
    if now >= file.expires:
        raise RejectedMessageError(
            f"provisioning file version {file.version} expired at {file.expires.isoformat()}", code="expired"
        )
    check_change(file, legal_ecall_equipped=legal_ecall_equipped)
    if catalogue.vehicle is not None:
        check_fit(file, catalogue, catalogue.vehicle)
    return False


def verify_file(
    message: bytes,
    key: VerifyKey,
    *,
    vin: str,
    now: datetime,
    applied: bytes | None,
    applied_version: int,
    legal_ecall_equipped: bool,
    catalogue: Catalogue,
) -> Accepted:
    """Every check the vehicle makes before applying a file, in the order a person would debug them."""
    verified = verify1(message, key, max_bytes=MAX_FILE_BYTES, what="provisioning file")
    file = parse_payload(verified.payload, catalogue, vin=vin)
    try:
        if _check_file(
            file,
            message,
            vin=vin,
            now=now,
            applied=applied,
            applied_version=applied_version,
            legal_ecall_equipped=legal_ecall_equipped,
            catalogue=catalogue,
        ):
            return Accepted(file, already_applied=True)
    except RejectedMessageError as exc:
        exc.version = file.version  # signed and readable: the backend can book the answer to its file
        raise
    return Accepted(file, already_applied=False)
