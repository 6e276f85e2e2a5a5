"""tcu.shared_tick.every: many agents' periodic callbacks on one timer per loop and period, each behaving
for its caller like its own `sleep` loop (runs until cancelled, ends with what its callback raises)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tcu.shared_tick import every
from tcu.virtual_time import VirtualTime, VirtualTimeLoop


def _run(main: Callable[[], Awaitable[None]]) -> None:
    # A period of 1 virtual second is 10 ms of real time.
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(VirtualTime.starting_now(100.0))) as runner:
        runner.run(main())  # type: ignore[arg-type]


class _Calls:
    """Who was called, in order; `reached(name, n)` waits until `name` was called n times."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self._changed = asyncio.Event()

    def callback(self, name: str, *, fail_at: int | None = None) -> Callable[[], None]:
        def call() -> None:
            self.order.append(name)
            self._changed.set()
            if self.order.count(name) == fail_at:
                raise RuntimeError(f"{name} broke")

        return call

    async def reached(self, name: str, count: int) -> None:
        while self.order.count(name) < count:
            self._changed.clear()
            await self._changed.wait()


def test_callbacks_of_one_period_are_called_each_tick_in_the_order_they_came_until_cancelled() -> None:
    async def main() -> None:
        calls = _Calls()
        first = asyncio.create_task(every(1.0, calls.callback("first")))
        second = asyncio.create_task(every(1.0, calls.callback("second")))
        await calls.reached("second", 3)
        assert calls.order == ["first", "second"] * 3
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await calls.reached("second", 5)
        assert calls.order[6:] == ["second", "second"]  # the cancelled one is called no more
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}, "the shared timer ends with its last callback"

    _run(main)


def test_a_failing_callback_ends_its_own_every_with_the_error_and_the_others_go_on() -> None:
    async def main() -> None:
        calls = _Calls()
        broken = asyncio.create_task(every(1.0, calls.callback("broken", fail_at=2)))
        other = asyncio.create_task(every(1.0, calls.callback("other")))
        with pytest.raises(RuntimeError, match="broken broke"):
            await broken
        await calls.reached("other", 4)
        assert calls.order.count("broken") == 2
        other.cancel()
        await asyncio.gather(other, return_exceptions=True)

    _run(main)


def test_callbacks_of_other_periods_keep_their_own_pace() -> None:
    async def main() -> None:
        calls = _Calls()
        fast = asyncio.create_task(every(1.0, calls.callback("fast")))
        slow = asyncio.create_task(every(4.0, calls.callback("slow")))
        await calls.reached("slow", 2)
        assert calls.order.count("fast") >= 6  # four times as often, give or take a tick at each end
        for task in (fast, slow):
            task.cancel()
        await asyncio.gather(fast, slow, return_exceptions=True)

    _run(main)


@pytest.mark.parametrize("period_s", [0.0, -1.0, float("nan")])
def test_a_period_that_is_not_positive_is_refused(period_s: float) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="must be > 0"):
            await every(period_s, lambda: None)

    _run(main)
