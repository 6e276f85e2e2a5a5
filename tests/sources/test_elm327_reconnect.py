"""tcu.sources.reconnect: the pure backoff and the loop every serial source runs in."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcu.backoff import Backoff
from tcu.errors import DeviceGoneError, ProtocolError
from tcu.sources.reconnect import ReconnectLoop, backoff_delay


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.01, max_value=5),
    cap=st.floats(min_value=5, max_value=300),
    seed=st.integers(),
)
def test_backoff_is_capped_and_jittered_within_its_ceiling(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(attempt, base_s=base, cap_s=cap, rng=random.Random(seed))
    ceiling = min(cap, base * 2 ** min(attempt, 32))
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_is_pure_given_the_rng_state() -> None:
    first = [backoff_delay(n, base_s=0.5, cap_s=30, rng=random.Random(7)) for n in range(10)]
    again = [backoff_delay(n, base_s=0.5, cap_s=30, rng=random.Random(7)) for n in range(10)]
    assert first == again
    assert backoff_delay(3, base_s=0.5, cap_s=30, rng=random.Random(1), jitter=0) == 4.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="0 < base"):
        backoff_delay(0, base_s=0, cap_s=1, rng=random.Random())


async def test_loop_backs_off_resets_when_healthy_and_survives_bugs() -> None:
    sleeps: list[float] = []
    reasons: list[str] = []
    outcomes: list[BaseException | None] = [
        DeviceGoneError("unplugged"),
        ProtocolError("garbage"),
        OSError(5, "Input/output error"),
        None,  # a healthy session that then fails
        KeyError("a bug"),
    ]

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) == len(outcomes):
            raise asyncio.CancelledError

    loop = ReconnectLoop(
        name="test",
        backoff=Backoff(base_s=1, cap_s=4, jitter=0),
        rng=random.Random(0),
        on_down=reasons.append,
        sleep=sleep,
    )

    async def session() -> None:
        outcome = outcomes[len(sleeps)]
        if outcome is None:
            loop.healthy()
            raise DeviceGoneError("gone after a while")
        raise outcome

    with pytest.raises(asyncio.CancelledError):
        await loop.run(session)
    assert sleeps == [1, 2, 4, 1, 2]
    assert reasons[0] == "DeviceGoneError: unplugged"
    assert reasons[2] == "OSError: [Errno 5] Input/output error"
    assert reasons[4] == "unexpected KeyError: 'a bug'"
    assert loop.attempt == 2


async def test_a_failing_on_down_does_not_stop_the_loop() -> None:
    calls = 0

    def on_down(_: str) -> None:
        raise RuntimeError("subscriber broke")

    async def sleep(_: float) -> None:
        raise asyncio.CancelledError

    async def session() -> None:
        nonlocal calls
        calls += 1
        raise DeviceGoneError("x")

    loop = ReconnectLoop(name="t", backoff=Backoff(), rng=random.Random(0), on_down=on_down, sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        await loop.run(session)
    assert calls == 1
