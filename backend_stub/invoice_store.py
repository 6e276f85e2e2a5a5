"""The invoices and the payment defaults in the backend's database (their own tables beside the other
stores'): what was invoiced, when it was paid, which option codes of a vehicle are in default and
whether this backend suspended them (backend_stub.invoices holds the rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from backend_stub.database import migrate, open_database, transaction

PAYMENT_DAYS = 30  # AGB 5.5 c: "innerhalb von 30 Tagen nach Rechnungsstellung"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invoices (
    number       INTEGER PRIMARY KEY AUTOINCREMENT,
    vin          TEXT NOT NULL,
    service      TEXT NOT NULL,
    item         TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    invoiced     TEXT NOT NULL,  -- YYYY-MM-DD (UTC)
    paid         TEXT,           -- YYYY-MM-DD (UTC), NULL while unpaid
    detached     TEXT,           -- YYYY-MM-DD of the owner change after which it is the seller's debt only
    debtor       TEXT            -- the seller's account then (NULL: none was linked)
);
CREATE INDEX IF NOT EXISTS invoices_by_vin ON invoices (vin, paid);
CREATE TABLE IF NOT EXISTS payment_defaults (  -- per vehicle and option code in default
    vin     TEXT NOT NULL,
    code    TEXT NOT NULL,
    since   TEXT NOT NULL,
    invoice INTEGER NOT NULL,
    ours    INTEGER NOT NULL,  -- 1: this backend suspended the code, so a payment may resume it
    PRIMARY KEY (vin, code)
) WITHOUT ROWID;
"""

# Before issue 12's second round: one default per vehicle, always the backend's, and invoices tied to
# the vehicle for good.
_MIGRATE_TO_CODES = """
ALTER TABLE payment_defaults RENAME TO payment_defaults_per_vehicle;
CREATE TABLE payment_defaults (
    vin TEXT NOT NULL, code TEXT NOT NULL, since TEXT NOT NULL, invoice INTEGER NOT NULL, ours INTEGER NOT NULL,
    PRIMARY KEY (vin, code)
) WITHOUT ROWID;
INSERT OR IGNORE INTO payment_defaults SELECT d.vin, i.service, d.since, d.invoice, 1
    FROM payment_defaults_per_vehicle d JOIN invoices i ON i.number = d.invoice;
DROP TABLE payment_defaults_per_vehicle
"""
_MIGRATE_TO_OWNERS = """
ALTER TABLE invoices ADD COLUMN detached TEXT;
ALTER TABLE invoices ADD COLUMN debtor TEXT
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
    detached: date | None = None  # the owner change after which only the seller owes it
    debtor: str | None = None

    @property
    def last_day(self) -> date:
        """The last day on which a payment is in time."""
        return self.invoiced + timedelta(days=PAYMENT_DAYS)

    def overdue(self, today: date) -> bool:
        return self.paid is None and today > self.last_day

    @property
    def amount(self) -> str:
        return f"{self.amount_cents // 100}.{self.amount_cents % 100:02d} EUR"


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeDefault:
    """One option code of a vehicle in payment default."""

    code: str
    since: date
    invoice: int
    ours: bool  # the backend suspended it (not an operator before the invoice went overdue)


class InvoiceStore:
    """The invoices in the backend's database (their own tables beside the other stores')."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, _SCHEMA)
        migrate(self._db, table="invoices", column="detached", script=_MIGRATE_TO_OWNERS)
        migrate(self._db, table="payment_defaults", column="code", script=_MIGRATE_TO_CODES)

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

    def detach(self, vin: str, on: date, debtor: str | None) -> list[Invoice]:
        """The vehicle's unpaid invoices become the seller's debt only (an owner change); returns them."""
        with transaction(self._db):
            rows = self._db.execute(_SELECT + " WHERE vin=? AND paid IS NULL AND detached IS NULL", (vin,)).fetchall()
            self._db.execute(
                "UPDATE invoices SET detached=?, debtor=? WHERE vin=? AND paid IS NULL AND detached IS NULL",
                (on.isoformat(), debtor, vin),
            )
        return [_invoice(row) for row in rows]

    def defaults(self, vin: str) -> dict[str, CodeDefault]:
        """The option codes of `vin` in payment default."""
        rows = self._db.execute("SELECT code, since, invoice, ours FROM payment_defaults WHERE vin=?", (vin,))
        return {
            str(code): CodeDefault(
                code=str(code), since=date.fromisoformat(since), invoice=int(invoice), ours=bool(ours)
            )
            for code, since, invoice, ours in rows
        }

    def default_started(self, vin: str) -> int | None:
        """The first invoice whose default this backend started for `vin`, if it started one."""
        ours = [d.invoice for d in self.defaults(vin).values() if d.ours]
        return min(ours) if ours else None

    def record_default(self, vin: str, code: str, *, since: date, invoice: int, ours: bool) -> None:
        with transaction(self._db):
            self._db.execute(
                "INSERT INTO payment_defaults VALUES (?, ?, ?, ?, ?) ON CONFLICT (vin, code) DO UPDATE SET ours=?",
                (vin, code, since.isoformat(), invoice, int(ours), int(ours)),
            )

    def end_default(self, vin: str, code: str | None = None) -> None:
        """The default of `code` is over (None: of every code of `vin`)."""
        with transaction(self._db):
            if code is None:
                self._db.execute("DELETE FROM payment_defaults WHERE vin=?", (vin,))
            else:
                self._db.execute("DELETE FROM payment_defaults WHERE vin=? AND code=?", (vin, code))

    def vehicles_to_check(self) -> list[str]:
        rows = self._db.execute(
            "SELECT vin FROM invoices WHERE paid IS NULL AND detached IS NULL "
            "UNION SELECT vin FROM payment_defaults ORDER BY vin"
        )
        return [str(row[0]) for row in rows]


_SELECT = "SELECT number, vin, service, item, amount_cents, invoiced, paid, detached, debtor FROM invoices"


def _day(value: object) -> date | None:
    return None if value is None else date.fromisoformat(str(value))


def _invoice(row: tuple[object, ...]) -> Invoice:
    number, vin, service, item, amount, invoiced, paid, detached, debtor = row
    return Invoice(
        number=int(str(number)),
        vin=str(vin),
        service=str(service),
        item=str(item),
        amount_cents=int(str(amount)),
        invoiced=date.fromisoformat(str(invoiced)),
        paid=_day(paid),
        detached=_day(detached),
        debtor=None if debtor is None else str(debtor),
    )
