"""The backend's periodic database jobs (retention, payment checks): a pass at start and one every interval
on the database thread, a failing pass logged with its reason and the next one run, a clean cancel.
The interval is an injected sleep the test releases: nothing waits in real time."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import AsyncIterator

import pytest

from backend_stub.database_thread import DatabaseThread
from backend_stub.periodic import every
from tests.settle import settle


class Intervals:
    """The injected sleep: each interval asked for ends when the test releases it."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._released: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self._released.get()

    def release(self) -> None:
        self._released.put_nowait(None)


class Job:
    """A pass that notes the thread it ran on, and fails when told to."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.failing: Exception | None = None

    def __call__(self) -> None:
        self.threads.append(threading.current_thread().name)
        if self.failing is not None:
            raise self.failing

    @property
    def passes(self) -> int:
        return len(self.threads)


@pytest.fixture
async def database() -> AsyncIterator[DatabaseThread]:
    database = DatabaseThread("test-periodic-db")
    yield database
    database.close()


async def _cancelled(task: asyncio.Task[object]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_job_runs_at_start_then_every_interval_on_the_database_thread(database: DatabaseThread) -> None:
    intervals, job = Intervals(), Job()
    task = asyncio.create_task(every(3600.0, "retention pass", job, database, sleep=intervals.sleep))
    assert await settle(lambda: job.passes == 1 and len(intervals.asked) == 1)  # at start, no interval first
    for passes in (2, 3):
        intervals.release()
        assert await settle(lambda passes=passes: job.passes == passes and len(intervals.asked) == passes)
    await _cancelled(task)
    assert intervals.asked == [3600.0, 3600.0, 3600.0]
    assert all(name.startswith("test-periodic-db") for name in job.threads), job.threads


async def test_a_failing_pass_is_logged_with_its_reason_and_the_next_one_runs(
    database: DatabaseThread, caplog: pytest.LogCaptureFixture
) -> None:
    intervals, job = Intervals(), Job()
    job.failing = RuntimeError("database is locked")
    with caplog.at_level(logging.ERROR, logger="backend_stub.periodic"):
        task = asyncio.create_task(every(600.0, "payment check", job, database, sleep=intervals.sleep))
        assert await settle(lambda: job.passes == 1 and len(intervals.asked) == 1)  # failed, and waits its interval
    assert "payment check failed; trying again in 600 s" in caplog.text
    assert "RuntimeError: database is locked" in caplog.text  # the traceback carries the reason
    job.failing = None
    intervals.release()
    assert await settle(lambda: job.passes == 2 and len(intervals.asked) == 2)
    assert not task.done()  # the failure did not end the job
    await _cancelled(task)


async def test_cancelled_while_waiting_it_ends_at_once_without_another_pass(
    database: DatabaseThread, caplog: pytest.LogCaptureFixture
) -> None:
    intervals, job = Intervals(), Job()
    task = asyncio.create_task(every(3600.0, "retention pass", job, database, sleep=intervals.sleep))
    assert await settle(lambda: len(intervals.asked) == 1)
    await _cancelled(task)
    intervals.release()
    await asyncio.sleep(0)
    assert job.passes == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_cancelled_during_a_pass_the_pass_finishes_on_the_thread_and_no_other_starts(
    database: DatabaseThread,
) -> None:
    intervals = Intervals()
    started, go_on, finished = threading.Event(), threading.Event(), threading.Event()

    def long_pass() -> None:  # a retention pass inside its transaction
        started.set()
        go_on.wait(timeout=10)
        finished.set()

    task = asyncio.create_task(every(3600.0, "retention pass", long_pass, database, sleep=intervals.sleep))
    assert await settle(started.is_set)
    await _cancelled(task)
    assert not finished.is_set()  # the loop did not wait for the thread
    go_on.set()
    await database.run(lambda: None)  # behind the pass on the one thread: it ran to its end
    assert finished.is_set()
    assert intervals.asked == []  # and no interval, so no next pass, was started


@pytest.mark.parametrize("interval_s", [0.0, -1.0, math.nan, math.inf, True])
async def test_an_interval_that_is_no_positive_number_of_seconds_is_refused_with_the_reason(
    database: DatabaseThread, interval_s: float
) -> None:
    job = Job()
    with pytest.raises(ValueError, match=r"retention pass: the interval must be a positive number of seconds"):
        await every(interval_s, "retention pass", job, database, sleep=Intervals().sleep)
    assert job.passes == 0
