"""`UplinkSession` over the MQTT twin: the in-flight window, acks of a subset, the resend after the ack
timeout, and what a dropped link does to records in flight. Time moves only when a test says so."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import cbor2
import pytest
from nacl.public import Box

from tcu.clock import ManualClock
from tests.uplink.session_rig import ACK_TIMEOUT_S, WINDOW, Rig, running_session


@pytest.fixture
async def rig(tmp_path: Path, vehicle_box: Box, backend_box: Box, clock: ManualClock) -> AsyncIterator[Rig]:
    async with running_session(tmp_path, vehicle_box=vehicle_box, backend_box=backend_box, clock=clock) as running:
        yield running


async def test_never_more_than_the_window_unacknowledged(rig: Rig) -> None:
    await rig.put(3 * WINDOW)
    assert await rig.settled() == [1, 2, 3, 4, 5]
    assert await rig.settled() == []  # the window is full: asking again sends nothing

    await rig.ack([1, 2])
    await rig.until(lambda: rig.outbox.stats().depth == 3 * WINDOW - 2, "the ack applied")
    assert await rig.settled() == [6, 7]  # exactly the room two acks made
    acked = {1, 2}
    assert rig.unacked_in_flight(acked) == WINDOW

    for batch in ([3, 4, 5, 6, 7], [8, 9, 10, 11, 12], [13, 14, 15]):
        await rig.ack(batch)
        acked |= set(batch)
        left = 3 * WINDOW - len(acked)
        await rig.until(lambda left=left: rig.outbox.stats().depth == left, "the ack applied")
        await rig.settled()
        assert rig.unacked_in_flight(acked) <= WINDOW
    assert sorted(rig.received) == list(range(1, 3 * WINDOW + 1))  # each once: no resend without a timeout
    assert rig.outbox.stats().depth == 0


async def test_an_ack_of_a_subset_deletes_only_those_and_frees_only_their_room(rig: Rig) -> None:
    await rig.put(WINDOW + 3)
    assert await rig.settled() == [1, 2, 3, 4, 5]
    await rig.ack([2, 4])
    await rig.until(lambda: rig.session.stats.acknowledged == 2, "the ack applied")
    assert await rig.settled() == [6, 7]
    queued = [queued.seq for queued in await rig.outbox.next_batch(100)]
    assert queued == [1, 3, 5, 6, 7, 8]  # 2 and 4 are gone, nothing else


async def test_an_unacknowledged_record_is_sent_again_after_the_ack_timeout(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tcu.uplink.session")
    await rig.put(3)
    assert await rig.settled() == [1, 2, 3]
    await rig.ack([2])
    await rig.until(lambda: rig.session.stats.acknowledged == 1, "the ack applied")

    rig.clock.advance(ACK_TIMEOUT_S - 0.5)
    assert await rig.settled() == []  # not yet
    assert rig.session.stats.resent == 0

    rig.clock.advance(1.0)
    assert await rig.settled() == [1, 3]  # the two the backend did not acknowledge, and only them
    assert rig.session.stats.resent == 2
    assert rig.envelopes[1][0] == rig.envelopes[1][1]  # the same sealed envelope: the backend de-duplicates
    assert "no ack within 30 s for 2 record(s); sending them again" in caplog.text

    await rig.ack([1, 3])
    await rig.until(lambda: rig.outbox.stats().depth == 0, "the ack applied")
    rig.clock.advance(10 * ACK_TIMEOUT_S)
    assert await rig.settled() == []  # acknowledged records are never sent again


async def test_the_resend_timer_starts_at_each_send(rig: Rig) -> None:
    await rig.put(1)
    assert await rig.settled() == [1]
    rig.clock.advance(ACK_TIMEOUT_S + 1)
    assert await rig.settled() == [1]
    rig.clock.advance(ACK_TIMEOUT_S - 1)
    assert await rig.settled() == []  # the second copy has its own full timeout
    rig.clock.advance(2)
    assert await rig.settled() == [1]


async def test_records_in_flight_when_the_link_drops_go_again_on_the_next_connection(rig: Rig) -> None:
    await rig.put(3)
    assert await rig.settled() == [1, 2, 3]
    rig.broker.drop(f"tcu-{rig.topics.vin}")
    assert cbor2.loads(rig.broker.retained[rig.topics.status])["online"] is False  # the will told the backend

    await rig.until(lambda: rig.session.stats.connects == 2, "the session to reconnect")
    assert await rig.settled() == [1, 2, 3]  # no ack came: all three again, without waiting for the timeout
    assert cbor2.loads(rig.broker.retained[rig.topics.status])["online"] is True
    await rig.ack([1, 2, 3])
    await rig.until(lambda: rig.outbox.stats().depth == 0, "the ack applied")


async def test_a_publish_stalled_when_the_link_drops_loses_nothing(rig: Rig) -> None:
    rig.broker.pause()  # a wedged broker: the car's publishes get no acknowledgements, nor are delivered
    await rig.put(2)
    await rig.until(lambda: rig.session.stats.published == 2, "the sender to hand the records over")
    await rig.drain()
    assert rig.received == []  # held by the broker
    rig.broker.drop(f"tcu-{rig.topics.vin}")  # ... and the link goes; the stalled bytes with it
    rig.broker.resume()
    await rig.until(lambda: rig.session.stats.connects == 2, "the session to reconnect")
    assert sorted(await rig.settled()) == [1, 2]
    await rig.ack([1, 2])
    await rig.until(lambda: rig.outbox.stats().depth == 0, "the ack applied")


async def test_a_broker_that_goes_away_and_comes_back(rig: Rig) -> None:
    await rig.put(2)
    assert await rig.settled() == [1, 2]
    rig.broker.stop()
    await rig.until(lambda: not rig.session.stats.connected, "the session to notice")
    await rig.put(1)  # queued while offline
    rig.broker.start()
    await rig.reconnect_backend()
    await rig.until(lambda: rig.session.stats.connected, "the session to reconnect")
    assert sorted(await rig.settled()) == [1, 2, 3]


async def test_an_idle_sender_still_looks_at_the_queue_every_quarter_ack_timeout(rig: Rig) -> None:
    """Nothing in flight and nothing queued here: records another process queues (`tcu owner-change`
    beside the running agent) wake nobody, so the sender must keep a wake-up of its own, as it did
    before it had one deadline for the window, or they would wait for this agent's next record."""
    await rig.put(2)
    assert await rig.settled() == [1, 2]
    await rig.ack([1, 2])
    await rig.until(lambda: rig.outbox.stats().depth == 0, "the ack applied")
    assert await rig.settled() == []
    loop = asyncio.get_running_loop()
    wake_up = rig.session._deadline  # the only trace of a timer that is seconds away
    assert wake_up is not None, "an idle sender waits with no time limit"
    assert wake_up.when() - loop.time() == pytest.approx(ACK_TIMEOUT_S / 4, abs=0.5)
