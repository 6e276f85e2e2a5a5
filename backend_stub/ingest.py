"""Ingest: open each vehicle envelope, store it once, and acknowledge it end to end.

`Ingest` is sans-I/O (topic + payload in, acks to send out) so tests drive it without a broker;
`IngestService` is the MQTT shell. Acks are sent only after the batch holding the records is
committed: an ack promises the vehicle that it may forget the record. Duplicates (a resend after a
lost ack, or a replay) are stored once and acknowledged again so the vehicle stops resending.
Observers (e.g. provisioning) hear of each newly stored record and each vehicle status.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt
import cbor2
from nacl.public import Box, PrivateKey, PublicKey

from backend_stub.store import BackendStore
from tcu.backoff import Backoff
from tcu.clock import Clock
from tcu.config import BrokerConfig
from tcu.errors import EnvelopeError
from tcu.uplink.envelope import open_record, seal_ack
from tcu.uplink.mqtt_client import make_client, run_reconnecting
from tcu.uplink.records import ReceivedRecord
from tcu.uplink.topics import UP_WILDCARD, VehicleTopics, split_topic

_LOGGER = logging.getLogger(__name__)

RecordObserver = Callable[[ReceivedRecord], None]
StatusObserver = Callable[[str, bool], None]  # (vin, online)


@dataclass(slots=True)
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks_sent: int = 0
    by_vehicle: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Ingest:
    def __init__(self, store: BackendStore, private_key: PrivateKey, clock: Clock, max_payload_bytes: int) -> None:
        self._store = store
        self._key = private_key
        self._clock = clock
        self._max_payload = max_payload_bytes
        # Per vehicle: its enrolled public key and the precomputed X25519 shared key.
        self._boxes: dict[str, tuple[bytes, Box]] = {}
        self._pending_acks: dict[str, set[int]] = defaultdict(set)
        self._record_observers: list[RecordObserver] = []
        self._status_observers: list[StatusObserver] = []
        self.stats = IngestStats()

    def add_observer(self, observer: RecordObserver) -> None:
        """Call `observer` with every newly stored record (never with a duplicate).

        Observers run inside the ingest transaction, before its commit: they must be quick and must
        not write through another connection to this database (it would wait on this transaction's
        lock) — queue the work instead. One that raises is logged and skipped: a bug in a consumer
        must not stop the ingest of everything else, eCall records included.
        """
        self._record_observers.append(observer)

    def add_status_observer(self, observer: StatusObserver) -> None:
        """Call `observer(vin, online)` for every valid status of an enrolled vehicle; same rules as above.

        Every status is passed on, not only changes: a vehicle that reconnects says "online" again even
        when the backend never saw it go offline.
        """
        self._status_observers.append(observer)

    def _notify(self, observer: Callable[..., None], *args: object) -> None:
        try:
            observer(*args)
        except Exception:
            _LOGGER.exception("ingest observer %r failed; ingest goes on", observer)

    def _box(self, vin: str, *, recheck: bool = False) -> Box | None:
        """The shared key with this vehicle, cached; `recheck` reads the enrolled key again, since a
        re-enrolment (`backend-stub enroll`, another process) may have replaced it."""
        cached = self._boxes.get(vin)
        if cached is not None and not recheck:
            return cached[1]
        public = self._store.public_key(vin)
        if public is None:
            self._boxes.pop(vin, None)
            return None
        if cached is None or cached[0] != public:
            cached = self._boxes[vin] = (public, Box(self._key, PublicKey(public)))
        return cached[1]

    def handle(self, topic: str, payload: bytes) -> None:
        """Process one message inside the caller's transaction; never raises for bad input."""
        parts = split_topic(topic)
        if parts is None or parts[1] != "up":
            self._reject(topic, None, "not a vehicle uplink topic")
            return
        vin, _, kind = parts
        if kind == "records":
            self._handle_record(topic, vin, payload)
        elif kind == "status":
            self._handle_status(topic, vin, payload)
        else:
            self._reject(topic, vin, f"unknown uplink kind {kind!r}")

    def _handle_record(self, topic: str, vin: str, payload: bytes) -> None:
        box = self._box(vin)
        if box is None:
            self._reject(topic, vin, f"vehicle {vin} is not enrolled")
            return
        try:
            record = open_record(box, payload, topic_vin=vin, max_bytes=self._max_payload)
        except EnvelopeError as exc:
            current = self._box(vin, recheck=True)  # only on failure: the happy path stays one dict look-up
            if current is None or current is box:
                self._reject(topic, vin, str(exc))
                return
            try:
                record = open_record(current, payload, topic_vin=vin, max_bytes=self._max_payload)
            except EnvelopeError as again:
                self._reject(topic, vin, str(again))
                return
        if self._store.add_record(record, self._clock.now()):
            self.stats.stored += 1
            self.stats.by_vehicle[vin] += 1
            for observer in self._record_observers:
                self._notify(observer, record)
        else:
            self.stats.duplicates += 1
            _LOGGER.info("VIN %s seq %d already stored (resend or replay); acknowledged again", vin, record.seq)
        self._pending_acks[vin].add(record.seq)

    def _handle_status(self, topic: str, vin: str, payload: bytes) -> None:
        if not payload:
            return  # a retained status being cleared
        try:
            status = cbor2.loads(payload) if len(payload) <= 1024 else None
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
            self._reject(topic, vin, f"malformed CBOR in status: {exc}")
            return
        if not isinstance(status, dict) or not isinstance(status.get("online"), bool):
            self._reject(topic, vin, "malformed status: expected a map with boolean 'online' (max 1024 bytes)")
            return
        if self._store.public_key(vin) is None:
            self._reject(topic, vin, f"status from vehicle {vin}, which is not enrolled")
            return
        self._store.set_online(vin, status["online"], self._clock.now())
        for observer in self._status_observers:
            self._notify(observer, vin, status["online"])

    def _reject(self, topic: str, vin: str | None, reason: str) -> None:
        self.stats.rejected += 1
        _LOGGER.warning("rejected message on %s: %s", topic, reason)
        self._store.add_rejection(topic=topic, vin=vin, reason=reason, received=self._clock.now())

    def take_acks(self) -> list[tuple[str, bytes]]:
        """(topic, sealed ack) for everything handled since the last call; call after commit."""
        acks = []
        for vin, seqs in self._pending_acks.items():
            box = self._box(vin)
            if box is not None and seqs:
                acks.append((VehicleTopics(vin).down("ack"), seal_ack(box, vin, seqs)))
        self._pending_acks.clear()
        return acks


