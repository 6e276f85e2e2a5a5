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
from backend_stub.invoices import Billing, InvoiceStore, parse_amount
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_store import ProvisioningStore
from hil.layout import BenchLayout
from tcu.clock import ManualClock
from tcu.services.entitlements import derive
from tcu.services.terms import Term
from tests.conftest import VIN

INVOICED = date(2026, 11, 2)
PAID_SERVICE, PAID_TERM = "STORE-CONNECTED", Term.YEAR_1  # a store package, "Laufzeit 1 Jahr": paid (AGB 3.2)


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
        self.issuer.book(VIN, "6AE", Term.UNLIMITED, date(2026, 11, 1))
        self.issuer.book(VIN, "6AC", Term.UNLIMITED, date(2026, 11, 1))
        self.issuer.book(VIN, PAID_SERVICE, PAID_TERM, date(2026, 11, 1))

    def at(self, moment: datetime) -> None:
        self.clock.wall = moment

    def in_default(self) -> bool:
        head = self.provisioning.head(VIN)
        assert head is not None
        return head.contents.payment_default

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
    assert result.issued is not None
    assert result.issued.operation == "suspend (payment default)"
    assert backend.in_default()
    assert backend.billing.check(VIN).issued is None, "idempotent: one suspension, not one per check"


def test_the_vehicle_suspends_the_paid_service_and_6ac_but_not_teleservices(backend: Backend) -> None:
    backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=INVOICED - timedelta(days=31))
    head = backend.provisioning.head(VIN)
    assert head is not None
    e = derive(head.contents, legal_ecall_equipped=False, now=backend.clock.now())
    assert (e.suspended, e.running, e.intelligent_ecall) == ({PAID_SERVICE, "6AC"}, {"6AE"}, False)


def test_paying_ends_the_default_only_when_nothing_is_overdue(backend: Backend) -> None:
    first = backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 1))
    second = backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 15), item="extension 6AK 1 month")
    assert backend.in_default()
    result = backend.billing.pay(first.number)
    assert (result.in_default, [i.number for i in result.overdue], result.issued) == (True, [second.number], None)
    result = backend.billing.pay(second.number, on=date(2026, 11, 2))
    assert result.issued is not None
    assert result.issued.operation == "resume (payment default over)"
    assert not backend.in_default()
    assert backend.invoices.default_started(VIN) is None


def test_a_default_begins_while_nobody_touches_the_vehicle(backend: Backend) -> None:
    backend.billing.issue(VIN, PAID_SERVICE, 990)
    backend.at(datetime(2027, 1, 15, tzinfo=UTC))
    assert [r.in_default for r in backend.billing.check_all()] == [True]
    assert backend.in_default()


def test_a_suspension_by_hand_is_not_lifted_by_a_payment(backend: Backend) -> None:
    invoice = backend.billing.issue(VIN, PAID_SERVICE, 990)
    backend.issuer.suspend(VIN)  # an operator's decision, not the invoices'
    assert not backend.billing.pay(invoice.number).overdue
    assert backend.in_default()


def test_resumed_by_hand_while_still_overdue_is_suspended_again(backend: Backend) -> None:
    backend.billing.issue(VIN, PAID_SERVICE, 990, invoiced=date(2026, 9, 1))
    backend.issuer.resume(VIN)
    assert backend.billing.check(VIN).issued is not None
    assert backend.in_default()


@pytest.mark.parametrize(
    ("service", "amount", "invoiced", "message"),
    [
        ("6AE", 990, None, "unlimited term: it comes with the car or the contract and is free"),
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
    assert (paid["payment_default"], paid["operation"]) == (False, "resume (payment default over)")
    assert backend_cli(["invoice", "issue", VIN, "--service", "6AE", "--amount", "1", *config]) == 2
    assert "unlimited term" in capsys.readouterr().err
    assert backend_cli(["invoice", "issue", VIN, "--service", PAID_SERVICE, "--amount", "nan", *config]) == 2
    assert "is not a price in euros" in capsys.readouterr().err
