"""The backend's service shell: a failing step is logged and retried, a failed link propagates, and what
ingest's observers hand over from the database thread wakes the service's loop."""

from __future__ import annotations

import asyncio
import logging
import threading

import aiomqtt
import pytest

from backend_stub.database_thread import DatabaseThread
from backend_stub.service_shell import EventInbox, ServiceShell
from backend_stub.wakeup import Wakeup
from tcu.broker_config import BrokerConfig


async def test_an_item_put_from_another_thread_wakes_the_loop_waiting_on_the_inbox() -> None:
    inbox: EventInbox[int] = EventInbox()
    waiting = asyncio.create_task(inbox.wakeup.wait())
    await asyncio.sleep(0)  # the waiter is bound to this loop now
    database = DatabaseThread("test-db")
    try:
        await database.run(inbox.put, 7)  # as an ingest observer does, inside ingest's transaction
        async with asyncio.timeout(5):
            assert await waiting
    finally:
        database.close()
    assert inbox.take() == [7]
    assert inbox.take() == []


async def test_a_wakeup_set_before_anyone_waits_is_not_lost() -> None:
    wakeup = Wakeup()
    thread = threading.Thread(target=wakeup.set)
    thread.start()
    thread.join()
    assert wakeup.is_set()
    assert await wakeup.wait(timeout_s=0)  # would time out if the early set were dropped


async def test_a_cleared_wakeup_times_out() -> None:
    wakeup = Wakeup()
    wakeup.set()
    wakeup.clear()
    assert not await wakeup.wait(timeout_s=0)


async def test_a_failing_step_is_logged_with_its_reason_and_the_service_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shell = ServiceShell("test service", BrokerConfig(), identifier="test")
    wakeup = Wakeup()
    runs: list[int] = []

    async def step() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ValueError("the store refused the booking")
        if len(runs) == 3:
            raise asyncio.CancelledError  # ends the loop for the test

    async def wake_up_until_done() -> None:
        while len(runs) < 3:
            wakeup.set()
            await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="backend_stub.service_shell"):
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(wake_up_until_done())
            with pytest.raises(asyncio.CancelledError):
                await shell.repeat(step, what="booking", wakeup=wakeup, poll_s=None)
    assert runs == [0, 1, 2]  # the first failure did not end it
    assert "test service: booking failed; trying again at the next wake-up" in caplog.text
    assert "the store refused the booking" in caplog.text  # the traceback carries the reason


async def test_a_failed_link_propagates_so_that_the_shell_reconnects() -> None:
    shell = ServiceShell("test service", BrokerConfig(), identifier="test")

    async def step() -> None:
        raise aiomqtt.MqttError("connection lost")

    with pytest.raises(aiomqtt.MqttError):
        await shell.repeat(step, what="publishing", wakeup=Wakeup(), poll_s=None)


async def test_offloaded_work_runs_on_the_database_thread_and_returns_its_result() -> None:
    database = DatabaseThread("test-db")
    shell = ServiceShell("test service", BrokerConfig(), identifier="test", database=database)
    try:
        name = await shell.offload(lambda: threading.current_thread().name)
    finally:
        database.close()
    assert name.startswith("test-db")
    assert name != threading.current_thread().name
