"""Named timers of a sans-I/O call machine (the 112 eCall's T2, T5, ..., the call centre's answer timer).

The machines keep no clock: each timer is the monotonic time it is due, the caller asks for the next one
(`next_due`) and feeds a tick then, and the machine takes the due timers in order (`expire`).
"""

from __future__ import annotations

from collections.abc import Iterator


class Deadlines(dict[str, float]):
    """Timer name → monotonic time it is due; set, pop and clear as a dict."""

    def next_due(self) -> float | None:
        return min(self.values(), default=None)

    def expire(self, now: float) -> Iterator[str]:
        """Remove and yield each timer due by `now`, earliest first.

        The handler of one timer may cancel or restart another: each is looked at again before it is
        taken, so a restarted timer waits for its new time and a cancelled one is not taken.
        """
        for name in sorted(self, key=self.__getitem__):
            if self.get(name, float("inf")) <= now:
                del self[name]
                yield name
