"""Building signed provisioning files in tests, the way the backend does."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from nacl.signing import SigningKey

from tcu.services.provisioning import ProvisioningFile, sign_file
from tcu.services.terms import Booking, Term

START = date(2026, 11, 1)


def booking(code: str, term: Term = Term.YEARS_3, **kwargs: object) -> Booking:
    return Booking(code=code, term=term, start=START, **kwargs)  # type: ignore[arg-type]


def signed(
    key: SigningKey,
    vin: str,
    version: int,
    now: datetime,
    *bookings: Booking,
    payment_default: bool = False,
    sim: str = "active",
    valid_for: timedelta = timedelta(days=30),
) -> bytes:
    return sign_file(
        ProvisioningFile(
            vin=vin,
            version=version,
            issued=now,
            expires=now + valid_for,
            bookings=bookings,
            payment_default=payment_default,
            sim=sim,
        ),
        key,
    )
