"""One thread that owns a database, so that its disk work (fsyncs included) never runs on the event loop.

Jobs run on the thread one at a time, in the order they were handed over; a job handed over with
`call` delivers its result or exception to the event loop as a future. The thread is not a daemon:
at interpreter exit it still finishes what it was given, so a record handed over is not lost to a
shutdown that did not wait for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Final, TypeVar

from tcu.errors import StorageError

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


def _end() -> None:
    """The job after the last one: the thread returns when it takes it."""


_END: Final = _end


class WriterThread:
    def __init__(self, name: str) -> None:
        self._name = name
        # A C queue and a plain lock, not a Condition: a fleet process hands over a job per record per
        # vehicle, and Condition.notify's Python-level waiter locks were a fifth of its CPU.
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # `running` and the jobs put under it: none after the last
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopping

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self._name} started twice")
            self._thread = threading.Thread(target=self._run, name=self._name)
            self._thread.start()

    def post(self, job: Callable[[], None]) -> None:
        """Run `job` after everything handed over before it; nobody waits for it (a failure is logged)."""
        with self._lock:
            if not self.running:
                raise StorageError(f"{self._name} is not running: the queue is not open")
            self._jobs.put(job)

    def call(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Run `job` after everything handed over before it; its result or exception on the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.post(lambda: _run_into(job, loop, future))
        return future

    async def stop(self, last: Callable[[], object]) -> None:
        """Refuse new jobs, run those handed over, then `last` (closing the database), then end."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        with self._lock:
            thread = self._thread
            if thread is None or self._stopping:
                return
            self._stopping = True
            self._jobs.put(lambda: _run_into(last, loop, future))
            self._jobs.put(_END)
        try:
            await future
        finally:
            if future.done():
                thread.join()  # at once: its queue is empty and it is stopping
            # Cancelled while waiting: the thread finishes on its own (it is not a daemon).

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _END:
                return
            try:
                job()
            except Exception:
                _LOGGER.exception("%s: a job failed", self._name)


def _run_into(job: Callable[[], T], loop: asyncio.AbstractEventLoop, future: asyncio.Future[T]) -> None:
    """On the thread: run `job` and hand its outcome to `future` on its loop."""
    try:
        result = job()
    except Exception as exc:
        deliver(loop, functools.partial(_settle_error, future, exc))  # `exc` is unbound after the block
    else:
        deliver(loop, functools.partial(_settle, future, result))


def deliver(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """From the thread, run `callback` on the loop; a loop already closed has nobody left to tell."""
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        _LOGGER.debug("event loop closed; an outcome was not delivered")


def _settle(future: asyncio.Future[T], result: T) -> None:
    if not future.done():  # a caller that was cancelled no longer waits
        future.set_result(result)


def _settle_error(future: asyncio.Future[T], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
