"""How late an event loop runs its callbacks: a periodic task that measures its own oversleep.

A loop that keeps up wakes the task within a millisecond of its deadline; one that is busy (too many
vehicles in one process) wakes it late by however long the callbacks ahead of it took. The lateness
is what every timer on that loop sees: telemetry taken late, an ack handled late.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class LagSummary:
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class LoopLag:
    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s = period_s
        self.samples_ms: list[float] = []

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period_s)
            self.samples_ms.append((loop.time() - start - self.period_s) * 1000)

    def summary(self) -> LagSummary:
        return summarise(self.samples_ms)


def summarise(samples_ms: list[float]) -> LagSummary:
    """p50, p99 and the worst of `samples_ms` (zeros without two samples)."""
    if len(samples_ms) < 2:
        return LagSummary(samples=len(samples_ms), p50_ms=0.0, p99_ms=0.0, max_ms=max(samples_ms, default=0.0))
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")  # never past the worst sample
    return LagSummary(
        samples=len(samples_ms), p50_ms=round(cuts[49], 1), p99_ms=round(cuts[98], 1), max_ms=round(max(samples_ms), 1)
    )
