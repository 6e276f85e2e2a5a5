"""The capability report: what the vehicle can deliver, per data category and how often.

Published at boot, after each applied provisioning file (and when a term ends), and when signals of
a category not yet reported first arrive, so the backend knows what to expect without asking the car.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from tcu.services.catalogue import Category
from tcu.services.entitlements import Entitlements
from tcu.telemetry.data_policy import DataPolicy
from tcu.vehicle.state import Signal


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
        "categories": categories,
    }


class NewSignalWatch:
    """Re-sends the capability report when signals of a category not yet reported first appear.

    The boot report is made before the sources have delivered anything; without this it would say
    "no such signals on this vehicle" for every category while positions go out every second. A new
    path costs one set look-up on the hot path; the report waits `settle_s` so that the first readings
    of a start give one report, not one per category.
    """

    def __init__(self, *, policy: DataPolicy, report: Callable[[], None], settle_s: float = 1.0) -> None:
        self._policy = policy
        self._report = report
        self._settle_s = settle_s
        self._known_paths: set[str] = set()
        self._reported: set[Category] = set()
        self._changed = asyncio.Event()

    def reported(self, available_signals: Iterable[str]) -> None:
        """A report went out covering these signals."""
        self._reported = {self._policy.category_of(path) for path in available_signals}

    def on_signal(self, signal: Signal) -> None:
        if signal.path in self._known_paths:
            return
        self._known_paths.add(signal.path)
        if self._policy.category_of(signal.path) not in self._reported:
            self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(self._settle_s)
            self._changed.clear()
            self._report()
