"""Invoices and payment default (AGB 5.5 c), travelling through time with an injected clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from backend_stub.cli import main as backend_cli
from backend_stub.errors import InvoiceError
from backend_stub.invoice_store import InvoiceStore
from backend_stub.invoices import Billing, parse_amount
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_store import ProvisioningStore
from hil.layout import BenchLayout
from tcu.clock import ManualClock
from telematics_wire.entitlements import derive
from telematics_wire.terms import Term
from tests.conftest import VIN

INVOICED = date(2026, 11, 2)
PAID_SERVICE, PAID_TERM = "STORE-CONNECTED", Term.YEAR_1  # a store package, "Laufzeit 1 Jahr": paid (AGB 3.2)
RTTI = "6AM"  # Real Time Traffic Information, "Laufzeit 3 Jahre" (2+1 from the first registration): paid
SUSPENDED_BY_INVOICE = "payment default: invoice unpaid after 30 days"


class Backend:
    def __init__(self, tmp_path: Path) -> None:
        database = tmp_path / "backend.sqlite3"
        self.clock = ManualClock(wall=datetime(2026, 11, 2, 9, tzinfo=UTC))
        self.provisioning = ProvisioningStore(database)
        self.issuer = ProvisioningIssuer(
            self.provisioning, signing_key=SigningKey(bytes(range(32))), clock=self.clock, enrolled=lambda _v: True
        )
        self.invoices = InvoiceStore(database)
        self.billing = Billing(self.invoices, self.provisioning, self.issuer, self.clock)
        self.provisioning.record_build(VIN, first_registration=date(2026, 10, 1), today=date(2026, 11, 2))
        self.issuer.book(VIN, "6AE", Term.UNLIMITED, date(2026, 11, 1))
        self.issuer.book(VIN, "6AC", Term.UNLIMITED, date(2026, 11, 1))
        self.issuer.book(VIN, PAID_SERVICE, PAID_TERM, date(2026, 11, 1))
        self.issuer.book(VIN, RTTI, Term.YEARS_2_PLUS_1, date(2026, 11, 1))

    def at(self, moment: datetime) -> None:
        self.clock.wall = moment

    def suspended(self) -> frozenset[str]:
        head = self.provisioning.head(VIN)
        assert head is not None
        return head.contents.suspended

    def in_default(self) -> bool:
        return bool(self.suspended())

    def close(self) -> None:
        self.invoices.close()
        self.provisioning.close()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    backend = Backend(tmp_path)
    yield backend
    backend.close()


def test_payment_default_starts_on_day_31_not_on_day_30(backend: Backend) -> None:
    invoice = backend.billing.issue(VIN, PAID_SERVICE, 4990)
    assert (invoice.invoiced, invoice.last_day, invoice.amount) == (INVOICED, date(2026, 12, 2), "49.90 EUR")
    backend.at(datetime(2026, 12, 2, 23, 59, 59, tzinfo=UTC))  # day 30: a payment today is still in time
    assert backend.billing.check(VIN).overdue == ()
    assert not backend.in_default()
    backend.at(datetime(2026, 12, 3, 0, 0, tzinfo=UTC))  # day 31: in default
    result = backend.billing.check(VIN)
    assert [i.number for i in result.overdue] == [invoice.number]
    assert [f.operation for f in result.issued] == [f"suspend {PAID_SERVICE} ({SUSPENDED_BY_INVOICE})"]
    assert backend.suspended() == {PAID_SERVICE}
    assert backend.billing.check(VIN).issued == (), "idempotent: one suspension, not one per check"


def test_only_the_code_of_the_overdue_invoice_is_suspended(backend: Backend) -> None:
    """AGB 5.5 c suspends "die betroffenen Dienste": the invoiced code's, not every paid booking."""
    backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=INVOICED - timedelta(days=31))
    head = backend.provisioning.head(VIN)
    assert head is not None
    e = derive(head.contents, legal_ecall_equipped=False, now=backend.clock.now())
    assert (e.suspended, e.running, e.intelligent_ecall) == ({PAID_SERVICE}, {"6AE", "6AC", RTTI}, True)


def test_each_code_is_resumed_when_its_own_invoices_are_paid(backend: Backend) -> None:
    store = backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 1))
    rtti = backend.billing.issue(VIN, RTTI, 4990, invoiced=date(2026, 9, 2))
    assert backend.suspended() == {PAID_SERVICE, RTTI}
    result = backend.billing.pay(rtti.number)
    assert [f.operation for f in result.issued] == [f"resume {RTTI} (payment default over)"]
    assert (result.in_default, result.suspended) == (True, {PAID_SERVICE})
    backend.billing.pay(store.number)
    assert backend.suspended() == frozenset()
    assert backend.invoices.defaults(VIN) == {}


