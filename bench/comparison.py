"""Ours against a baseline on a shared, noisy machine: interleaved rounds, min/median, one ratio.

    samples = await interleave([ours, baseline], rounds=3)   # ours, base, ours, base, ours, base
    ours, base = (Figures.of(values) for values in samples)
    ratio(ours, base, Better.HIGHER)                           # ours / base: above 1, ours is better

Up to seven agents share the machine's two cores, so an absolute figure swings with whatever else runs;
measured in alternation, ours and its baseline see the same load and their ratio holds. The ratio is
always oriented so that higher is better: ours/baseline for rates, baseline/ours for latencies and memory.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

ROUNDS = 3

Contender = Callable[[], Awaitable[float]]


class Better(enum.Enum):
    """Which way a row's figure is better."""

    HIGHER = "higher"  # rates: records/s, frames/s
    LOWER = "lower"  # latencies, memory, CPU time


@dataclass(frozen=True, slots=True)
class Figures:
    """One contender's values over the rounds, in the order they were measured."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Figures:
        if not values:
            raise ValueError("figures need at least one measured value")
        return cls(tuple(values))

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def ratio(ours: Figures, baseline: Figures, better: Better) -> float:
    """Median against median, oriented so that above 1 means ours is better than the baseline."""
    if better is Better.HIGHER:
        return ours.median / baseline.median
    return baseline.median / ours.median


async def interleave(contenders: Sequence[Contender], rounds: int = ROUNDS) -> list[list[float]]:
    """Each contender once per round, in the given order (ours first), `rounds` times; values per contender."""
    if rounds < 1:
        raise ValueError(f"at least one round, not {rounds}")
    samples: list[list[float]] = [[] for _ in contenders]
    for _ in range(rounds):
        for values, contender in zip(samples, contenders, strict=True):
            values.append(await contender())
    return samples
