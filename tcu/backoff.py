"""Capped, jittered exponential backoff as a pure function, for every reconnect loop in the agent."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    base_s: float = 0.5
    cap_s: float = 60.0
    jitter: float = 0.5  # fraction of the delay drawn at random, so a fleet does not reconnect in step

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"backoff needs 0 < base ({self.base_s}) <= cap ({self.cap_s})")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter {self.jitter} must be within [0, 1]")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0 = first retry)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt, 32))
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * rng.random()
