"""tcu.reconnect: the one loop every link runs in — serial sources, the MQTT uplink, the backend's clients.

The backoff itself is tests/test_backoff.py. Time is a `ManualClock` that the fake sleep moves on, so
"stayed up for the proof time" is exact and nothing really sleeps.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable

import pytest

from tcu.backoff import Backoff
from tcu.clock import ManualClock
from tcu.errors import DeviceGoneError, ProtocolError
from tcu.reconnect import ReconnectLoop
from tcu.sources.source_loop import device_failure_reason

NO_JITTER = Backoff(base_s=1, cap_s=4, jitter=0)


class Timeline:
    """A ManualClock whose sleeps advance it; cancels the loop after `stop_after` sleeps."""

    def __init__(self, stop_after: int) -> None:
        self.clock = ManualClock()
        self.sleeps: list[float] = []
        self._stop_after = stop_after

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.clock.advance(delay)
        if len(self.sleeps) >= self._stop_after:
            raise asyncio.CancelledError


def make_loop(timeline: Timeline, reasons: list[str], **options: object) -> ReconnectLoop:
    return ReconnectLoop(
        name="test",
        backoff=NO_JITTER,
        rng=random.Random(0),
        on_down=reasons.append,
        failure_reason=device_failure_reason,
        monotonic=timeline.clock.monotonic,
        sleep=timeline.sleep,
        **options,  # type: ignore[arg-type]
    )


async def run_until_cancelled(loop: ReconnectLoop, session: Callable[[], Awaitable[None]]) -> None:
    with pytest.raises(asyncio.CancelledError):
        await loop.run(session)


async def test_a_link_that_connects_and_drops_at_once_keeps_its_delay_growing() -> None:
    """The bug the MQTT loop had: resetting on every connect retried a flapping link at the base rate."""
    timeline, reasons = Timeline(stop_after=6), list[str]()
    loop = make_loop(timeline, reasons)

    async def session() -> None:
        loop.healthy()  # connected, even answered once ...
        timeline.clock.advance(0.5)  # ... and dropped half a second later
        raise DeviceGoneError("dropped")

    await run_until_cancelled(loop, session)
    assert timeline.sleeps == [1, 2, 4, 4, 4, 4]
    assert loop.attempt == 6
    assert reasons == ["DeviceGoneError: dropped"] * 6


async def test_a_link_that_stayed_up_past_the_proof_time_starts_again_from_the_base() -> None:
    timeline, reasons = Timeline(stop_after=5), list[str]()
    loop = make_loop(timeline, reasons)
    uptimes = iter([0.0, 0.0, 0.0, 4.0, 3.99])  # the proof time is the cap, 4 s

    async def session() -> None:
        loop.healthy()
        timeline.clock.advance(next(uptimes))
        raise DeviceGoneError("dropped")

    await run_until_cancelled(loop, session)
    # 4 s up: proven, back to the base; 3.99 s: not proven, growing again from there.
    assert timeline.sleeps == [1, 2, 4, 1, 2]


async def test_uptime_counts_only_from_healthy_not_from_opening() -> None:
    """A port that opens but whose device stays mute for a long time has proven nothing."""
    timeline, reasons = Timeline(stop_after=4), list[str]()
    loop = make_loop(timeline, reasons)

    async def session() -> None:
        timeline.clock.advance(60)  # open and mute for a minute
        raise DeviceGoneError("no answer")

    await run_until_cancelled(loop, session)
    assert timeline.sleeps == [1, 2, 4, 4]


async def test_only_the_first_healthy_of_a_session_starts_the_proof() -> None:
    """Readers call healthy() on every frame; the last frame must not restart the uptime."""
    timeline, reasons = Timeline(stop_after=3), list[str]()
    loop = make_loop(timeline, reasons)

    async def session() -> None:
        for _ in range(5):  # 5 frames 1 s apart: up 5 s in all, only 1 s since the last
            loop.healthy()
            timeline.clock.advance(1)
        raise DeviceGoneError("dropped")

    await run_until_cancelled(loop, session)
    assert timeline.sleeps == [1, 1, 1]


async def test_a_configured_proof_time_replaces_the_cap() -> None:
    timeline, reasons = Timeline(stop_after=4), list[str]()
    loop = make_loop(timeline, reasons, proven_after_s=0.25)
    assert loop.proven_after_s == 0.25

    async def session() -> None:
        loop.healthy()
        timeline.clock.advance(0.25)
        raise DeviceGoneError("dropped")

    await run_until_cancelled(loop, session)
    assert timeline.sleeps == [1, 1, 1, 1]


@pytest.mark.parametrize("proof", [-1.0, float("nan")])
def test_a_proof_time_that_could_never_or_always_hold_is_refused(proof: float) -> None:
    with pytest.raises(ValueError, match="proven_after_s"):
        ReconnectLoop(
            name="t", backoff=Backoff(), rng=random.Random(0), on_down=print, failure_reason=str, proven_after_s=proof
        )


async def test_device_failures_and_bugs_are_retried_with_their_reasons() -> None:
    timeline, reasons = Timeline(stop_after=5), list[str]()
    loop = make_loop(timeline, reasons)
    outcomes: list[BaseException | None] = [
        DeviceGoneError("unplugged"),
        ProtocolError("garbage"),
        OSError(5, "Input/output error"),
        None,  # a session that ends by itself
        KeyError("a bug"),
    ]

    async def session() -> None:
        outcome = outcomes[len(timeline.sleeps)]
        if outcome is not None:
            raise outcome

    await run_until_cancelled(loop, session)
    assert timeline.sleeps == [1, 2, 4, 4, 4]
    assert reasons == [
        "DeviceGoneError: unplugged",
        "ProtocolError: garbage",
        "OSError: [Errno 5] Input/output error",
        "session ended",
        "unexpected KeyError: 'a bug'",
    ]


async def test_without_retry_unexpected_a_bug_propagates_and_on_down_is_not_told() -> None:
    timeline, reasons = Timeline(stop_after=99), list[str]()
    loop = make_loop(timeline, reasons, retry_unexpected=False)

    async def session() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await loop.run(session)
    assert reasons == []
    assert timeline.sleeps == []


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

    loop = ReconnectLoop(
        name="t",
        backoff=Backoff(),
        rng=random.Random(0),
        on_down=on_down,
        failure_reason=device_failure_reason,
        sleep=sleep,
    )
    with pytest.raises(asyncio.CancelledError):
        await loop.run(session)
    assert calls == 1


async def test_cancelling_a_running_session_ends_the_loop_cleanly() -> None:
    """Cancellation is no failure: no on_down, no retry, the session's own cleanup runs."""
    reasons: list[str] = []
    cleaned = asyncio.Event()
    started = asyncio.Event()

    async def session() -> None:
        try:
            started.set()
            await asyncio.Event().wait()  # serving forever
        finally:
            cleaned.set()

    loop = ReconnectLoop(
        name="t", backoff=Backoff(), rng=random.Random(0), on_down=reasons.append, failure_reason=device_failure_reason
    )
    task = asyncio.create_task(loop.run(session))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()
    assert reasons == []


async def test_cancelling_during_the_backoff_wait_ends_the_loop_cleanly() -> None:
    reasons: list[str] = []
    sessions = 0

    async def session() -> None:
        nonlocal sessions
        sessions += 1
        raise DeviceGoneError("gone")

    loop = ReconnectLoop(
        name="t",
        backoff=Backoff(base_s=3600, cap_s=3600),  # the real loop clock: an hour that is never waited out
        rng=random.Random(0),
        on_down=reasons.append,
        failure_reason=device_failure_reason,
    )
    task = asyncio.create_task(loop.run(session))
    while not reasons:  # noqa: ASYNC110 - on_down is a plain callback; one loop turn at a time
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sessions == 1
    assert reasons == ["DeviceGoneError: gone"]


def test_the_loop_is_a_leaf_the_backend_may_import() -> None:
    """The backend runs this loop too: importing it must not load the agent's config, devices or eCall."""
    code = "import sys, tcu.reconnect; print(sorted(m for m in sys.modules if m.startswith('tcu')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['tcu', 'tcu.backoff', 'tcu.reconnect']"
