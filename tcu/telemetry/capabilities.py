"""The capability report: what the vehicle can deliver, per data category and how often.

Published at boot, after each applied provisioning file (and when a term ends), when signals of a
category not yet reported first arrive, and when the customer changes a privacy setting, so the backend
knows what to expect without asking the car (CarData's capability service: "Die Fahrzeugfähigkeiten
können sich zu einem späteren Zeitpunkt ändern").
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tcu.telemetry.data_policy import DataPolicy
from tcu.vehicle.state import Signal
from telematics_wire.catalogue import Category
from telematics_wire.entitlements import Entitlements

_LOGGER = logging.getLogger(__name__)


def capability_report(
    *,
    entitlements: Entitlements,
    policy: DataPolicy,
    available_signals: Iterable[str],
    interval_s: float,
) -> dict[str, Any]:
    by_category: dict[Category, list[str]] = defaultdict(list)
    for path in sorted(available_signals):
        by_category[policy.category_of(path)].append(path)
    categories: dict[str, Any] = {}
    for category in Category:
        verdict = policy.verdict(category)
        categories[category.value] = {
            "transmitted": verdict.allowed and bool(by_category[category]),
            "reason": verdict.reason if by_category[category] else "no such signals on this vehicle",
            "signals": by_category[category],
            "interval_s": interval_s if verdict.allowed else None,
        }
    return {
        "type": "capabilities",
        "provisioning_version": entitlements.version,
        "sim": entitlements.sim.value,
        "legal_ecall": entitlements.legal_ecall,
        "intelligent_ecall": entitlements.intelligent_ecall,
        "services": {code: status.value for code, status in sorted(entitlements.statuses.items())},
        "running": sorted(entitlements.running),
        "suspended": sorted(entitlements.suspended),
        # Per code, the catalogue's services that run or are suspended (a code runs while any of its
        # services does: 6AP's unlimited Remote Services outlive its 2+1 Lademanagement).
        "services_running": {code: sorted(names) for code, names in sorted(entitlements.services_running.items())},
        "services_suspended": {code: sorted(names) for code, names in sorted(entitlements.services_suspended.items())},
        "categories": categories,
    }


class NewSignalWatch:
    """Re-sends the capability report when signals of a category not yet reported first appear, and
    when a privacy setting changed since the last report.

    The boot report is made before the sources have delivered anything; without this it would say
    "no such signals on this vehicle" for every category while positions go out every second. A new
    path costs one set look-up on the hot path; the report waits `settle_s` so that the first readings
    of a start give one report, not one per category.

    Privacy settings change in another process (`tcu privacy`), by an owner change or a remote
    measure's rollback; `consents` (the personal data store's `current()`, which re-reads a changed
    file) is compared every `poll_s` with what the last report was made under.
    """

    def __init__(
        self,
        *,
        policy: DataPolicy,
        report: Callable[[], None],
        settle_s: float = 1.0,
        consents: Callable[[], Mapping[Category, bool]] | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self._policy = policy
        self._report = report
        self._settle_s = settle_s
        self._consents = consents
        self._poll_s = poll_s
        self._known_paths: set[str] = set()
        self._reported: set[Category] = set()
        self._reported_consents: dict[Category, bool] | None = None
        self._changed = asyncio.Event()

    def reported(self, available_signals: Iterable[str]) -> None:
        """A report went out covering these signals (under the privacy settings in force now)."""
        self._reported = {self._policy.category_of(path) for path in available_signals}
        if self._consents is not None:
            self._reported_consents = dict(self._consents())

    def consents_changed(self) -> bool:
        """True when a privacy setting differs from the one the last report was made under."""
        if self._consents is None or self._reported_consents is None:
            return False
        current = dict(self._consents())
        if current == self._reported_consents:
            return False
        changed = sorted(c.value for c in Category if current.get(c) != self._reported_consents.get(c))
        self._reported_consents = current  # one report per change, even if the report itself fails
        _LOGGER.info("privacy setting changed (%s): capability report sent again", ", ".join(changed))
        return True

    def on_signal(self, signal: Signal) -> None:
        if signal.path in self._known_paths:
            return
        self._known_paths.add(signal.path)
        if self._policy.category_of(signal.path) not in self._reported:
            self._changed.set()

    def poll_consents(self) -> bool:
        """One poll of the privacy settings: report if one changed. True if a report was made."""
        if not self.consents_changed():
            return False
        self._report()
        return True

    def settled(self) -> bool:
        """The settle time after new signals is over: one report for them all. True if a report was made."""
        if not self._changed.is_set():
            return False
        self._changed.clear()
        self._report()
        return True

    async def run(self) -> None:
        # The steps are separate methods so that tests drive them by hand, with no real waiting.
        while True:
            try:
                # Not asyncio.wait_for: on 3.11 it swallows a cancellation that lands as the event is set,
                # and the agent's shutdown then waits on this loop forever.
                async with asyncio.timeout(self._poll_s):
                    await self._changed.wait()
            except TimeoutError:
                self.poll_consents()
                continue
            await asyncio.sleep(self._settle_s)
            self.settled()
