"""Provisioning files: the backend's signed statement of every service one vehicle has.

A file is a COSE_Sign1 message (tcu.services.cose) whose payload is a CBOR map:

    {"type": "provisioning", "vin": str, "version": uint, "issued": ms, "expires": ms,
     "services": [{"code": "6AE", "term": "3y", "start": "2026-11-23",
                   "extensions": [12], "cancelled_on": "2027-01-05"}],   # last two optional
     "payment_default": bool, "sim": "active" | "deactivated"}

It carries the complete desired state, never a delta, so a late or repeated delivery converges
(Uptane's lesson). The vehicle accepts a file only if it is signed by the pinned backend key, names
this VIN, has a higher version than the one applied (an identical re-delivery of the applied file is
acknowledged again, not re-applied), has not expired, and makes no forbidden change: a legal-eCall
vehicle keeps 6AF, unlimited, and its SIM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import cbor2
from nacl.signing import SigningKey, VerifyKey

from tcu.errors import RejectedMessageError
from tcu.services import payload_fields as fields
from tcu.services.catalogue import LEGAL_ECALL, Catalogue
from tcu.services.cose import decode, sign1, verify1
from tcu.services.payload_fields import shown
from tcu.services.terms import Booking, Term
from tcu.uplink.records import to_millis

MAX_FILE_BYTES = 16 * 1024
SIM_STATES = ("active", "deactivated")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningFile:
    vin: str
    version: int
    issued: datetime
    expires: datetime
    bookings: tuple[Booking, ...] = ()
    payment_default: bool = False
    sim: str = "active"
    codes: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", frozenset(b.code for b in self.bookings))

    def booking(self, code: str) -> Booking | None:
        return next((b for b in self.bookings if b.code == code), None)


def encode_payload(file: ProvisioningFile) -> bytes:
    services = []
    for booking in file.bookings:
        item: dict[str, Any] = {"code": booking.code, "term": booking.term.value, "start": booking.start.isoformat()}
        if booking.extensions:
            item["extensions"] = list(booking.extensions)
        if booking.cancelled_on is not None:
            item["cancelled_on"] = booking.cancelled_on.isoformat()
        services.append(item)
    return cbor2.dumps(
        {
            "type": "provisioning",
            "vin": file.vin,
            "version": file.version,
            "issued": to_millis(file.issued),
            "expires": to_millis(file.expires),
            "services": services,
            "payment_default": file.payment_default,
            "sim": file.sim,
        }
    )


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


def _booking(item: Any, catalogue: Catalogue) -> Booking:
    if not isinstance(item, Mapping):
        raise _malformed(f"a service entry is {shown(item)}, not a map")
    code = fields.text(item, "code", _malformed)
    if code not in catalogue.services:
        raise _malformed(f"unknown service code {shown(code)}")
    term_text = fields.text(item, "term", _malformed)
    try:
        term = Term(term_text)
    except ValueError as exc:
        raise _malformed(f"service {code}: unknown term {shown(term_text)}") from exc
    extensions = item.get("extensions", [])
    if not isinstance(extensions, list | tuple) or not all(fields.is_int(m) for m in extensions):
        raise _malformed(f"service {code}: extensions must be an array of integer month counts")
    cancelled = item.get("cancelled_on")
    try:
        booking = Booking(
            code=code,
            term=term,
            start=_date(item.get("start"), f"service {code} start"),
            extensions=tuple(extensions),
            cancelled_on=None if cancelled is None else _date(cancelled, f"service {code} cancelled_on"),
        )
    except ValueError as exc:
        raise _malformed(str(exc)) from exc
    # The vehicle recomputes the end at every boot and tick: it must be a date Python can hold.
    try:
        booking.renewal_deadline()
        booking.end()
    except (ValueError, OverflowError) as exc:
        raise _malformed(f"service {code}: its term ends after the year 9999 ({exc})") from exc
    return booking


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


def _parse_fields(data: Mapping[Any, Any], catalogue: Catalogue, version: int) -> ProvisioningFile:
    services = data.get("services")
    if not isinstance(services, list | tuple):
        raise _malformed(f"field 'services' must be an array, got {shown(services)}")
    bookings = tuple(_booking(item, catalogue) for item in services)
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
        payment_default=fields.flag(data, "payment_default", _malformed),
        sim=sim,
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
        if file.sim == "deactivated":
            raise RejectedMessageError(
                "forbidden change: the SIM of a vehicle with legal eCall cannot be deactivated",
                code="forbidden_change",
            )
    elif legal is not None:
        raise RejectedMessageError(
            "forbidden change: legal eCall (6AF) booked on a vehicle not equipped with it", code="forbidden_change"
        )


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
        ):
            return Accepted(file, already_applied=True)
    except RejectedMessageError as exc:
        exc.version = file.version  # signed and readable: the backend can book the answer to its file
        raise
    return Accepted(file, already_applied=False)
