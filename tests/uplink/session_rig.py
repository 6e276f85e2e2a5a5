"""An `UplinkSession` over the in-memory MQTT twin, a real durable queue and a hand-driven clock.

The backend is a plain twin client: it reads what the car publishes on `vehicles/{vin}/up/records` and
acknowledges by hand, so each test decides which acks the car gets, and when. Time passes only when a
test advances `clock`; the sender is woken with `notify()` to look at it again.

Synchronising without sleeping: the queue is wrapped so each pass of the sender over it is seen. A
pass clears the wake-up, expires acks and asks for an overflow notice in one step of the event loop,
then reads the next batch. `settled()` wakes the sender and waits for a pass begun after that to read
nothing to send: by then everything the window and the clock allowed has been published, and the twin
delivers a publication before its publish returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from nacl.public import Box

from hil.mqtt_twin import MemoryBroker, MemoryClient
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from tcu.config import QueueConfig, UplinkConfig
from tcu.uplink.outbox import Outbox
from tcu.uplink.queue_store import QueuedEnvelope
from tcu.uplink.session import UplinkSession
from telematics_wire.envelope import open_record, seal_ack, seal_record
from telematics_wire.records import Record, RecordKind
from telematics_wire.topics import VehicleTopics
from tests.conftest import VIN

WITHIN_S = 5.0  # bounds a wait for the writer thread or the session's tasks; never reached when passing
ACK_TIMEOUT_S = 30.0
WINDOW = 5


class WatchedOutbox(Outbox):
    """The real queue, with the sender's passes over it counted and each batch it read recorded."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.passes = 0  # the sender's passes begun: each asks for an overflow notice first
        self.reads: list[tuple[int, list[int]]] = []  # (pass, seqs read)
        self.read_done = asyncio.Event()

    async def emit_overflow_notice(self) -> bool:
        self.passes += 1  # before the first await: in the same loop step as the pass's wake-up and expiry
        return await super().emit_overflow_notice()

    async def next_batch(self, limit: int, *, skip: Iterable[int] = ()) -> list[QueuedEnvelope]:
        sender_pass = self.passes
        batch = await super().next_batch(limit, skip=skip)
        self.reads.append((sender_pass, [queued.seq for queued in batch]))
        self.read_done.set()
        return batch


@dataclass
class Rig:
    broker: MemoryBroker
    session: UplinkSession
    outbox: WatchedOutbox
    clock: ManualClock
    backend: MemoryClient
    backend_box: Box
    topics: VehicleTopics = field(default_factory=lambda: VehicleTopics(VIN))
    received: list[int] = field(default_factory=list)  # every record sequence number the backend got, in order
    envelopes: dict[int, list[bytes]] = field(default_factory=dict)  # each copy the backend got, per seq

    async def put(self, count: int, kind: RecordKind = RecordKind.TELEMETRY) -> None:
        await self.outbox.put_many([Record(kind=kind, created=self.clock.now(), body={"n": n}) for n in range(count)])
        self.session.notify()

    async def settled(self) -> list[int]:
        """Wake the sender, wait until it finds nothing more to send; the seqs the backend got meanwhile."""
        before = len(self.received)
        async with asyncio.timeout(WITHIN_S):
            while True:
                after = self.outbox.passes
                self.session.notify()
                while not self.outbox.reads or self.outbox.reads[-1][0] <= after:
                    self.outbox.read_done.clear()
                    await self.outbox.read_done.wait()
                if not self.outbox.reads[-1][1]:
                    break
        await self.drain()
        return self.received[before:]

    async def drain(self) -> None:
        """Take what the backend has been delivered (the twin delivers before a publish returns)."""
        while len(self.backend.messages):
            message = await anext(aiter(self.backend.messages))
            assert isinstance(message.payload, bytes)
            record = open_record(self.backend_box, message.payload, topic_vin=VIN)
            self.received.append(record.seq)
            self.envelopes.setdefault(record.seq, []).append(message.payload)

    async def reconnect_backend(self) -> None:
        await self.backend.__aexit__(None, None, None)
        await self.backend.__aenter__()
        await self.backend.subscribe("vehicles/+/up/records", qos=1)

    async def ack(self, seqs: Iterable[int], *, epoch: bytes | None = None, box: Box | None = None) -> None:
        payload = seal_ack(box or self.backend_box, VIN, seqs, epoch=self.outbox.epoch if epoch is None else epoch)
        await self.send_down("ack", payload)

    async def send_down(self, kind: str, payload: bytes, *, vin: str = VIN, retain: bool = False) -> None:
        await self.backend.publish(f"vehicles/{vin}/down/{kind}", payload, qos=1, retain=retain)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait for the session's tasks (and the queue's writer thread) to get somewhere."""
        try:
            async with asyncio.timeout(WITHIN_S):
                while not condition():  # noqa: ASYNC110 - state moved by another task and a thread
                    await asyncio.sleep(0.001)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    def unacked_in_flight(self, acked: set[int]) -> int:
        return len(set(self.received) - acked)


def watched_outbox(tmp_path: Path, *, vehicle_box: Box, clock: ManualClock) -> WatchedOutbox:
    """The car's durable queue in `tmp_path`, sealing for `VIN`; not yet opened."""
    return WatchedOutbox(
        tmp_path / "outbox.sqlite3",
        sealer=lambda seq, record, epoch: seal_record(vehicle_box, VIN, seq, record, epoch=epoch),
        clock=clock,
        config=QueueConfig(),
        max_envelope_bytes=64 * 1024,
    )


@contextlib.asynccontextmanager
async def running_session(
    tmp_path: Path,
    *,
    vehicle_box: Box,
    backend_box: Box,
    clock: ManualClock,
    broker: MemoryBroker | None = None,
    window: int = WINDOW,
    handlers: Mapping[str, Callable[[bytes], Awaitable[None]]] | None = None,
    radio_free: asyncio.Event | None = None,
    wait_connected: bool = True,
) -> AsyncIterator[Rig]:
    broker = broker or MemoryBroker()
    outbox = watched_outbox(tmp_path, vehicle_box=vehicle_box, clock=clock)

    def twin_client(identifier: str, will: aiomqtt.Will | None) -> MemoryClient:
        return broker.client(identifier, will=will, manual_ack=True)  # as the session's own factory makes them

    async with outbox, broker.client("backend-stub", clean_start=True) as backend:
        await backend.subscribe("vehicles/+/up/records", qos=1)
        session = UplinkSession(
            vin=VIN,
            broker=BrokerConfig(),
            uplink=UplinkConfig(
                inflight_window=window, ack_timeout_s=ACK_TIMEOUT_S, reconnect_base_s=0.001, reconnect_cap_s=0.002
            ),
            outbox=outbox,
            box=vehicle_box,
            clock=clock,
            rng=random.Random(14),
            downlink_handlers=handlers,
            radio_free=radio_free,
            client_factory=twin_client,
        )
        rig = Rig(broker, session, outbox, clock, backend, backend_box)
        task = asyncio.create_task(session.run(), name="session-under-test")
        try:
            if wait_connected:
                async with asyncio.timeout(WITHIN_S):
                    await session.wait_connected()
            yield rig
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