def test_paying_ends_the_default_only_when_nothing_is_overdue(backend: Backend) -> None:
    first = backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 1))
    second = backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 15), item="extension 1 month")
    assert backend.in_default()
    result = backend.billing.pay(first.number)
    assert (result.in_default, [i.number for i in result.overdue], result.issued) == (True, [second.number], ())
    result = backend.billing.pay(second.number, on=date(2026, 11, 2))
    assert [f.operation for f in result.issued] == [f"resume {PAID_SERVICE} (payment default over)"]
    assert not backend.in_default()
    assert backend.invoices.default_started(VIN) is None


def test_a_default_begins_while_nobody_touches_the_vehicle(backend: Backend) -> None:
    backend.billing.issue(VIN, PAID_SERVICE, 990)
    backend.at(datetime(2027, 1, 15, tzinfo=UTC))
    assert [r.in_default for r in backend.billing.check_all()] == [True]
    assert backend.in_default()


def test_a_suspension_by_hand_is_not_lifted_by_a_payment(backend: Backend) -> None:
    invoice = backend.billing.issue(VIN, PAID_SERVICE, 990)
    backend.issuer.suspend(VIN, why="by hand")  # an operator's decision, not the invoices'
    assert not backend.billing.pay(invoice.number).overdue
    assert backend.suspended() == {PAID_SERVICE, RTTI}


def test_a_suspension_by_hand_before_the_invoice_is_overdue_survives_its_payment(backend: Backend) -> None:
    """The reviewer's sequence: `provision suspend`, then an invoice goes overdue, `check` runs, then
    `pay`: the operator's suspension stays (only a resume by hand lifts it)."""
    backend.issuer.suspend(VIN, why="by hand")
    invoice = backend.billing.issue(VIN, PAID_SERVICE, 4990)
    backend.at(datetime(2026, 12, 10, tzinfo=UTC))
    checked = backend.billing.check(VIN)
    assert (checked.in_default, checked.issued) == (True, ())
    assert backend.invoices.default_started(VIN) is None, "the default did not suspend anything: not ours"
    paid = backend.billing.pay(invoice.number)
    assert (paid.in_default, paid.issued) == (False, ())
    assert backend.suspended() == {PAID_SERVICE, RTTI}
    assert backend.invoices.defaults(VIN) == {}
    backend.issuer.resume(VIN, why="by hand")
    assert backend.billing.check(VIN).issued == ()
    assert not backend.in_default()


def test_resumed_by_hand_while_still_overdue_is_suspended_again_and_then_lifted_by_the_payment(
    backend: Backend,
) -> None:
    backend.issuer.suspend(VIN, [PAID_SERVICE], why="by hand")
    invoice = backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 1))
    backend.issuer.resume(VIN, why="by hand")  # the operator lifts it, but the invoice is overdue
    assert [f.operation for f in backend.billing.check(VIN).issued] == [
        f"suspend {PAID_SERVICE} ({SUSPENDED_BY_INVOICE})"
    ]
    assert backend.invoices.default_started(VIN) == invoice.number, "the invoices hold it now"
    backend.billing.pay(invoice.number)
    assert not backend.in_default()


def test_a_crash_between_recording_and_issuing_converges(backend: Backend) -> None:
    invoice = backend.billing.issue(VIN, PAID_SERVICE, 990)
    backend.invoices.record_default(VIN, PAID_SERVICE, since=INVOICED, invoice=invoice.number, ours=True)
    backend.at(datetime(2026, 12, 3, tzinfo=UTC))  # recorded, but the suspend file was never issued
    assert len(backend.billing.check(VIN).issued) == 1
    assert backend.suspended() == {PAID_SERVICE}


def test_the_seller_s_debt_stays_his_and_the_buyer_inherits_no_default(backend: Backend) -> None:
    """AGB 7.1: the contract, and the debt, is the seller's; 4.3: the bookings are the car's; 5.5 c
    "einstellen": the booking suspended for the seller's overdue invoice ends with the sale."""
    overdue = backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 1))
    pending = backend.billing.issue(VIN, RTTI, 4990)  # not overdue yet
    backend.issuer.suspend(VIN, [RTTI], why="by hand")
    assert backend.suspended() == {PAID_SERVICE, RTTI}
    handed = backend.billing.owner_change(VIN, debtor="anna@example.org")
    assert ([b.code for b in handed.ended], [i.number for i in handed.debt]) == (
        [PAID_SERVICE],
        [overdue.number, pending.number],
    )
    head = backend.provisioning.head(VIN)
    assert head is not None
    assert (head.contents.booking(PAID_SERVICE), head.contents.suspended) == (None, {RTTI})  # hand: operator's
    backend.at(datetime(2027, 2, 1, tzinfo=UTC))  # the seller's second invoice is long overdue now
    checked = backend.billing.check(VIN)
    assert (checked.in_default, checked.issued, backend.invoices.vehicles_to_check()) == (False, (), [])
    assert {(i.number, i.debtor, i.detached) for i in backend.invoices.invoices(VIN)} == {
        (overdue.number, "anna@example.org", date(2026, 11, 2)),
        (pending.number, "anna@example.org", date(2026, 11, 2)),
    }
    assert backend.billing.pay(pending.number).issued == (), "the seller pays later: nothing of the car changes"
    assert backend.billing.owner_change(VIN, debtor=None).debt == (), "a second owner change finds no debt"


