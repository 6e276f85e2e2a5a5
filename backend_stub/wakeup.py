"""An `asyncio.Event` that any thread may set.

Ingest's observers run on the backend's database thread (`backend_stub.database_thread`), inside its
transaction; what they wake (a service's loop, a stub's waiters) waits on the event loop.
"""

from __future__ import annotations

import asyncio
import threading


class Wakeup:
    """An `asyncio.Event` that any thread may set.

    The loop it wakes is the one that first waits on it; a `set` before that is remembered.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._early = False  # set before any loop waited

    def set(self) -> None:
        with self._lock:
            loop = self._loop
            if loop is None:
                self._early = True
                return
        if threading.get_ident() == self._loop_thread:
            self._event.set()
        else:
            loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        with self._lock:
            self._early = False
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set() or self._early

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Until set, or `timeout_s` passed; True when set."""
        with self._lock:
            if self._loop is None:
                self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
            if self._early:
                self._early = False
                self._event.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        except TimeoutError:
            return False
        return True
