"""The agent's MQTT session: drains the durable queue, applies end-to-end acks, routes downlink.

One reconnect loop around a reusable client; inside a connection, a sender and a receiver task under
one TaskGroup. Records stay in the queue until the backend's sealed ack names them; a record
published but not acknowledged within `ack_timeout_s` is sent again (the backend de-duplicates by
queue epoch and sequence number), and everything in flight is resent after a reconnect.

Since the end-to-end ack decides delivery, the sender hands each batch to the client without waiting
for the broker's PUBACKs (`publish_nowait`; the client keeps its own in-flight window and the session
its `inflight_window`), and sleeps until a wake-up or the one deadline of its window, the earliest
resend due, rather than keeping a task, an awaited publish and a timer per record.

Downlink messages are acknowledged to the broker (PUBACK) only once their handler returned: one the
link lost before that comes again on the next connection (the session is persistent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiomqtt
import cbor2
from nacl.public import Box

from tcu import __version__
from tcu.backoff import Backoff
from tcu.broker_config import BrokerConfig
from tcu.clock import Clock
from tcu.config import UplinkConfig
from tcu.errors import StorageError
from tcu.uplink.mqtt_client import make_client, run_reconnecting
from tcu.uplink.mqtt_port import ClientFactory, MqttClient
from tcu.uplink.outbox import Outbox
from tcu.virtual_time import io_timeout
from telematics_wire.envelope import open_ack
from telematics_wire.errors import EnvelopeError
from telematics_wire.records import to_millis
from telematics_wire.topics import VehicleTopics, split_topic

_LOGGER = logging.getLogger(__name__)

DownlinkHandler = Callable[[bytes], Awaitable[None]]


@dataclass(slots=True)
class SessionStats:
    connected: bool = False
    connects: int = 0
    published: int = 0
    acknowledged: int = 0
    resent: int = 0
    rejected_downlink: int = 0
    last_error: str | None = None


class UplinkSession:
    def __init__(
        self,
        *,
        vin: str,
        broker: BrokerConfig,
        uplink: UplinkConfig,
        outbox: Outbox,
        box: Box,
        clock: Clock,
        rng: random.Random | None = None,
        downlink_handlers: Mapping[str, DownlinkHandler] | None = None,
        radio_free: asyncio.Event | None = None,
        client_factory: ClientFactory | None = None,  # the broker's aiomqtt client unless a test brings a twin
    ) -> None:
        self._vin = vin
        self._topics = VehicleTopics(vin)
        self._broker = broker
        self._uplink = uplink
        self._outbox = outbox
        self._box = box
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - reconnect jitter, not cryptography
        self._handlers = dict(downlink_handlers or {})
        self._client_factory = client_factory or broker_client_factory(broker, uplink)
        # Cleared while something more important has the radio (the eCall before its AL-ACK: its owner,
        # tcu.ecall, clears and sets it); the sender waits on it, records stay queued meanwhile.
        self._radio_free = radio_free if radio_free is not None else _always_set()
        self._backoff = Backoff(base_s=uplink.reconnect_base_s, cap_s=uplink.reconnect_cap_s)
        self._wakeup = asyncio.Event()
        self._inflight: dict[int, float] = {}  # seq -> when sent, in sending order: the first is due first
        self._deadline: asyncio.TimerHandle | None = None  # wakes the sender when the first resend is due
        self._unacked_since_log = 0
        self._next_resend_log = 0.0
        self._connected = asyncio.Event()
        self._link_listeners: list[Callable[[bool], None]] = []
        self.stats = SessionStats()

    def add_link_listener(self, listener: Callable[[bool], None]) -> None:
        """Called with True when the link comes up and False when it goes down."""
        self._link_listeners.append(listener)

    def _tell_link(self, up: bool) -> None:
        for listener in self._link_listeners:
            try:
                listener(up)
            except Exception:
                _LOGGER.exception("link listener %r failed", listener)

    def add_downlink_handler(self, kind: str, handler: DownlinkHandler) -> None:
        """Route `vehicles/{vin}/down/{kind}` payloads to `handler` (one per kind)."""
        if kind == "ack" or kind in self._handlers:
            raise ValueError(f"a downlink handler for {kind!r} exists already")
        self._handlers[kind] = handler

    def notify(self) -> None:
        """Tell the sender new records are queued (call after `Outbox.put`)."""
        self._wakeup.set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def _status(self, online: bool) -> bytes:
        return cbor2.dumps({"online": online, "ts": to_millis(self._clock.now()), "agent": __version__})

    async def run(self) -> None:
        """Stay connected forever; returns only by cancellation."""
        will = aiomqtt.Will(self._topics.status, self._status(False), qos=1, retain=True)
        await run_reconnecting(
            lambda: self._client_factory(f"tcu-{self._vin}", will),
            self._serve,
            broker=self._broker,
            backoff=self._backoff,
            rng=self._rng,
            on_down=self._on_disconnect,
        )

    def _on_disconnect(self, reason: str) -> None:
        if self.stats.connected or self.stats.last_error != reason:
            _LOGGER.warning("MQTT link down: %s; records stay queued", reason)
        was_up = self.stats.connected
        self.stats.connected = False
        self.stats.last_error = reason
        self._connected.clear()
        if was_up:
            self._tell_link(False)
        self._inflight.clear()  # anything unacknowledged goes again on the next connection
        self._cancel_deadline()

    async def _serve(self, client: MqttClient) -> None:
        await client.subscribe(self._topics.downlink, qos=1)
        await client.publish(self._topics.status, self._status(True), qos=1, retain=True)
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.last_error = None
        self._connected.set()
        self._tell_link(True)
        _LOGGER.info(
            "MQTT link up: %s as tcu-%s; %d record(s) queued", self._broker.url, self._vin, self._outbox.stats().depth
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._send_loop(client), name=f"uplink-send-{self._vin}")
                tasks.create_task(self._receive_loop(client), name=f"uplink-receive-{self._vin}")
        except asyncio.CancelledError:
            # Orderly shutdown: say so rather than leaving the broker to fire the will later.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(
                    self._topics.status, self._status(False), qos=1, retain=True, timeout=io_timeout(1)
                )
            raise

    def _expire_inflight(self) -> None:
        # An ack is a round trip through the broker and the backend: never shorter than real I/O on a bench.
        deadline = self._clock.monotonic() - io_timeout(self._uplink.ack_timeout_s)
        expired = [seq for seq, sent in self._inflight.items() if sent <= deadline]
        for seq in expired:
            del self._inflight[seq]
        if not expired:
            return
        self.stats.resent += len(expired)
        self._unacked_since_log += len(expired)
        now = self._clock.monotonic()
        if now >= self._next_resend_log:  # one line per ack timeout, however the records trickle in
            _LOGGER.info(
                "no ack within %.0f s for %d record(s); sending them again",
                self._uplink.ack_timeout_s,
                self._unacked_since_log,
            )
            self._unacked_since_log = 0
            self._next_resend_log = now + self._uplink.ack_timeout_s

    async def _send_loop(self, client: MqttClient) -> None:
        try:
            while True:
                if not self._radio_free.is_set():
                    await self._radio_free.wait()
                    continue
                self._wakeup.clear()
                self._expire_inflight()
                await self._outbox.emit_overflow_notice()
                room = self._uplink.inflight_window - len(self._inflight)
                batch = await self._outbox.next_batch(room, skip=self._inflight)
                if not self._radio_free.is_set():
                    continue  # the eCall took the radio while the queue was read: the batch stays queued
                if batch:
                    sent_at = self._clock.monotonic()
                    for queued in batch:
                        self._inflight[queued.seq] = sent_at
                    self._outbox.mark_sent(queued.seq for queued in batch)
                    for queued in batch:  # the backend's ack decides delivery: the broker's PUBACK is not awaited
                        client.publish_nowait(self._topics.records, queued.envelope, qos=1)
                    self.stats.published += len(batch)
                    if len(batch) == room:
                        continue  # the queue may hold more than the window took
                # Nothing more was queued when it was read: what is queued later wakes the sender (`notify`).
                self._arm_deadline()
                await self._wakeup.wait()
        finally:
            self._cancel_deadline()

    def _arm_deadline(self) -> None:
        """One timer for the whole window: set for the first record in flight to fall due, if none is set
        earlier. Acks only move that moment later, so a timer that fires early costs one idle pass. With
        nothing in flight it is a quarter of the ack timeout away all the same: records another process
        queued (`tcu owner-change` beside the running agent) wake nobody here, and must not wait for the
        next record of this one, which a parked car may never queue."""
        timeout = io_timeout(self._uplink.ack_timeout_s)
        delay = timeout / 4
        if self._inflight:
            first_sent = next(iter(self._inflight.values()))
            # On the loop's time, from the injected clock's: capped, in case the two run at different speeds.
            delay = min(max(first_sent + timeout - self._clock.monotonic(), 0.05), delay)
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if self._deadline is not None and not self._deadline.cancelled() and self._deadline.when() <= due:
            return
        self._cancel_deadline()
        self._deadline = loop.call_at(due, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._deadline = None
        self._wakeup.set()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def _receive_loop(self, client: MqttClient) -> None:
        async for message in client.messages:
            await self._handle_downlink(message)
            # Only now, whatever the outcome: applied, refused with a logged reason, or its handler crashed
            # (logged too). Sent again, a refused or crashing message would fail again on every connection,
            # forever; a message the link lost before this line comes again. A handler cancelled with the
            # link never gets here, so its message comes again too.
            client.ack(message)

    async def _handle_downlink(self, message: aiomqtt.Message) -> None:
        topic = split_topic(str(message.topic))
        payload = message.payload
        if topic is None or topic[0] != self._vin or topic[1] != "down" or not isinstance(payload, bytes):
            self.stats.rejected_downlink += 1
            _LOGGER.warning("ignored message on unexpected topic %s", message.topic)
            return
        kind = topic[2]
        try:
            if kind == "ack":
                await self._apply_ack(payload)
            elif kind in self._handlers:
                await self._handlers[kind](payload)
            else:
                self.stats.rejected_downlink += 1
                _LOGGER.warning("no handler for downlink %r (%d bytes); ignored", kind, len(payload))
        except EnvelopeError as exc:
            self.stats.rejected_downlink += 1
            _LOGGER.warning("rejected downlink %s: %s", message.topic, exc)
        except Exception:
            # One message is at most one rejection: a handler's bug must not restart the session
            # (a retained message would then restart it on every subscription).
            self.stats.rejected_downlink += 1
            _LOGGER.exception("downlink %s (%d bytes) failed in its handler; ignored", message.topic, len(payload))

    async def _apply_ack(self, payload: bytes) -> None:
        ack = open_ack(self._box, payload, vin=self._vin, max_bytes=self._uplink.max_payload_bytes)
        if ack.epoch != self._outbox.epoch:
            # An ack for this VIN's previous queue (re-flashed, wiped): its numbers are not ours.
            self.stats.rejected_downlink += 1
            _LOGGER.info(
                "ignored an ack for queue epoch %s; this queue is %s",
                ack.epoch.hex() or "legacy",
                self._outbox.epoch.hex() or "legacy",
            )
            return
        try:
            deleted = await self._outbox.acknowledge(ack.seqs)
        except StorageError as exc:
            # Keep the records: the backend de-duplicates the resend.
            _LOGGER.error("cannot apply ack: %s", exc)
            return
        for seq in ack.seqs:
            self._inflight.pop(seq, None)
        self.stats.acknowledged += deleted
        self._wakeup.set()


def broker_client_factory(broker: BrokerConfig, uplink: UplinkConfig) -> ClientFactory:
    """The session's clients of a real broker: persistent sessions, and manual acks (see `_receive_loop`)."""

    def make(identifier: str, will: aiomqtt.Will | None) -> MqttClient:
        return make_client(
            broker, identifier=identifier, will=will, max_pending_calls=uplink.inflight_window + 10, manual_ack=True
        )

    return make


def _always_set() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event
