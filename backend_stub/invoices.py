"""Invoices for paid services, and the payment default they start (AGB 5.5 c).

"In Zahlungsverzug kommt der Kunde, wenn er innerhalb von 30 Tagen nach Rechnungsstellung nicht
gezahlt hat": an invoice dated D may be paid up to and including day D + 30 (UTC dates, like the
terms in telematics_wire.terms); from 00:00 UTC on day D + 31 it is overdue. BMW may then suspend "die
betroffenen Dienste" until the customer has paid. An invoice is for one booked option code, one with
a fixed-term service (a paid one, AGB 3.2; backend_stub.desired_state.invoiceable), so the affected
services are that code's: the backend suspends exactly the codes of the overdue invoices (the
provisioning file's `suspended`), and the vehicle stops their fixed-term services — the intelligent
call with them where a suspended paid package brings it — never a free unlimited service, never
legal eCall (telematics_wire.entitlements). A code is resumed once none of its invoices is overdue.

`Billing.check` reconciles one vehicle and is idempotent: it runs after every issue and payment and,
in the running backend, for every vehicle every `CHECK_INTERVAL_S`, so a default that begins while
nobody touches the vehicle still begins, and a crash between recording and issuing converges. For
each code in default the backend records whether *it* suspended the code (`payment_defaults.ours`):
a code an operator had suspended by hand (`provision suspend`) before its invoice went overdue stays
the operator's, and paying never lifts it; a code the operator resumes by hand while its invoice is
still overdue is suspended again, and is then the backend's.

On an owner change (`Billing.owner_change`, AGB 7.1: the contract, and with it the debt, is not
transferred) the vehicle's unpaid invoices stay the seller's debt, recorded against the seller's
account, and are never again checked against the vehicle; the bookings suspended for the seller's
overdue invoices end (5.5 c "einstellen"): the buyer neither inherits the default nor gets the unpaid
services, and is told so in the handover list (AGB 7.3).

The invoices and the recorded defaults are kept by backend_stub.invoice_store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from backend_stub.desired_state import DesiredState, invoiceable, suspendable
from backend_stub.errors import InvoiceError
from backend_stub.invoice_store import PAYMENT_DAYS, Invoice, InvoiceStore
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_history import IssuedFile
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import Clock
from telematics_wire.terms import Booking

_LOGGER = logging.getLogger(__name__)

MAX_AMOUNT_CENTS = 10_000_000  # 100,000.00 EUR: far above any ConnectedDrive price, far below any overflow
MAX_ITEM_CHARS = 200
CHECK_INTERVAL_S = 600.0


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciled:
    """What `Billing.check` found and did for one vehicle."""

    vin: str
    overdue: tuple[Invoice, ...]
    in_default: bool  # an invoice of the vehicle's current owner is overdue
    suspended: frozenset[str] = frozenset()  # the codes suspended after the check (by invoices or by hand)
    issued: tuple[IssuedFile, ...] = ()  # the suspend and resume files this check issued


@dataclass(frozen=True, slots=True, kw_only=True)
class Handed:
    """What an owner change did to the seller's invoices and the vehicle's default."""

    vin: str
    debt: tuple[Invoice, ...]  # the seller's unpaid invoices, now recorded against the seller only
    ended: tuple[Booking, ...]  # the bookings of the seller's overdue invoices, ended with his contract
    issued: IssuedFile | None = None


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

    def _state(self, vin: str) -> DesiredState:
        head = self._provisioning.head(vin)
        return DesiredState() if head is None else DesiredState.of(head.contents)

    def issue(
        self, vin: str, service: str, amount_cents: int, *, item: str | None = None, invoiced: date | None = None
    ) -> Invoice:
        """Invoice a booked option code with a fixed-term service (a booking or an extension), dated
        `invoiced` (default today)."""
        today = self._today()
        day = invoiced or today
        if day > today:
            raise InvoiceError(f"an invoice cannot be dated {day}, after today ({today})")
        if not 0 < amount_cents <= MAX_AMOUNT_CENTS:
            raise InvoiceError(f"amount of {amount_cents} cents must be more than 0 and at most {MAX_AMOUNT_CENTS}")
        booking = self._state(vin).booking(service)
        if booking is None:
            raise InvoiceError(f"service {service[:40]!r} is not booked for vehicle {vin}: nothing to invoice")
        if not invoiceable(booking):
            raise InvoiceError(
                f"service {service} has no fixed-term service: it comes with the car or the contract and is free "
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
        _LOGGER.info(
            "invoice %d for %s paid on %s%s",
            number,
            invoice.vin,
            day,
            "" if invoice.detached is None else f" by the previous owner (sold on {invoice.detached})",
        )
        return self.check(invoice.vin)

    def check(self, vin: str) -> Reconciled:
        """Suspend the codes of the overdue invoices, resume those the backend suspended and nothing
        holds any more, as the invoices say today. An operator's suspension is left alone."""
        today, now = self._today(), self._clock.now()
        overdue = tuple(i for i in self._invoices.invoices(vin) if i.detached is None and i.overdue(today))
        state = self._state(vin)
        due: dict[str, Invoice] = {}
        for invoice in overdue:  # oldest first: a code's default names its first overdue invoice
            due.setdefault(invoice.service, invoice)
        due = {code: i for code, i in due.items() if code in suspendable(state, now)}  # an ended term: nothing
        recorded = self._invoices.defaults(vin)
        to_suspend: set[str] = set()
        for code, invoice in sorted(due.items()):
            known = recorded.get(code)
            if known is None:
                ours = code not in state.suspended  # suspended by hand already: it stays the operator's
                # Recorded before the file is issued: a crash in between is caught by the next check.
                self._invoices.record_default(vin, code, since=today, invoice=invoice.number, ours=ours)
                _LOGGER.warning(
                    "vehicle %s in payment default for %s: invoice %d (%s, dated %s) unpaid after %d days "
                    "(AGB 5.5 c)%s",
                    vin,
                    code,
                    invoice.number,
                    invoice.amount,
                    invoice.invoiced,
                    PAYMENT_DAYS,
                    "" if ours else "; it was suspended by hand already and stays so until resumed by hand",
                )
            elif code not in state.suspended:
                _LOGGER.warning(
                    "vehicle %s: %s suspended again, invoice %d is still overdue", vin, code, invoice.number
                )
                if not known.ours:  # the operator lifted the hand suspension: the invoices hold it now
                    self._invoices.record_default(vin, code, since=known.since, invoice=known.invoice, ours=True)
            if code not in state.suspended:
                to_suspend.add(code)
        over = {code: d for code, d in recorded.items() if code not in due}
        to_resume = {code for code, d in over.items() if d.ours and code in state.suspended}
        issued = []
        if to_suspend:
            issued.append(self._issuer.suspend(vin, to_suspend, why="payment default: invoice unpaid after 30 days"))
        if to_resume:
            issued.append(self._issuer.resume(vin, to_resume, why="payment default over"))
        for code, default in sorted(over.items()):  # after the resume: a crash before it resumes again
            self._invoices.end_default(vin, code)
            _LOGGER.info(
                "vehicle %s: %s no longer in payment default%s",
                vin,
                code,
                "" if default.ours else "; it was suspended by hand and stays so until resumed by hand",
            )
        after = self._state(vin).suspended if issued else state.suspended
        return Reconciled(vin=vin, overdue=overdue, in_default=bool(overdue), suspended=after, issued=tuple(issued))

    def owner_change(self, vin: str, *, debtor: str | None) -> Handed:
        """The vehicle was sold (AGB 7.1-7.4): its unpaid invoices stay the seller's debt, against the
        seller's account, and no longer hold the vehicle's services; the bookings suspended for the
        seller's overdue invoices end rather than pass to the buyer unpaid."""
        today, now = self._today(), self._clock.now()
        overdue = {i.service for i in self._invoices.invoices(vin) if i.detached is None and i.overdue(today)}
        state = self._state(vin)
        ended = tuple(b for b in state.bookings if b.code in overdue & suspendable(state, now))
        issued = None
        if ended:
            issued = self._issuer.end_unpaid(
                vin,
                [b.code for b in ended],
                why="unpaid by the previous owner, ended at the owner change (AGB 5.5 c, 7.1)",
            )
        debt = tuple(self._invoices.detach(vin, today, debtor))
        self._invoices.end_default(vin)
        for invoice in debt:
            _LOGGER.warning(
                "vehicle %s sold: invoice %d (%s, %s) stays the debt of %s; it no longer holds the vehicle's services",
                vin,
                invoice.number,
                invoice.service,
                invoice.amount,
                debtor or "the previous owner (no account was linked)",
            )
        return Handed(vin=vin, debt=debt, ended=ended, issued=issued)

    def check_all(self) -> Iterator[Reconciled]:
        for vin in self._invoices.vehicles_to_check():
            try:
                yield self.check(vin)
            except Exception:  # one vehicle's trouble never stops the others'
                _LOGGER.exception("payment check for %s failed; next try in %.0f s", vin, CHECK_INTERVAL_S)
