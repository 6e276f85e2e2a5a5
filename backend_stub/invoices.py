"""Invoices for paid services, and the payment default they start (AGB 5.5 c).

"In Zahlungsverzug kommt der Kunde, wenn er innerhalb von 30 Tagen nach Rechnungsstellung nicht
gezahlt hat": an invoice dated D may be paid up to and including day D + 30 (UTC dates, like the
terms in tcu.services.terms); from 00:00 UTC on day D + 31 it is overdue and the customer is in
payment default. BMW may then suspend "die betroffenen Dienste" until the customer has paid: the
backend issues the vehicle's next provisioning file with `payment_default` set (the issuer's
`suspend`), and the vehicle suspends its paid services and the intelligent emergency call
(tcu.services.entitlements) — never the free Teleservices, never legal eCall. Once no invoice of the
vehicle is overdue any more, the backend issues `resume`.

Only a booked service with a fixed term can be invoiced: a fixed term is a paid service ("befristeter
kostenpflichtiger Dienst", AGB 3.2); unlimited services come with the car or the contract (AGB 1.3).

`Billing.check` reconciles one vehicle and is idempotent: it runs after every issue and payment and,
in the running backend, for every vehicle every `CHECK_INTERVAL_S`, so a default that begins while
nobody touches the vehicle still begins, and a crash between recording and issuing converges. The
backend remembers which defaults it started itself (`payment_defaults`); a suspension an operator
issued by hand (`provision suspend`) is never lifted by a payment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from backend_stub.database import open_database, transaction
from backend_stub.errors import InvoiceError
from backend_stub.provisioning import IssuedFile, ProvisioningIssuer
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import Clock
from tcu.services.entitlements import is_paid

_LOGGER = logging.getLogger(__name__)

PAYMENT_DAYS = 30  # AGB 5.5 c: "innerhalb von 30 Tagen nach Rechnungsstellung"
MAX_AMOUNT_CENTS = 10_000_000  # 100,000.00 EUR: far above any ConnectedDrive price, far below any overflow
MAX_ITEM_CHARS = 200
CHECK_INTERVAL_S = 600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invoices (
    number       INTEGER PRIMARY KEY AUTOINCREMENT,
    vin          TEXT NOT NULL,
    service      TEXT NOT NULL,
    item         TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    invoiced     TEXT NOT NULL,  -- YYYY-MM-DD (UTC)
    paid         TEXT            -- YYYY-MM-DD (UTC), NULL while unpaid
);
CREATE INDEX IF NOT EXISTS invoices_by_vin ON invoices (vin, paid);
CREATE TABLE IF NOT EXISTS payment_defaults (  -- defaults this backend started (and so may end)
    vin     TEXT PRIMARY KEY,
    since   TEXT NOT NULL,
    invoice INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Invoice:
    number: int
    vin: str
    service: str
    item: str
    amount_cents: int
    invoiced: date
    paid: date | None = None

    @property
    def last_day(self) -> date:
        """The last day on which a payment is in time."""
        return self.invoiced + timedelta(days=PAYMENT_DAYS)

    def overdue(self, today: date) -> bool:
        return self.paid is None and today > self.last_day

    @property
    def amount(self) -> str:
        return f"{self.amount_cents // 100}.{self.amount_cents % 100:02d} EUR"


def parse_amount(text: str) -> int:
    """`49.90` (EUR) as 4990 cents; NaN, infinities, exponents, negatives and fractions of cents are refused."""
    try:
        value = Decimal(text.strip()) if len(text) <= 20 else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or "e" in text.lower():
        raise InvoiceError(f"amount {text[:40]!r} is not a price in euros such as 49.90")
    cents = value * 100
    if cents != cents.to_integral_value():
        raise InvoiceError(f"amount {text!r} has fractions of a cent")
    if not 0 < cents <= MAX_AMOUNT_CENTS:
        raise InvoiceError(f"amount {text!r} must be more than 0 and at most {MAX_AMOUNT_CENTS // 100} EUR")
    return int(cents)


class InvoiceStore:
    """The invoices in the backend's database (their own tables beside the other stores')."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(self, *, vin: str, service: str, item: str, amount_cents: int, invoiced: date) -> Invoice:
        with transaction(self._db):
            cursor = self._db.execute(
                "INSERT INTO invoices (vin, service, item, amount_cents, invoiced) VALUES (?, ?, ?, ?, ?)",
                (vin, service, item, amount_cents, invoiced.isoformat()),
            )
        number = cursor.lastrowid
        assert number is not None
        return Invoice(number=number, vin=vin, service=service, item=item, amount_cents=amount_cents, invoiced=invoiced)

    def get(self, number: int) -> Invoice | None:
        row = self._db.execute(_SELECT + " WHERE number=?", (number,)).fetchone()
        return None if row is None else _invoice(row)

    def invoices(self, vin: str | None = None) -> list[Invoice]:
        if vin is None:
            return [_invoice(row) for row in self._db.execute(_SELECT + " ORDER BY number")]
        return [_invoice(row) for row in self._db.execute(_SELECT + " WHERE vin=? ORDER BY number", (vin,))]

    def mark_paid(self, number: int, on: date) -> bool:
        """False when the invoice was paid already (by another process, say)."""
        with transaction(self._db):
            cursor = self._db.execute(
                "UPDATE invoices SET paid=? WHERE number=? AND paid IS NULL", (on.isoformat(), number)
            )
        return cursor.rowcount == 1

    def default_started(self, vin: str) -> int | None:
        """The invoice whose default this backend started for `vin`, if it did."""
        row = self._db.execute("SELECT invoice FROM payment_defaults WHERE vin=?", (vin,)).fetchone()
        return None if row is None else int(row[0])

    def record_default(self, vin: str, since: date, invoice: int) -> None:
        with transaction(self._db):
            self._db.execute(
                "INSERT OR IGNORE INTO payment_defaults (vin, since, invoice) VALUES (?, ?, ?)",
                (vin, since.isoformat(), invoice),
            )

    def end_default(self, vin: str) -> None:
        with transaction(self._db):
            self._db.execute("DELETE FROM payment_defaults WHERE vin=?", (vin,))

    def vehicles_to_check(self) -> list[str]:
        rows = self._db.execute(
            "SELECT vin FROM invoices WHERE paid IS NULL UNION SELECT vin FROM payment_defaults ORDER BY vin"
        )
        return [str(row[0]) for row in rows]


