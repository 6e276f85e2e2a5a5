"""The capability report: what the vehicle can deliver, per data category and how often.

Published at boot and after each applied provisioning file (and when a term ends), so the backend
knows what to expect without asking the car.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from tcu.services.catalogue import Category
from tcu.services.entitlements import Entitlements
from tcu.telemetry.data_policy import DataPolicy


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
