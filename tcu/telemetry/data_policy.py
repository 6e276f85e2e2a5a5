"""Which signals may be collected for upload: the customer's consent and, where required, a running service.

The eCall reads the vehicle state directly and is never subject to this policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tcu.services.catalogue import Catalogue, Category
from tcu.services.entitlements import Entitlements
from tcu.services.personal import PersonalData
from tcu.services.sim import SimState


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str


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
        if not self._personal().allows(category):
            return Verdict(False, "blocked by the customer's privacy setting")
        if not self._require_services:
            return Verdict(True, "allowed")
        entitlements = self._entitlements()
        if entitlements.sim is not SimState.ACTIVE:
            return Verdict(False, f"SIM is {entitlements.sim.value}: no telematics")
        if category not in entitlements.categories(self._catalogue):
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