class IngestService:
    """The MQTT shell around `Ingest`: subscribe, batch per transaction, publish acks."""

    def __init__(
        self,
        ingest: Ingest,
        store: BackendStore,
        broker: BrokerConfig,
        *,
        max_batch: int = 500,
        identifier: str = "backend-stub",
    ) -> None:
        self._ingest = ingest
        self._store = store
        self._broker = broker
        self._max_batch = max_batch
        self._identifier = identifier
        self._backoff = Backoff(base_s=0.2, cap_s=10.0)
        self._rng = random.Random()  # noqa: S311 - reconnect jitter, not cryptography
        self.connected = asyncio.Event()

    async def run(self) -> None:
        await run_reconnecting(
            lambda: make_client(self._broker, identifier=self._identifier, max_inflight=1000),
            self._serve,
            broker=self._broker,
            backoff=self._backoff,
            rng=self._rng,
            on_down=self._on_down,
        )

    def _on_down(self, reason: str) -> None:
        self.connected.clear()
        _LOGGER.warning("backend MQTT link down: %s", reason)

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe(UP_WILDCARD, qos=1)
        self.connected.set()
        _LOGGER.info("backend ingest subscribed to %s on %s", UP_WILDCARD, self._broker.url)
        await self._consume(client)

    async def _consume(self, client: aiomqtt.Client) -> None:
        batch: list[tuple[str, bytes]] = []
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            batch.append((str(message.topic), payload))
            # Natural batching: commit when the broker has nothing more queued for us right now.
            if len(client.messages) == 0 or len(batch) >= self._max_batch:
                await self._flush(client, batch)
                batch = []

    async def _flush(self, client: aiomqtt.Client, batch: list[tuple[str, bytes]]) -> None:
        with self._store.transaction():
            for topic, payload in batch:
                self._ingest.handle(topic, payload)
        acks = self._ingest.take_acks()
        async with asyncio.TaskGroup() as publishes:
            for topic, ack in acks:
                publishes.create_task(client.publish(topic, ack, qos=1))
        self._ingest.stats.acks_sent += len(acks)
