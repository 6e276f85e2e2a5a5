"""One timer per event loop and period for the periodic callbacks of many agents.

A fleet process runs thousands of agents on one event loop. An agent's own `sleep` loop costs a timer
handle, a task step and a future per tick; the event ticks alone (every 0.25 s) were four of each per
vehicle-second. `every(period_s, callback)` instead adds the callback to one task per loop and period,
which calls every registered callback in turn after each period.

For the awaiting task it behaves like `while True: await asyncio.sleep(period_s); callback()`: it runs
until cancelled, and a callback that raises ends it with that exception (the other callbacks go on).
The callbacks run on the loop's shared schedule, so the first call comes within one period, not after
exactly one.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

_TICKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Ticker]] = weakref.WeakKeyDictionary()


class _Ticker:
    """The task calling one loop's callbacks of one period; it ends when the last one leaves."""

    def __init__(self, period_s: float, tickers: dict[float, _Ticker]) -> None:
        self._period_s = period_s
        self._tickers = tickers
        # Callback -> the future its `every` awaits. A dict keeps the order they came in.
        self._waiting: dict[object, tuple[Callable[[], None], asyncio.Future[None]]] = {}
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"shared-tick-{period_s:g}s")

    def add(self, callback: Callable[[], None]) -> tuple[object, asyncio.Future[None]]:
        key = object()  # one entry per `every`, even for the same callback twice
        done = asyncio.get_running_loop().create_future()
        self._waiting[key] = (callback, done)
        return key, done

    def remove(self, key: object) -> None:
        self._waiting.pop(key, None)
        if not self._waiting:
            self._task.cancel()
            if self._tickers.get(self._period_s) is self:
                del self._tickers[self._period_s]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            for key, (callback, done) in list(self._waiting.items()):
                if done.done():  # failed earlier in this round, or its waiter was cancelled
                    continue
                try:
                    callback()
                except Exception as exc:  # ends that callback's `every`, as its own loop would have ended
                    done.set_exception(exc)
                    self._waiting.pop(key, None)


async def every(period_s: float, callback: Callable[[], None]) -> None:
    """Call `callback` every `period_s` seconds on the loop's shared tick until cancelled; raises what
    the callback raises."""
    if not period_s > 0:
        raise ValueError(f"a tick period must be > 0 s, got {period_s!r}")
    tickers = _TICKERS.setdefault(asyncio.get_running_loop(), {})
    ticker = tickers.get(period_s)
    if ticker is None:
        ticker = tickers[period_s] = _Ticker(period_s, tickers)
    key, done = ticker.add(callback)
    try:
        await done
    finally:
        ticker.remove(key)
