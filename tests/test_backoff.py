from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.01, max_value=5),
    cap=st.floats(min_value=5, max_value=300),
    seed=st.integers(),
)
def test_backoff_is_capped_and_jittered_within_its_ceiling(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = Backoff(base_s=base, cap_s=cap).delay(attempt, random.Random(seed))
    ceiling = min(cap, base * 2 ** min(attempt, 32))
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_is_pure_given_the_rng_state() -> None:
    first = [Backoff(base_s=0.5, cap_s=30).delay(n, random.Random(7)) for n in range(10)]
    again = [Backoff(base_s=0.5, cap_s=30).delay(n, random.Random(7)) for n in range(10)]
    assert first == again
    assert Backoff(base_s=0.5, cap_s=30, jitter=0).delay(3, random.Random(1)) == 4.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="0 < base"):
        Backoff(base_s=0, cap_s=1)
