"""`UplinkSession` refuses acks it must not believe, says why, and loses nothing by it.

An ack deletes records for good, so only one sealed by the backend, for this car and this queue's
epoch, may delete anything; every other is one logged rejection, and the records it named stay queued
and are sent again after the ack timeout, until a true ack comes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import cbor2
import pytest
from nacl.public import Box, PrivateKey

from tcu.clock import ManualClock
from telematics_wire.envelope import seal_ack
from tests.conftest import OTHER_VIN, VIN
from tests.uplink.session_rig import ACK_TIMEOUT_S, Rig, running_session

QUEUED = 3


@pytest.fixture
async def rig(
    tmp_path: Path, vehicle_box: Box, backend_box: Box, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Rig]:
    caplog.set_level(logging.INFO, logger="tcu.uplink.session")
    async with running_session(tmp_path, vehicle_box=vehicle_box, backend_box=backend_box, clock=clock) as running:
        await running.put(QUEUED)
        assert await running.settled() == [1, 2, 3]
        yield running


async def _refused(rig: Rig, payload: bytes) -> None:
    """Send `payload` as an ack and wait until the session has refused it."""
    before = rig.session.stats.rejected_downlink
    await rig.send_down("ack", payload)
    await rig.until(lambda: rig.session.stats.rejected_downlink == before + 1, "the ack to be refused")


async def _nothing_lost_and_still_working(rig) -> None:
    assert rig.outbox.stats().depth == QUEUED
    assert rig.session.stats.acknowledged == 0
    rig.clock.advance(ACK_TIMEOUT_S + 1)
    assert await rig.settled() == [1, 2, 3]  # still unacknowledged, so sent again
    await rig.ack([1, 2, 3])
    await rig.until(lambda: rig.outbox.stats().depth == 0, "a true ack to apply")
    assert rig.session.stats.connects == 1  # one connection throughout: no refusal restarted the session


async def test_an_ack_sealed_with_another_key_is_refused(
    rig: Rig, caplog: pytest.LogCaptureFixture, vehicle_key: PrivateKey
) -> None:
    # Someone with broker access but not the backend's key seals for the car's public key with a key of its own.
    impostor = Box(PrivateKey.generate(), vehicle_key.public_key)
    await _refused(rig, seal_ack(impostor, VIN, [1, 2, 3], epoch=rig.outbox.epoch))
    assert f"rejected downlink vehicles/{VIN}/down/ack" in caplog.text
    await _nothing_lost_and_still_working(rig)


async def test_a_tampered_ack_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    sealed = cbor2.loads(seal_ack(rig.backend_box, VIN, [1], epoch=rig.outbox.epoch))
    sealed["box"] = sealed["box"][:-1] + bytes([sealed["box"][-1] ^ 1])
    await _refused(rig, cbor2.dumps(sealed))
    assert "rejected downlink" in caplog.text
    await _nothing_lost_and_still_working(rig)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff",
        cbor2.dumps([1, 2, 3]),
        cbor2.dumps({"v": 1, "vin": VIN}),
        cbor2.dumps({"v": 1, "vin": VIN, "nonce": b"\x00" * 24, "box": b"", "epoch": 2**64}),
        b"\xa1" * 10_000,  # nested maps, deeper than anyone should parse
        b"\x00" * (64 * 1024 + 1),  # over the payload limit
    ],
    ids=["empty", "not-cbor", "not-a-map", "missing-fields", "bignum-epoch", "deep-nesting", "oversized"],
)
async def test_a_malformed_ack_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture, payload: bytes) -> None:
    await _refused(rig, payload)
    assert "rejected downlink" in caplog.text
    await _nothing_lost_and_still_working(rig)


async def test_an_ack_naming_another_vehicle_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await _refused(rig, seal_ack(rig.backend_box, OTHER_VIN, [1, 2, 3], epoch=rig.outbox.epoch))
    assert f"ack names VIN '{OTHER_VIN}', not this vehicle {VIN}" in caplog.text
    await _nothing_lost_and_still_working(rig)


async def test_an_ack_for_an_earlier_queue_epoch_is_ignored(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    stale = bytes(16) if rig.outbox.epoch != bytes(16) else b"\x01" * 16
    await _refused(rig, seal_ack(rig.backend_box, VIN, [1, 2, 3], epoch=stale))
    assert f"ignored an ack for queue epoch {stale.hex()}; this queue is {rig.outbox.epoch.hex()}" in caplog.text
    await _nothing_lost_and_still_working(rig)


async def test_a_duplicate_ack_deletes_nothing_more(rig: Rig) -> None:
    await rig.ack([2])
    await rig.until(lambda: rig.session.stats.acknowledged == 1, "the ack to apply")
    await rig.ack([2])
    await rig.ack([99, 10**6])  # numbers this queue never issued
    await rig.ack([3])
    # A fence: downlink messages are handled in order, and a refused ack is counted within its handler,
    # so once this one is refused, every ack before it has deleted and been counted (the outbox's depth
    # drops on the writer thread before the session's handler resumes to count: no fence by itself).
    await _refused(rig, b"not an ack")
    assert rig.outbox.stats().depth == 1
    assert rig.session.stats.acknowledged == 2  # counted once each, the unknown ones not at all
    assert [queued.seq for queued in await rig.outbox.next_batch(10)] == [1]
    rig.clock.advance(ACK_TIMEOUT_S + 1)
    assert await rig.settled() == [1]
