"""Retention: the backend keeps data only as long as the terms' privacy part allows.

- Personal data goes after 4 weeks (part B: "Die verarbeiteten personenbezogenen Daten werden
  automatisch nach 4 Wochen gelöscht"): every stored value of a personal category — position and
  movement, user profile, environment, traffic, sensors: every category but the technical ones —
  is taken out of the records and the last values once it was *received* 4 weeks ago (28 days, to
  the millisecond: at exactly 28 days it is due). The backend's own clock decides, never the
  vehicle's stamp, which a vehicle clock that jumps would make meaningless.
- Personal *fields* go with them, whatever record holds them (`PERSONAL_FIELDS`): an eCall record's
  MSD (position, the recent positions, direction of travel, number of passengers, VIN) and the
  call-centre record's occupants. The 112 PSAP's table of received MSDs (`psap_msds`, its
  position columns and raw bytes) follows the same 4 weeks. A body keeps `personal_removed`: the
  categories taken out, and `fields_removed`: the personal fields taken out, so a person reading
  it later knows what is missing and why.
- Technical vehicle data stays (part D: status and maintenance data "werden am Ende des Lebenszyklus
  des Fahrzeugs gelöscht"): the records themselves stay too, so their sequence numbers still
  deduplicate a resend and still close a gap.
- Contract data goes one year after the contract ended (part A: "Die Vertragsdaten werden automatisch
  1 Jahr nach Ablauf des Vertrages gelöscht"): an ended account link, its consents, and an account
  left without any link. One year is a calendar year (an end on 1 June 2027 is deleted on 1 June 2028,
  366 days later); an end on 29 February counts to 28 February. CarData's consents hang on the link
  and go with it; a deleted account's gcid, containers, transaction log and sign-ins go with the
  account (`RetentionJob.cardata`: `backend_stub.cardata.consents.CardataStore.purge_ended`). The
  transaction log stays as long as the account: the seed lets the owner ask for the transaction
  report "jederzeit", also about a car sold long ago, and no term sets it a shorter life.
- Financial transactions go after 10 years (part A: "Finanztransaktionen werden im Rahmen der
  gesetzlichen Bestimmungen nach 10 Jahren gelöscht"): a paid invoice, counted as the law counts
  (§ 147 Abs. 4 AO, § 257 Abs. 5 HGB) from the end of the calendar year of its last transaction —
  an invoice paid on 3 May 2027 is deleted on 1 January 2038. An unpaid invoice is an open claim,
  not a finished transaction: it stays.
- Provisioning files and the vehicle's results are not deleted by this job: they name a vehicle, its
  equipment and its booked terms, not a person (part D's "Fahrzeug Stammdaten ... Ausstattung"),
  the current file is what the vehicle runs, and the history is the record of what was booked and
  invoiced, which the invoices' 10 years need. The person behind a booking is in the account link,
  deleted a year after the contract ended.
- After an owner change (AGB 7.2) the previous owner's personal data goes at once: everything before
  the owner-change record in the vehicle's own order, including records that arrive late.

Which category a path has is the catalogue's (`Catalogue.category_of`; a path it does not list is
personal). Paths are found at any depth of a body. A value the job cannot classify — a key of a
map of paths that is not text, a body nested deeper than `MAX_DEPTH` — is treated as personal:
deleting too much is the safe side. `RetentionJob.run` is one pass; the backend runs one at start and
then every `interval_s` on its database thread (backend_stub/app.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from backend_stub.accounts import AccountStore
from backend_stub.database import open_database, transaction
from backend_stub.store import BackendStore
from tcu.clock import Clock
from telematics_wire.catalogue import Catalogue, Category
from telematics_wire.records import to_millis

_LOGGER = logging.getLogger(__name__)

PERSONAL_RETENTION = timedelta(weeks=4)
CONTRACT_RETENTION_YEARS = 1
FINANCIAL_RETENTION_YEARS = 10
REMOVED_KEY = "personal_removed"  # the categories the job took out of a body, for a person reading it later
FIELDS_REMOVED_KEY = "fields_removed"  # the personal fields (PERSONAL_FIELDS) it took out
UNCLASSIFIED = "unclassified"  # in REMOVED_KEY: a value no category could be given to
MAX_DEPTH = 16  # deeper than any body the protocol has; a deeper value is removed whole
# Fields that are personal wherever a record has them, with the categories of part B they hold. The
# MSD (EN 15722) carries the position, the two recent positions, the direction of travel, the number
# of passengers (from the seat belts) and the VIN; the occupants are who sat belted.
PERSONAL_FIELDS: dict[str, frozenset[Category]] = {
    "msd": frozenset({Category.POSITION, Category.SENSORS}),
    "occupants": frozenset({Category.SENSORS}),
}
_VSS_ROOT = "Vehicle"


def one_year_after(moment: datetime) -> datetime:
    """The same date and time a calendar year later (29 February → 28 February)."""
    try:
        return moment.replace(year=moment.year + CONTRACT_RETENTION_YEARS)
    except ValueError:
        return moment.replace(year=moment.year + CONTRACT_RETENTION_YEARS, day=28)


def _is_path(key: object) -> bool:
    return isinstance(key, str) and (key == _VSS_ROOT or key.startswith(_VSS_ROOT + "."))


class PersonalValues:
    """Which stored values are personal, and a record body without them."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def category(self, path: str) -> Category:
        return self._catalogue.category_of(path)

    def is_personal(self, path: str) -> bool:
        return not self.category(path).technical

    def scrub(self, _kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """`body` without its personal values, or None when it holds none.

        Removed: every personal field (`PERSONAL_FIELDS`) that holds a value, and every VSS path of a
        personal category, as a key at any depth (`signals`, an event's `position`, the body itself).
        """
        removed: set[str] = set()
        fields: set[str] = set()
        scrubbed = self._scrub_map(body, removed, fields, 0)
        if not removed:
            return None
        for key, new in ((REMOVED_KEY, removed), (FIELDS_REMOVED_KEY, fields)):
            earlier = body.get(key)
            if isinstance(earlier, list):
                new |= {c for c in earlier if isinstance(c, str)}
            if new:
                scrubbed[key] = sorted(new)
        return scrubbed

    def _scrub_map(self, value: dict[Any, Any], removed: set[str], fields: set[str], depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        paths = any(_is_path(k) for k in value)
        for key, item in value.items():
            if key in (REMOVED_KEY, FIELDS_REMOVED_KEY) and depth == 0:
                continue  # merged by scrub
            if isinstance(key, str) and key in PERSONAL_FIELDS and item is not None:
                removed |= {c.value for c in PERSONAL_FIELDS[key]}
                fields.add(key)
                continue
            if _is_path(key):
                category = self.category(key)
                if not category.technical:
                    removed.add(category.value)
                    continue
            elif paths and not isinstance(key, str):
                removed.add(UNCLASSIFIED)  # in a map of paths, a key that cannot be one: not judged, not kept
                continue
            out[key] = self._scrub_value(item, removed, fields, depth + 1)
        return out

    def _scrub_value(self, item: Any, removed: set[str], fields: set[str], depth: int) -> Any:
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            removed.add(UNCLASSIFIED)
            return None
        if isinstance(item, dict):
            return self._scrub_map(item, removed, fields, depth)
        if isinstance(item, list):
            return [self._scrub_value(i, removed, fields, depth + 1) for i in item]
        return item


def financial_cutoff(today: date) -> date:
    """Invoices whose last transaction is before this day are due: 10 years from the end of its year."""
    return date(today.year - FINANCIAL_RETENTION_YEARS, 1, 1)


class SideTables:
    """The backend's tables beside the records, which other modules write and retention cleans:
    `psap_msds` (backend_stub.psap: the 112 PSAP's MSDs, with position) and `invoices`
    (backend_stub.invoice_store). Each is left alone when it does not exist in the file."""

    def __init__(self, database: Path) -> None:
        self._db = open_database(database, "")

    def close(self) -> None:
        self._db.close()

    def _has(self, table: str) -> bool:
        row = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
        return row is not None

    def scrub_psap_msds(self, received_by: datetime) -> int:
        """Take the position and the raw MSD out of PSAP rows received at or before `received_by`."""
        if not self._has("psap_msds"):
            return 0
        with transaction(self._db):
            cursor = self._db.execute(
                "UPDATE psap_msds SET latitude_deg=NULL, longitude_deg=NULL, raw_hex='' "
                "WHERE received_ms <= ? AND (raw_hex != '' OR latitude_deg IS NOT NULL OR longitude_deg IS NOT NULL)",
                (to_millis(received_by),),
            )
        return cursor.rowcount

    def delete_old_invoices(self, today: date) -> int:
        """Delete paid invoices whose last transaction (invoice or payment) is in a year ended 10 years ago."""
        if not self._has("invoices"):
            return 0
        with transaction(self._db):
            cursor = self._db.execute(
                "DELETE FROM invoices WHERE paid IS NOT NULL AND max(paid, invoiced) < ?",
                (financial_cutoff(today).isoformat(),),
            )
        return cursor.rowcount


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionReport:
    records_scrubbed: int = 0  # bodies whose personal values were taken out
    last_values_deleted: int = 0
    links_deleted: int = 0
    psap_msds_scrubbed: int = 0
    invoices_deleted: int = 0
    cardata_rows_deleted: int = 0

    def __str__(self) -> str:
        return (
            f"{self.records_scrubbed} record(s) scrubbed of personal values, {self.last_values_deleted} personal "
            f"last value(s) deleted, {self.links_deleted} ended contract(s) deleted, {self.psap_msds_scrubbed} "
            f"PSAP MSD(s) scrubbed, {self.invoices_deleted} invoice(s) of 10 years ago deleted, "
            f"{self.cardata_rows_deleted} CarData row(s) of them deleted"
        )


class RetentionJob:
    def __init__(
        self,
        store: BackendStore,
        accounts: AccountStore,
        personal: PersonalValues,
        clock: Clock,
        *,
        side: SideTables | None = None,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._personal = personal
        self._clock = clock
        self._side = side  # the PSAP's MSDs and the invoices; None: a store without them
        # CarData's rows left without their link or account: rows deleted (None: CarData not served).
        self.cardata: Callable[[], int] | None = None

    def after_owner_change(self, vin: str, epoch: bytes, seq: int) -> RetentionReport:
        """The previous owner's personal data: everything before the owner-change record, now."""
        before = self._store.order_of(vin, epoch, seq)
        if before is None:
            _LOGGER.warning("owner change of %s: epoch %s unknown, nothing scrubbed", vin, epoch.hex() or "legacy")
            return RetentionReport()
        now = self._clock.now()
        report = RetentionReport(
            records_scrubbed=self._store.scrub_records(self._personal.scrub, now, vin=vin, before=before),
            last_values_deleted=self._store.delete_last_values(self._personal.is_personal, vin=vin, before=before),
        )
        if report.records_scrubbed or report.last_values_deleted:
            self._store.checkpoint()  # the old page images in the -wal file hold the deleted values
        _LOGGER.info("owner change of %s: previous owner's personal data removed: %s", vin, report)
        return report

    def run(self) -> RetentionReport:
        """One pass: personal data received 4 weeks ago or earlier, the previous owners' personal data,
        contracts ended a year ago or earlier, invoices of ten years ago."""
        now = self._clock.now()
        cutoff = now - PERSONAL_RETENTION
        scrubbed = self._store.scrub_records(self._personal.scrub, now, received_by=cutoff)
        deleted = self._store.delete_last_values(self._personal.is_personal, received_by=cutoff)
        for vin, epoch, seq in self._accounts.owner_changes():  # records of the old owner that came late
            late = self.after_owner_change(vin, epoch, seq)
            scrubbed += late.records_scrubbed
            deleted += late.last_values_deleted
        links = self._accounts.delete_ended_links(lambda ended: one_year_after(ended) <= now)
        # Every pass, not only when links went: a pass that stopped in between is finished by the next.
        cardata = 0 if self.cardata is None else self.cardata()
        psap = invoices = 0
        if self._side is not None:
            psap = self._side.scrub_psap_msds(cutoff)
            invoices = self._side.delete_old_invoices(now.astimezone(UTC).date())
        report = RetentionReport(
            records_scrubbed=scrubbed,
            last_values_deleted=deleted,
            links_deleted=links,
            psap_msds_scrubbed=psap,
            invoices_deleted=invoices,
            cardata_rows_deleted=cardata,
        )
        if scrubbed or deleted or links or psap or invoices or cardata:
            self._store.checkpoint()  # the old page images in the -wal file hold the deleted values
        _LOGGER.info("retention pass: %s", report)
        return report
