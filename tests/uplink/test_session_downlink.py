"""`UplinkSession` routes each downlink message to its handler by topic, and refuses, with a logged
reason, whatever is not this car's downlink: another car's topic, an uplink topic, a malformed topic,
a kind with no handler, or a message its handler fails on. No refusal ends the connection."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from nacl.public import Box

from hil.mqtt_twin import MemoryBroker
from tcu.clock import ManualClock
from telematics_wire.errors import EnvelopeError
from tests.conftest import OTHER_VIN, VIN
from tests.uplink.session_rig import Rig, running_session

KINDS = ("provisioning", "measure", "account")  # what the agent registers (tcu.app)


class Handlers:
    def __init__(self) -> None:
        self.got: dict[str, list[bytes]] = {kind: [] for kind in KINDS}

    def handler(self, kind: str) -> Callable[[bytes], Awaitable[None]]:
        async def handle(payload: bytes) -> None:
            if payload == b"bug":
                raise RuntimeError("a handler's own bug")
            if payload == b"forged":
                raise EnvelopeError(f"{kind}: signature does not verify")
            self.got[kind].append(payload)

        return handle


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def start_session(
    tmp_path: Path,
    vehicle_box: Box,
    backend_box: Box,
    clock: ManualClock,
    handlers: Handlers,
    broker: MemoryBroker,
    caplog: pytest.LogCaptureFixture,
) -> Callable[[], AbstractAsyncContextManager[Rig]]:
    """Starts the session on `broker`, which a test may set up first."""
    caplog.set_level(logging.INFO, logger="tcu.uplink.session")
    routes = {kind: handlers.handler(kind) for kind in KINDS}
    return lambda: running_session(
        tmp_path, vehicle_box=vehicle_box, backend_box=backend_box, clock=clock, broker=broker, handlers=routes
    )


@pytest.fixture
async def rig(start_session: Callable[[], AbstractAsyncContextManager[Rig]]) -> AsyncIterator[Rig]:
    async with start_session() as running:
        yield running


async def _refused(rig: Rig, topic: str, payload: bytes = b"payload") -> None:
    before = rig.session.stats.rejected_downlink
    await rig.backend.publish(topic, payload, qos=1)
    await rig.until(lambda: rig.session.stats.rejected_downlink == before + 1, f"{topic} to be refused")


async def _still_routing(rig: Rig, handlers: Handlers) -> None:
    """The session took no harm: the same connection still routes the next message."""
    await rig.send_down("provisioning", b"after")
    await rig.until(lambda: handlers.got["provisioning"][-1:] == [b"after"], "the next message to route")
    assert rig.session.stats.connects == 1


async def test_each_kind_reaches_its_own_handler(rig: Rig, handlers: Handlers) -> None:
    for kind in KINDS:
        await rig.send_down(kind, f"for {kind}".encode())
    await rig.until(lambda: all(handlers.got[kind] for kind in KINDS), "every handler to be called")
    assert handlers.got == {kind: [f"for {kind}".encode()] for kind in KINDS}
    assert rig.session.stats.rejected_downlink == 0


async def test_a_retained_file_waiting_at_the_broker_is_handled_on_connect(
    broker: MemoryBroker, start_session: Callable[[], AbstractAsyncContextManager[Rig]], handlers: Handlers
) -> None:
    async with broker.client("backend-early", clean_start=True) as backend:
        await backend.publish(f"vehicles/{VIN}/down/provisioning", b"retained file", qos=1, retain=True)
    async with start_session() as rig:
        await rig.until(lambda: handlers.got["provisioning"] == [b"retained file"], "the retained file")


async def test_another_cars_downlink_is_refused(
    broker: MemoryBroker,
    start_session: Callable[[], AbstractAsyncContextManager[Rig]],
    handlers: Handlers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The car subscribes to its own subtree only; a persistent session left subscribed wider (an older
    # agent, a shared client id) is how another car's messages could still reach it.
    async with broker.client(f"tcu-{VIN}") as earlier:
        await earlier.subscribe("vehicles/+/down/#", qos=1)
    async with start_session() as rig:
        await _refused(rig, f"vehicles/{OTHER_VIN}/down/provisioning")
        assert f"ignored message on unexpected topic vehicles/{OTHER_VIN}/down/provisioning" in caplog.text
        assert handlers.got["provisioning"] == []
        await _still_routing(rig, handlers)


@pytest.mark.parametrize(
    "topic",
    [
        f"vehicles/{VIN}/down/provisioning/extra",  # matches the car's `down/#`, but is no kind of ours
        f"vehicles/{VIN}/down/provisioning/",
        f"vehicles/{VIN}/down//provisioning",
    ],
)
async def test_a_malformed_downlink_topic_is_refused(
    rig: Rig, handlers: Handlers, caplog: pytest.LogCaptureFixture, topic: str
) -> None:
    await _refused(rig, topic)
    assert f"ignored message on unexpected topic {topic}" in caplog.text
    assert handlers.got["provisioning"] == []
    await _still_routing(rig, handlers)


async def test_a_kind_without_handler_is_refused(
    rig: Rig, handlers: Handlers, caplog: pytest.LogCaptureFixture
) -> None:
    await _refused(rig, f"vehicles/{VIN}/down/firmware", b"x" * 7)
    assert "no handler for downlink 'firmware' (7 bytes); ignored" in caplog.text
    await _still_routing(rig, handlers)


async def test_a_message_its_handler_rejects_is_one_rejection(
    rig: Rig, handlers: Handlers, caplog: pytest.LogCaptureFixture
) -> None:
    await _refused(rig, f"vehicles/{VIN}/down/measure", b"forged")
    assert f"rejected downlink vehicles/{VIN}/down/measure: measure: signature does not verify" in caplog.text
    await _still_routing(rig, handlers)


async def test_a_handler_bug_is_one_rejection_not_a_restart(
    rig: Rig, handlers: Handlers, caplog: pytest.LogCaptureFixture
) -> None:
    # Retained, so a restart of the session would meet it again on every subscription.
    await rig.send_down("account", b"bug", retain=True)
    await rig.until(lambda: rig.session.stats.rejected_downlink == 1, "the bug to be caught")
    assert f"downlink vehicles/{VIN}/down/account (3 bytes) failed in its handler; ignored" in caplog.text
    await rig.send_down("account", b"fine")
    await rig.until(lambda: handlers.got["account"] == [b"fine"], "the next account message")
    await _still_routing(rig, handlers)


async def test_a_second_handler_for_a_kind_is_refused(rig: Rig) -> None:
    async def handle(payload: bytes) -> None:
        raise AssertionError(payload)

    for kind in ("ack", "provisioning"):
        with pytest.raises(ValueError, match=f"a downlink handler for '{kind}' exists already"):
            rig.session.add_downlink_handler(kind, handle)
