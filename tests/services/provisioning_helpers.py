"""Building signed provisioning files in tests, the way the backend does."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from nacl.signing import SigningKey

from telematics_wire.catalogue import Brand, Catalogue
from telematics_wire.provisioning import ProvisioningFile, sign_file
from telematics_wire.terms import Booking, Term

START = date(2026, 11, 1)
FIRST_REGISTRATION = START  # a new car: its 5y and 2+1 terms run from here
_CATALOGUE = Catalogue.load()


def offered_term(code: str, brand: Brand = Brand.BMW) -> Term:
    """The first term the catalogue offers for `code` (6AE, 6AC, 6AF: unlimited; 6AM: 2+1y)."""
    return _CATALOGUE.services[code].terms_for(brand)[0]


def booking(code: str, term: Term | None = None, **kwargs: object) -> Booking:
    term = term or offered_term(code)
    registered = {"first_registration": FIRST_REGISTRATION} if term.from_first_registration else {}
    return Booking(code=code, term=term, start=START, **{**registered, **kwargs})  # type: ignore[arg-type]


def signed(
    key: SigningKey,
    vin: str,
    version: int,
    now: datetime,
    *bookings: Booking,
    suspended: frozenset[str] = frozenset(),
    sim: str = "active",
    valid_for: timedelta = timedelta(days=30),
    first_registration: date | None = FIRST_REGISTRATION,
) -> bytes:
    return sign_file(
        ProvisioningFile(
            vin=vin,
            version=version,
            issued=now,
            expires=now + valid_for,
            bookings=bookings,
            suspended=suspended,
            sim=sim,
            first_registration=first_registration,
        ),
        key,
    )