_SELECT = "SELECT number, vin, service, item, amount_cents, invoiced, paid FROM invoices"


def _invoice(row: tuple[object, ...]) -> Invoice:
    number, vin, service, item, amount, invoiced, paid = row
    return Invoice(
        number=int(str(number)),
        vin=str(vin),
        service=str(service),
        item=str(item),
        amount_cents=int(str(amount)),
        invoiced=date.fromisoformat(str(invoiced)),
        paid=None if paid is None else date.fromisoformat(str(paid)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciled:
    """What `Billing.check` found and did for one vehicle."""

    vin: str
    overdue: tuple[Invoice, ...]
    in_default: bool  # the vehicle's desired state after the check
    issued: IssuedFile | None = None  # the suspend or resume file this check issued


class Billing:
    def __init__(
        self, invoices: InvoiceStore, provisioning: ProvisioningStore, issuer: ProvisioningIssuer, clock: Clock
    ) -> None:
        self._invoices = invoices
        self._provisioning = provisioning
        self._issuer = issuer
        self._clock = clock

    def _today(self) -> date:
        return self._clock.now().date()

    def issue(
        self, vin: str, service: str, amount_cents: int, *, item: str | None = None, invoiced: date | None = None
    ) -> Invoice:
        """Invoice a paid service booked for `vin` (a booking or an extension), dated `invoiced` (default today)."""
        today = self._today()
        day = invoiced or today
        if day > today:
            raise InvoiceError(f"an invoice cannot be dated {day}, after today ({today})")
        if not 0 < amount_cents <= MAX_AMOUNT_CENTS:
            raise InvoiceError(f"amount of {amount_cents} cents must be more than 0 and at most {MAX_AMOUNT_CENTS}")
        head = self._provisioning.head(vin)
        booking = None if head is None else head.contents.booking(service)
        if booking is None:
            raise InvoiceError(f"service {service[:40]!r} is not booked for vehicle {vin}: nothing to invoice")
        if not is_paid(booking):
            raise InvoiceError(
                f"service {service} has an unlimited term: it comes with the car or the contract and is free "
                "(AGB 1.3, 3.2), so it is never invoiced"
            )
        text = item or f"{service} {booking.term.value} from {booking.start}"
        if len(text) > MAX_ITEM_CHARS or not text.isprintable():
            raise InvoiceError(f"the item text must be printable and at most {MAX_ITEM_CHARS} characters")
        invoice = self._invoices.add(vin=vin, service=service, item=text, amount_cents=amount_cents, invoiced=day)
        _LOGGER.info(
            "invoice %d for %s: %s, %s, dated %s, payable until %s",
            invoice.number,
            vin,
            text,
            invoice.amount,
            day,
            invoice.last_day,
        )
        self.check(vin)
        return invoice

    def pay(self, number: int, *, on: date | None = None) -> Reconciled:
        invoice = self._invoices.get(number) if 0 < number < 2**63 else None  # SQLite holds 64-bit integers
        if invoice is None:
            raise InvoiceError(f"there is no invoice {number}")
        day = on or self._today()
        if day < invoice.invoiced:
            raise InvoiceError(f"invoice {number} is dated {invoice.invoiced}: it cannot be paid on {day}, before")
        if day > self._today():
            raise InvoiceError(f"a payment cannot be dated {day}, after today ({self._today()})")
        if not self._invoices.mark_paid(number, day):
            raise InvoiceError(f"invoice {number} is paid already")
        _LOGGER.info("invoice %d for %s paid on %s", number, invoice.vin, day)
        return self.check(invoice.vin)

    def check(self, vin: str) -> Reconciled:
        """Start or end the payment default this backend is responsible for, as the invoices say today."""
        today = self._today()
        overdue = tuple(i for i in self._invoices.invoices(vin) if i.overdue(today))
        head = self._provisioning.head(vin)
        in_default = head is not None and head.contents.payment_default
        started = self._invoices.default_started(vin)
        issued = None
        if overdue and started is None:
            first = overdue[0]
            self._invoices.record_default(vin, today, first.number)  # first: a crash after it converges
            _LOGGER.warning(
                "vehicle %s in payment default: invoice %d (%s, dated %s) unpaid after %d days (AGB 5.5 c)",
                vin,
                first.number,
                first.amount,
                first.invoiced,
                PAYMENT_DAYS,
            )
            if not in_default:
                issued = self._issuer.suspend(vin)
                in_default = True
        elif not overdue and started is not None:
            if in_default:
                issued = self._issuer.resume(vin)
                in_default = False
            self._invoices.end_default(vin)
            _LOGGER.info("vehicle %s: no invoice overdue any more; payment default over", vin)
        elif overdue and not in_default:
            # Our default, resumed by hand while an invoice is still overdue: the invoices win.
            issued = self._issuer.suspend(vin)
            in_default = True
            _LOGGER.warning("vehicle %s: suspended again, invoice %d is still overdue", vin, overdue[0].number)
        return Reconciled(vin=vin, overdue=overdue, in_default=in_default, issued=issued)

    def check_all(self) -> Iterator[Reconciled]:
        for vin in self._invoices.vehicles_to_check():
            try:
                yield self.check(vin)
            except Exception:  # one vehicle's trouble never stops the others'
                _LOGGER.exception("payment check for %s failed; next try in %.0f s", vin, CHECK_INTERVAL_S)

    async def run(self, interval_s: float = CHECK_INTERVAL_S) -> None:
        """A default begins on day 31 whether or not anybody touches the vehicle."""
        while True:
            for _ in self.check_all():
                pass
            await asyncio.sleep(interval_s)