def test_a_buyer_s_own_invoice_starts_a_default_after_the_owner_change(backend: Backend) -> None:
    backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 1))
    backend.billing.owner_change(VIN, debtor=None)
    backend.billing.issue(VIN, RTTI, 990)
    backend.at(datetime(2026, 12, 3, tzinfo=UTC))
    backend.billing.check(VIN)
    assert backend.suspended() == {RTTI}


@pytest.mark.parametrize(
    ("service", "amount", "invoiced", "message"),
    [
        ("6AE", 990, None, "6AE has no fixed-term service: it comes with the car or the contract and is free"),
        ("6AC", 990, None, "6AC has no fixed-term service"),
        ("6AP", 990, None, "service '6AP' is not booked"),
        (PAID_SERVICE, 0, None, "more than 0"),
        (PAID_SERVICE, -5, None, "more than 0"),
        (PAID_SERVICE, 2**63, None, "at most"),
        (PAID_SERVICE, 990, date(2026, 11, 3), "after today"),
    ],
)
def test_what_cannot_be_invoiced_is_refused_with_the_reason(
    backend: Backend, service: str, amount: int, invoiced: date | None, message: str
) -> None:
    with pytest.raises(InvoiceError, match=message):
        backend.billing.issue(VIN, service, amount, invoiced=invoiced)
    assert backend.invoices.invoices() == []


def test_payments_are_checked(backend: Backend) -> None:
    invoice = backend.billing.issue(VIN, PAID_SERVICE, 990)
    for number in (99, 0, -1, 2**63, 2**64):
        with pytest.raises(InvoiceError, match=f"no invoice {number}"):
            backend.billing.pay(number)
    with pytest.raises(InvoiceError, match="before"):
        backend.billing.pay(invoice.number, on=date(2026, 11, 1))
    backend.billing.pay(invoice.number)
    with pytest.raises(InvoiceError, match="paid already"):
        backend.billing.pay(invoice.number)


@pytest.mark.parametrize(
    ("text", "cents"),
    [("49.90", 4990), ("49.9", 4990), ("1", 100), (" 0.01 ", 1), ("100000", 10_000_000)],
)
def test_amounts(text: str, cents: int) -> None:
    assert parse_amount(text) == cents


@pytest.mark.parametrize(
    "text", ["NaN", "inf", "-Infinity", "1e3", "-1", "0", "0.001", "100000.01", "9" * 400, "", "12,50", "0x10", "True"]
)
def test_hostile_amounts_are_refused(text: str) -> None:
    with pytest.raises(InvoiceError):
        parse_amount(text)


def test_cli_issue_list_pay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1")
    bench.create_backend()
    bench.add_vehicle(VIN)
    config = ["--config", str(bench.backend_config)]
    for service in ("6AE", PAID_SERVICE):
        term = "unlimited" if service == "6AE" else PAID_TERM.value
        assert backend_cli(["provision", "book", VIN, "--service", service, "--term", term, *config]) == 0
    capsys.readouterr()
    dated = (datetime.now(UTC).date() - timedelta(days=31)).isoformat()
    args = ["invoice", "issue", VIN, "--service", PAID_SERVICE, "--amount", "9.99", "--invoiced", dated]
    assert backend_cli([*args, *config, "--json"]) == 0
    issued = json.loads(capsys.readouterr().out)[0]
    assert (issued["amount"], issued["overdue"], issued["payment_default"]) == ("9.99 EUR", True, True)
    assert backend_cli(["invoice", "list", VIN, *config]) == 0
    assert "overdue=True" in capsys.readouterr().out
    assert backend_cli(["invoice", "pay", str(issued["number"]), *config, "--json"]) == 0
    paid = json.loads(capsys.readouterr().out)[0]
    assert (paid["payment_default"], paid["operations"]) == (False, [f"resume {PAID_SERVICE} (payment default over)"])
    assert backend_cli(["invoice", "issue", VIN, "--service", "6AE", "--amount", "1", *config]) == 2
    assert "no fixed-term service" in capsys.readouterr().err
    assert backend_cli(["invoice", "issue", VIN, "--service", PAID_SERVICE, "--amount", "nan", *config]) == 2
    assert "is not a price in euros" in capsys.readouterr().err
