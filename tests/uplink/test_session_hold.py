"""The eCall's hold on the radio: while `radio_free` is clear (an eCall before the PSAP's AL-ACK) the
session publishes no telematics, neither new records nor resends; once it is set again the queue
drains, nothing lost. `tcu.ecall` owns the event; the session only waits on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from nacl.public import Box

from tcu.clock import ManualClock
from tcu.uplink.queue_store import QueuedEnvelope
from tests.uplink.session_rig import ACK_TIMEOUT_S, Rig, running_session


async def _quiet_while_held(rig: Rig) -> None:
    """Wake the sender every way it can be woken; it must not begin a pass over the queue."""
    passes = rig.outbox.passes
    published = len(rig.broker.published)
    for _ in range(20):  # a pass begins in the step after a wake-up: twenty steps leave it no excuse
        rig.session.notify()
        await asyncio.sleep(0)
    assert rig.outbox.passes == passes, "the sender read the queue while the eCall held the radio"
    assert rig.broker.published[published:] == []
    await rig.drain()


async def test_no_telematics_while_the_ecall_holds_the_radio(
    tmp_path: Path, vehicle_box: Box, backend_box: Box, clock: ManualClock
) -> None:
    radio_free = asyncio.Event()
    radio_free.set()
    async with running_session(
        tmp_path, vehicle_box=vehicle_box, backend_box=backend_box, clock=clock, radio_free=radio_free
    ) as rig:
        await rig.put(2)
        assert await rig.settled() == [1, 2]

        radio_free.clear()  # crash: the eCall takes the radio
        await rig.put(3)
        await _quiet_while_held(rig)
        clock.advance(ACK_TIMEOUT_S + 1)  # 1 and 2 are due for a resend ...
        await _quiet_while_held(rig)  # ... which waits too
        assert rig.received == [1, 2]

        radio_free.set()  # the PSAP's AL-ACK
        assert sorted(await rig.settled()) == [1, 2, 3, 4, 5]
        await rig.ack([1, 2, 3, 4, 5])
        await rig.until(lambda: rig.outbox.stats().depth == 0, "the ack to apply")


async def test_a_link_that_comes_up_during_an_ecall_sends_nothing_until_released(
    tmp_path: Path, vehicle_box: Box, backend_box: Box, clock: ManualClock
) -> None:
    radio_free = asyncio.Event()  # clear from the start: the car woke up into an eCall
    async with running_session(
        tmp_path, vehicle_box=vehicle_box, backend_box=backend_box, clock=clock, radio_free=radio_free
    ) as rig:
        await rig.put(4)
        await _quiet_while_held(rig)
        assert rig.outbox.passes == 0
        radio_free.set()
        assert await rig.settled() == [1, 2, 3, 4]


async def test_a_crash_while_the_sender_reads_the_queue_keeps_that_batch_off_the_radio(
    tmp_path: Path, vehicle_box: Box, backend_box: Box, clock: ManualClock
) -> None:
    """The queue is read on its writer thread: a crash can take the radio while the sender waits for it."""
    radio_free = asyncio.Event()
    radio_free.set()
    async with running_session(
        tmp_path, vehicle_box=vehicle_box, backend_box=backend_box, clock=clock, radio_free=radio_free
    ) as rig:
        read = rig.outbox.next_batch

        async def read_as_the_crash_comes(limit: int, *, skip: Iterable[int] = ()) -> list[QueuedEnvelope]:
            batch = await read(limit, skip=skip)
            radio_free.clear()  # the eCall took the radio while this read was on the writer thread
            return batch

        rig.outbox.next_batch = read_as_the_crash_comes  # type: ignore[method-assign]
        await rig.put(2)
        await rig.until(lambda: not radio_free.is_set(), "the sender to read the queue")
        await _quiet_while_held(rig)
        assert rig.received == []

        rig.outbox.next_batch = read  # type: ignore[method-assign]
        radio_free.set()  # the PSAP's AL-ACK
        assert await rig.settled() == [1, 2]
