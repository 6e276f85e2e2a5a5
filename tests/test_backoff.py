from __future__ import annotations

import random

import pytest

from tcu.backoff import Backoff


def test_delay_grows_exponentially_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(base_s=0.5, cap_s=10.0, jitter=0.0)
    rng = random.Random(1)
    assert [backoff.delay(n, rng) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(10_000, rng) == 10.0


def test_jitter_stays_within_its_band() -> None:
    backoff = Backoff(base_s=1.0, cap_s=8.0, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(3, rng) for _ in range(500)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 3.0  # a fleet really is spread out


@pytest.mark.parametrize(("base", "cap", "jitter"), [(0.0, 1.0, 0.5), (2.0, 1.0, 0.5), (1.0, 2.0, 1.5)])
def test_invalid_parameters_are_refused(base: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(base_s=base, cap_s=cap, jitter=jitter)
