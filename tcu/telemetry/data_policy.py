"""What may be collected for upload, and what may go up the uplink at all.

Three gates, in this order:

1. The SIM (AGB 3.3, 6.1), unconditionally: it is physical. Without an active SIM nothing collected
   in the car — telemetry, events — is sent, and `uplink_refusal` keeps anything else off the queue.
2. The customer's privacy settings (consent per category).
3. `require_services` ([telemetry] require_services, default false): a category is collected only
   while a running service needs it. Off on benches without provisioning, on in a production car.

The eCall reads the vehicle state directly and is never subject to this policy. While the SIM is not
active the uplink stays the provisioning channel (what a workshop's or the network's reactivation
path is in a real car): it carries only the vehicle's answers to the backend — provisioning results,
the capability report saying that nothing is transmitted and why, refusals of remote measures — the
queue's own overflow notices, and eCall records, which are never lost. Records collected while the
SIM was still active stay in the queue and are delivered: they were collected lawfully.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tcu.services.personal import PersonalData
from tcu.uplink.overflow_notice import OVERFLOW
from telematics_wire.catalogue import Catalogue, Category
from telematics_wire.entitlements import Entitlements
from telematics_wire.records import Record, RecordKind

# Event types that answer the backend or account for the queue: not data collected in the car. An
# owner change goes up too: it is what makes the backend delete the seller's personal data (AGB 7.2).
ANSWERS = frozenset({"provisioning_result", "capabilities", "measure_result", "owner_change", OVERFLOW})


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str


def uplink_refusal(record: Record, entitlements: Entitlements) -> str | None:
    """None when `record` may be queued for the backend; else why not (the SIM is not active)."""
    inactive = entitlements.inactive_reason()
    if inactive is None or record.kind is RecordKind.ECALL or record.body.get("type") in ANSWERS:
        return None
    kind = record.body.get("type", record.kind.value)
    return f"{kind} not sent: {inactive}; only eCall records and answers to the backend go up"


class DataPolicy:
    def __init__(
        self,
        *,
        catalogue: Catalogue,
        entitlements: Callable[[], Entitlements],
        personal: Callable[[], PersonalData],
        require_services: bool,
    ) -> None:
        self._catalogue = catalogue
        self._entitlements = entitlements
        self._personal = personal
        # A bench without provisioning sends everything consent allows; a production car needs a service.
        self._require_services = require_services

    def verdict(self, category: Category) -> Verdict:
        entitlements = self._entitlements()
        inactive = entitlements.inactive_reason()
        if inactive is not None:
            return Verdict(False, f"{inactive}; no telematics")
        if not self._personal().allows(category):
            return Verdict(False, "blocked by the customer's privacy setting")
        if self._require_services and category not in entitlements.categories(self._catalogue):
            return Verdict(False, "no running service uses this category")
        return Verdict(True, "allowed")

    def allows(self, path: str) -> bool:
        return self.verdict(self._catalogue.category_of(path)).allowed

    def allowed_paths(self, paths: Iterable[str]) -> set[str]:
        """The paths that may be collected, judging each category once (a snapshot has many paths)."""
        verdicts: dict[Category, bool] = {}
        allowed = set()
        for path in paths:
            category = self._catalogue.category_of(path)
            if category not in verdicts:
                verdicts[category] = self.verdict(category).allowed
            if verdicts[category]:
                allowed.add(path)
        return allowed

    def category_of(self, path: str) -> Category:
        return self._catalogue.category_of(path)
