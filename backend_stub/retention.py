"""Retention: the backend keeps data only as long as the terms' privacy part allows.

- Personal data goes after 4 weeks (part B: "Die verarbeiteten personenbezogenen Daten werden
  automatisch nach 4 Wochen gelöscht"): every stored value of a personal category — position and
  movement, user profile, environment, traffic, sensors: every category but the technical ones —
  is taken out of the records and the last values once it was *received* 4 weeks ago (28 days, to
  the millisecond: at exactly 28 days it is due). The backend's own clock decides, never the
  vehicle's stamp, which a vehicle clock that jumps would make meaningless.
- Technical vehicle data stays (part D: status and maintenance data "werden am Ende des Lebenszyklus
  des Fahrzeugs gelöscht"): the records themselves stay too, so their sequence numbers still
  deduplicate a resend and still close a gap.
- Contract data goes one year after the contract ended (part A: "Die Vertragsdaten werden automatisch
  1 Jahr nach Ablauf des Vertrages gelöscht"): an ended account link, its consents, and an account
  left without any link. One year is a calendar year (an end on 1 June 2027 is deleted on 1 June 2028,
  366 days later); an end on 29 February counts to 28 February.
- After an owner change (AGB 7.2) the previous owner's personal data goes at once: everything before
  the owner-change record in the vehicle's own order, including records that arrive late.

Which category a path has is the catalogue's (`Catalogue.category_of`). A value the job cannot
classify — a key of a record body that is not text — is treated as personal: deleting too much is
the safe side. `RetentionJob.run` is one pass; `run_periodically` is the backend's task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend_stub.accounts import AccountStore
from backend_stub.store import BackendStore
from tcu.clock import Clock
from tcu.services.catalogue import Catalogue, Category

_LOGGER = logging.getLogger(__name__)

PERSONAL_RETENTION = timedelta(weeks=4)
CONTRACT_RETENTION_YEARS = 1
# Privacy part D: status and maintenance data are technical vehicle data; every other category of
# part B is (possibly) personal.
TECHNICAL = frozenset({Category.VEHICLE_STATUS, Category.MAINTENANCE})
REMOVED_KEY = "personal_removed"  # what the job took out of a body, for a person reading it later
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
        return self.category(path) not in TECHNICAL

    def scrub(self, _kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """`body` without its personal values, or None when it holds none.

        Values are found where the protocol puts them: a map of VSS paths (`signals`, an event's
        `position`, ...) or a VSS path as a key of the body itself.
        """
        removed: set[str] = set()
        scrubbed: dict[str, Any] = {}
        for key, value in body.items():
            if _is_path(key):
                category = self.category(key)
                if category not in TECHNICAL:
                    removed.add(category.value)
                    continue
            elif isinstance(value, dict) and value and any(_is_path(k) for k in value):
                kept = {}
                for path, item in value.items():
                    if not isinstance(path, str):
                        removed.add("unclassified")
                        continue
                    category = self.category(path)
                    if category in TECHNICAL:
                        kept[path] = item
                    else:
                        removed.add(category.value)
                scrubbed[key] = kept
                continue
            scrubbed[key] = value
        if not removed:
            return None
        earlier = body.get(REMOVED_KEY)
        if isinstance(earlier, list):
            removed |= {c for c in earlier if isinstance(c, str)}
        scrubbed[REMOVED_KEY] = sorted(removed)
        return scrubbed


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionReport:
    records_scrubbed: int = 0  # bodies whose personal values were taken out
    last_values_deleted: int = 0
    links_deleted: int = 0

    def __str__(self) -> str:
        return (
            f"{self.records_scrubbed} record(s) scrubbed of personal values, {self.last_values_deleted} personal "
            f"last value(s) deleted, {self.links_deleted} ended contract(s) deleted"
        )


class RetentionJob:
    def __init__(self, store: BackendStore, accounts: AccountStore, personal: PersonalValues, clock: Clock) -> None:
        self._store = store
        self._accounts = accounts
        self._personal = personal
        self._clock = clock

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
        contracts ended a year ago or earlier."""
        now = self._clock.now()
        cutoff = now - PERSONAL_RETENTION
        scrubbed = self._store.scrub_records(self._personal.scrub, now, received_by=cutoff)
        deleted = self._store.delete_last_values(self._personal.is_personal, received_by=cutoff)
        for vin, epoch, seq in self._accounts.owner_changes():  # records of the old owner that came late
            late = self.after_owner_change(vin, epoch, seq)
            scrubbed += late.records_scrubbed
            deleted += late.last_values_deleted
        links = self._accounts.delete_ended_links(lambda ended: one_year_after(ended) <= now)
        report = RetentionReport(records_scrubbed=scrubbed, last_values_deleted=deleted, links_deleted=links)
        if scrubbed or deleted or links:
            self._store.checkpoint()  # the old page images in the -wal file hold the deleted values
        _LOGGER.info("retention pass: %s", report)
        return report


async def run_periodically(
    job: RetentionJob,
    interval_s: float,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """The backend's retention task: a pass at start and every `interval_s`; a failing pass is logged
    and the next one tries again."""
    while True:
        try:
            job.run()
        except Exception:  # retention must never stop the backend; the next pass retries
            _LOGGER.exception("retention pass failed; retrying in %g s", interval_s)
        await sleep(interval_s)
