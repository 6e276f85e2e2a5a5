"""The queue's writer thread: jobs in the order handed over, outcomes on the loop, and a stop that runs
everything handed over before it, then the closing job, and refuses what comes after."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tcu.errors import StorageError
from tcu.uplink.writer_thread import WriterThread


async def test_jobs_run_in_order_and_their_outcomes_reach_the_loop() -> None:
    writer = WriterThread("test-writer")
    writer.start()
    ran: list[int] = []
    for number in range(200):
        writer.post(lambda number=number: ran.append(number))
    assert await writer.call(lambda: len(ran)) == 200
    assert ran == list(range(200))

    def fail() -> int:
        raise ValueError("disk gone")

    with pytest.raises(ValueError, match="disk gone"):
        await writer.call(fail)
    assert await writer.call(lambda: "still running") == "still running"
    await writer.stop(lambda: None)


async def test_stop_runs_what_was_handed_over_then_the_last_job_then_refuses() -> None:
    writer = WriterThread("test-writer")
    writer.start()
    gate = threading.Event()
    order: list[str] = []
    writer.post(gate.wait)  # holds the thread so that the jobs below are still queued at the stop
    writer.post(lambda: order.append("queued before the stop"))
    stopping = asyncio.create_task(writer.stop(lambda: order.append("last")))
    await asyncio.sleep(0)  # the stop has queued its last job behind the two above
    assert not writer.running
    with pytest.raises(StorageError, match="test-writer is not running"):
        writer.post(lambda: order.append("too late"))
    gate.set()
    await stopping
    assert order == ["queued before the stop", "last"]
    await writer.stop(lambda: order.append("again"))  # a second stop does nothing
    assert order == ["queued before the stop", "last"]


async def test_a_lane_stops_after_its_jobs_and_its_last_and_the_shared_thread_goes_on() -> None:
    writer = WriterThread("shared-writer")
    writer.start()
    first, second = writer.lane("first"), writer.lane("second")
    gate = threading.Event()
    order: list[str] = []
    first.post(gate.wait)
    first.post(lambda: order.append("first's job"))
    stopping = asyncio.create_task(first.stop(lambda: order.append("first's last")))
    await asyncio.sleep(0)
    assert not first.running
    assert second.running
    with pytest.raises(StorageError, match="first is not running"):
        first.post(lambda: order.append("too late"))
    gate.set()
    await stopping
    assert await second.call(lambda: order.append("second's job")) is None
    assert order == ["first's job", "first's last", "second's job"]
    assert writer.running
    await second.stop(lambda: None)
    await writer.stop(lambda: None)
    assert not second.running


async def test_outcomes_from_two_threads_reach_the_loop_each_in_its_order() -> None:
    writers = [WriterThread("writer-a"), WriterThread("writer-b")]
    for writer in writers:
        writer.start()
    futures = [writer.call(lambda number=number: number) for number in range(300) for writer in writers]
    settled: list[tuple[int, int]] = []
    for index, future in enumerate(futures):
        future.add_done_callback(lambda done, index=index: settled.append((index % 2, done.result())))
    await asyncio.gather(*futures)
    await asyncio.sleep(0)  # the done callbacks
    for which in (0, 1):
        assert [number for writer, number in settled if writer == which] == list(range(300))
    for writer in writers:
        await writer.stop(lambda: None)
