"""One thread that owns one or more databases, so that their disk work (fsyncs included) never runs on the event loop.

Jobs run on the thread one at a time, in the order they were handed over; a job handed over with
`call` delivers its result or exception to the event loop as a future. The thread is not a daemon:
at interpreter exit it still finishes what it was given, so a record handed over is not lost to a
shutdown that did not wait for it.

Several databases may share one thread, each through its own `WriterLane`: a process running many
agents (a fleet) would otherwise keep a thread per queue, and pay a thread wake-up and a context switch
for nearly every record; a shared thread stays awake serving them all. A lane's jobs keep their order
(the thread's order is FIFO across all lanes); a lane's stop runs its last job and leaves the thread
running, for its owner to stop once every lane has stopped.

Outcomes reach their loop through one inbox per loop, shared by every writer thread: the first outcome
schedules the inbox's drain at once (nothing waits for later ones), and outcomes that arrive before the
loop ran it join that drain, instead of a `call_soon_threadsafe` (a handle, a self-pipe write, a wake-up)
each.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

from tcu.errors import StorageError

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


def _end() -> None:
    """The job after the last one: the thread returns when it takes it."""


_END: Final = _end


class Writer(Protocol):
    """What a database's user needs of its writer: a `WriterThread` of its own or a lane of a shared one."""

    @property
    def running(self) -> bool: ...

    def post(self, job: Callable[[], None]) -> None: ...

    def call(self, job: Callable[[], T]) -> asyncio.Future[T]: ...

    async def stop(self, last: Callable[[], object]) -> None: ...


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

    def lane(self, name: str) -> WriterLane:
        """A share of this thread for one database; its owner still stops the thread, after every lane."""
        return WriterLane(self, name)

    def post(self, job: Callable[[], None]) -> None:
        """Run `job` after everything handed over before it; nobody waits for it (a failure is logged)."""
        with self._lock:
            if not self.running:
                raise StorageError(f"{self._name} is not running: the queue is not open")
            self._jobs.put(job)

    def call(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Run `job` after everything handed over before it; its result or exception on the future."""
        return _call(self.post, job)

    async def stop(self, last: Callable[[], object]) -> None:
        """Refuse new jobs, run those handed over, then `last` (closing the database), then end."""
        closing, future = _with_outcome(last)
        with self._lock:
            thread = self._thread
            if thread is None or self._stopping:
                return
            self._stopping = True
            self._jobs.put(closing)
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


class WriterLane:
    """One database's share of a `WriterThread`: its jobs in order among the others', and a stop of its own."""

    def __init__(self, writer: WriterThread, name: str) -> None:
        self._writer = writer
        self._name = name
        self._lock = threading.Lock()  # the stop and the jobs posted under it: none after the last
        self._stopping = False

    @property
    def running(self) -> bool:
        return not self._stopping and self._writer.running

    def post(self, job: Callable[[], None]) -> None:
        """Run `job` after everything handed over before it (on any lane); nobody waits for it."""
        with self._lock:
            if self._stopping:
                raise StorageError(f"{self._name} is not running: the queue is not open")
            self._writer.post(job)

    def call(self, job: Callable[[], T]) -> asyncio.Future[T]:
        return _call(self.post, job)

    async def stop(self, last: Callable[[], object]) -> None:
        """Refuse new jobs on this lane, run those handed over, then `last`; the thread goes on."""
        closing, future = _with_outcome(last)
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            try:
                self._writer.post(closing)
            except StorageError:
                # The owner stopped the thread before this lane: whatever was handed over ran, `last` cannot.
                _LOGGER.warning("%s: its shared writer stopped first; its last job did not run", self._name)
                return
        await future


class _Inbox:
    """Outcomes on their way to one loop, from any thread; one scheduled drain at a time carries them all."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: `_inboxes` keys inboxes by their loop weakly, and a strong reference here kept every
        # finished loop (two per `tcu owner-change`, many in tests) and its inbox alive for good.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._waiting: list[Callable[[], None]] = []
        self._scheduled = False

    def put(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._waiting.append(callback)
            if self._scheduled:  # the drain the loop has yet to run takes this one too
                return
            self._scheduled = True
        loop = self._loop()
        try:
            if loop is not None:  # None: collected, closed long ago
                loop.call_soon_threadsafe(self._drain)
                return
        except RuntimeError:
            pass
        _LOGGER.debug("event loop closed; an outcome was not delivered")
        with self._lock:
            self._waiting.clear()  # nobody left to tell; `_scheduled` stays: a closed loop stays closed

    def _drain(self) -> None:
        """On the loop: the outcomes in the order they came; one that fails keeps no other from its caller."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
            self._scheduled = False
        for callback in waiting:
            try:
                callback()
            except Exception:
                _LOGGER.exception("an outcome's callback failed")


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def _call(post: Callable[[Callable[[], None]], None], job: Callable[[], T]) -> asyncio.Future[T]:
    wrapped, future = _with_outcome(job)
    post(wrapped)
    return future


def _with_outcome(job: Callable[[], T]) -> tuple[Callable[[], None], asyncio.Future[T]]:
    """`job` wrapped to hand its outcome to the returned future, on the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    return functools.partial(_run_into, job, loop, future), future


def _run_into(job: Callable[[], T], loop: asyncio.AbstractEventLoop, future: asyncio.Future[T]) -> None:
    """On the thread: run `job` and hand its outcome to `future` on its loop."""
    try:
        result = job()
    except Exception as exc:
        deliver(loop, functools.partial(_settle_error, future, exc))  # `exc` is unbound after the block
    else:
        deliver(loop, functools.partial(_settle, future, result))


def deliver(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """From a thread, run `callback` on the loop, after those delivered before it; a loop already closed
    has nobody left to tell."""
    inbox = _inboxes.get(loop)
    if inbox is None:
        with _inboxes_lock:
            inbox = _inboxes.setdefault(loop, _Inbox(loop))
    inbox.put(callback)


def _settle(future: asyncio.Future[T], result: T) -> None:
    if not future.done():  # a caller that was cancelled no longer waits
        future.set_result(result)


def _settle_error(future: asyncio.Future[T], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
