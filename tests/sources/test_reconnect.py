"""tcu.sources.reconnect: the loop every serial source runs in (the backoff itself: tests/test_backoff.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from tcu.backoff import Backoff
from tcu.errors import DeviceGoneError, ProtocolError
from tcu.sources.reconnect import ReconnectLoop


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
