"""Ingest: open each vehicle envelope, store it once, and acknowledge it end to end.

`Ingest` is sans-I/O (topic + payload in, acks to send out) so tests drive it without a broker;
`IngestService` runs it on the backend's service shell (`backend_stub.service_shell`), its
transactions on the database thread so the loop never waits on a lock or an fsync. Acks are sent
only after the batch holding the records is committed: an ack promises the vehicle that it may
forget the record. Duplicates (a resend after a
lost ack, or a replay) are stored once and acknowledged again so the vehicle stops resending.
Observers (e.g. provisioning) hear of each newly stored record and each vehicle status.

One message is at most one rejection: each is handled in its own savepoint, so a message that cannot
be processed (a value the store cannot hold, a bug) undoes only its own writes and is rejected with
the reason, while the rest of its batch commits. Reasons show foreign values through `describe`,
never `str()`, which fails on a 5,000-digit integer.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from nacl.public import Box, PrivateKey, PublicKey

from backend_stub.database_thread import DatabaseThread
from backend_stub.errors import BackendError, DatabaseError, UnstorableError
from backend_stub.service_shell import ServiceShell
from backend_stub.store import BackendStore
from tcu.broker_config import BrokerConfig
from tcu.clock import Clock
from tcu.uplink.mqtt_port import ClientFactory, MqttClient
from telematics_wire.envelope import open_record, seal_ack
from telematics_wire.errors import CborError, EnvelopeError
from telematics_wire.records import ReceivedRecord
from telematics_wire.strict_cbor import describe, loads_strict
from telematics_wire.topics import UP_WILDCARD, VehicleTopics, split_topic

_LOGGER = logging.getLogger(__name__)
MAX_STATUS_BYTES = 1024
_MAX_REASON_CHARS = 1000  # a reason is for a person; the message itself is not kept
_MAX_TOPIC_CHARS = 256

RecordObserver = Callable[[ReceivedRecord], None]
StatusObserver = Callable[[str, bool], None]  # (vin, online)


@dataclass(slots=True)
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks_sent: int = 0
    new_epochs: int = 0
    by_vehicle: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Ingest:
    def __init__(self, store: BackendStore, private_key: PrivateKey, clock: Clock, max_payload_bytes: int) -> None:
        self._store = store
        self._key = private_key
        self._clock = clock
        self._max_payload = max_payload_bytes
        # Per vehicle: its enrolled public key and the precomputed X25519 shared key.
        self._boxes: dict[str, tuple[bytes, Box]] = {}
        self._pending_acks: dict[tuple[str, bytes], set[int]] = defaultdict(set)  # (vin, epoch) -> seqs
        self._record_observers: list[RecordObserver] = []
        self._status_observers: list[StatusObserver] = []
        self.stats = IngestStats()

    def add_observer(self, observer: RecordObserver) -> None:
        """Call `observer` with every newly stored record (never with a duplicate).

        Observers run inside the ingest transaction, before its commit, and on the database thread
        when the app runs: they must be quick, safe to call from that thread, and must not write
        through another connection to this database (it would wait on this transaction's lock) —
        queue the work instead (`backend_stub.service_shell.EventInbox`). One that raises is logged
        and skipped: a bug in a consumer must not stop the ingest of everything else, eCall records
        included.
        """
        self._record_observers.append(observer)

    def add_status_observer(self, observer: StatusObserver) -> None:
        """Call `observer(vin, online)` for every valid status of an enrolled vehicle; same rules as above.

        Every status is passed on, not only changes: a vehicle that reconnects says "online" again even
        when the backend never saw it go offline.
        """
        self._status_observers.append(observer)

    def notify_stored(self, record: ReceivedRecord) -> None:
        """Tell the record observers of a record another ingest worker stored and committed
        (`backend_stub.ingest_workers`): the services that book events run in this process only."""
        for observer in self._record_observers:
            self._notify(observer, record)

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
        """Process one message inside the caller's transaction: stored, or one rejection with the reason.

        Never raises for anything a message holds. Raises `DatabaseError` only when the database
        itself fails (disk full, I/O error): then the caller's transaction is lost, and nothing
        handled in it may be acknowledged.
        """
        parts = split_topic(topic)
        vin = None if parts is None else parts[0]
        after: list[Callable[[], None]] = []  # observers and acks, once the message's writes stand
        try:
            with self._store.savepoint():
                self._dispatch(topic, parts, payload, after)
        except DatabaseError:
            raise
        except Exception as exc:  # one message must never stop the ingest of every vehicle
            if isinstance(exc, UnstorableError):
                _LOGGER.debug("unstorable message on %s", _shown_topic(topic), exc_info=True)
            else:
                _LOGGER.exception("handling a message on %s failed", _shown_topic(topic))
            try:
                self._reject(topic, vin, f"could not process the message: {_exception_text(exc)}")
            except sqlite3.Error as failed:
                raise DatabaseError(f"cannot record a rejection: {failed}") from failed
            return
        for step in after:
            step()

    def _dispatch(
        self, topic: str, parts: tuple[str, str, str] | None, payload: bytes, after: list[Callable[[], None]]
    ) -> None:
        if parts is None or parts[1] != "up":
            self._reject(topic, None, "not a vehicle uplink topic")
            return
        vin, _, kind = parts
        if kind == "records":
            self._handle_record(topic, vin, payload, after)
        elif kind == "status":
            self._handle_status(topic, vin, payload, after)
        else:
            self._reject(topic, vin, f"unknown uplink kind {describe(kind)}")

    def _handle_record(self, topic: str, vin: str, payload: bytes, after: list[Callable[[], None]]) -> None:
        box = self._box(vin)
        if box is None:
            self._reject(topic, vin, f"vehicle {vin:.40} is not enrolled")
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
        added = self._store.add_record(record, self._clock.now())
        if added.skipped:
            # Stored and acknowledged (the vehicle must not resend it forever), but said out loud.
            self._reject(
                topic,
                vin,
                f"record seq {record.seq} stored, but not taken as last values: {'; '.join(added.skipped)}",
                counted=False,
            )
        after.append(lambda: self._accepted(record, new=added.new, new_epoch=added.new_epoch))

    def _accepted(self, record: ReceivedRecord, *, new: bool, new_epoch: bool) -> None:
        if new_epoch and record.epoch:
            self.stats.new_epochs += 1
            earlier = len(self._store.epochs(record.vin)) - 1
            if earlier:
                _LOGGER.warning(
                    "VIN %s sends from a new queue epoch %s, starting at seq %d (%d earlier epoch(s)): its queue "
                    "was reset (re-flashed, data dir wiped) or a second agent uses this VIN; sequence numbers restart",
                    record.vin,
                    record.epoch.hex(),
                    record.seq,
                    earlier,
                )
            else:
                _LOGGER.info("VIN %s: first queue epoch %s", record.vin, record.epoch.hex())
        if new:
            self.stats.stored += 1
            self.stats.by_vehicle[record.vin] += 1
            for observer in self._record_observers:
                self._notify(observer, record)
        else:
            self.stats.duplicates += 1
            _LOGGER.info(
                "VIN %s epoch %s seq %d already stored (resend or replay); acknowledged again",
                record.vin,
                record.epoch.hex() or "legacy",
                record.seq,
            )
        self._pending_acks[(record.vin, record.epoch)].add(record.seq)

    def _handle_status(self, topic: str, vin: str, payload: bytes, after: list[Callable[[], None]]) -> None:
        if not payload:
            return  # a retained status being cleared
        if len(payload) > MAX_STATUS_BYTES:
            self._reject(topic, vin, f"oversize status: {len(payload)} bytes > limit {MAX_STATUS_BYTES}")
            return
        try:
            status = loads_strict(payload, "status")
        except CborError as exc:
            self._reject(topic, vin, str(exc))
            return
        if not isinstance(status, dict) or type(status.get("online")) is not bool:
            self._reject(topic, vin, "malformed status: expected a map with boolean 'online'")
            return
        if self._store.public_key(vin) is None:
            self._reject(topic, vin, f"status from vehicle {vin:.40}, which is not enrolled")
            return
        online: bool = status["online"]
        self._store.set_online(vin, online, self._clock.now())
        after.append(lambda: self._status_changed(vin, online))

    def _status_changed(self, vin: str, online: bool) -> None:
        for observer in self._status_observers:
            self._notify(observer, vin, online)

    def _reject(self, topic: str, vin: str | None, reason: str, *, counted: bool = True) -> None:
        if counted:
            self.stats.rejected += 1
        topic, reason = _bounded(topic, _MAX_TOPIC_CHARS), _bounded(reason, _MAX_REASON_CHARS)
        vin = None if vin is None else _bounded(vin, _MAX_TOPIC_CHARS)
        _LOGGER.warning("rejected message on %s: %s", topic, reason)
        self._store.add_rejection(topic=topic, vin=vin, reason=reason, received=self._clock.now())

    def forget_acks(self) -> None:
        """Drop the acks of a transaction that did not commit: its records are not stored."""
        self._pending_acks.clear()

    def take_acks(self) -> list[tuple[str, bytes]]:
        """(topic, sealed ack) for everything handled since the last call; call after commit."""
        acks = []
        for (vin, epoch), seqs in self._pending_acks.items():
            box = self._box(vin)
            if box is not None and seqs:
                acks.append((VehicleTopics(vin).down("ack"), seal_ack(box, vin, seqs, epoch=epoch)))
        self._pending_acks.clear()
        return acks


def _bounded(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, and storable as UTF-8 whatever it holds (lone surrogates)."""
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shown_topic(topic: str) -> str:
    return _bounded(topic, _MAX_TOPIC_CHARS)


def _exception_text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a message that cannot even be shown still needs a reason
        text = "(its message cannot be shown)"
    return text if isinstance(exc, BackendError) else f"{type(exc).__name__}: {text}"


class IngestService:
    """Ingest on the service shell: subscribe to every vehicle's uplink, store batches on the database
    thread, publish the acks of what was committed."""

    def __init__(
        self,
        ingest: Ingest,
        store: BackendStore,
        broker: BrokerConfig,
        *,
        max_batch: int = 500,
        identifier: str = "backend-stub",
        database: DatabaseThread | None = None,
        clients: ClientFactory | None = None,
        subscriptions: tuple[str, ...] = (UP_WILDCARD,),
    ) -> None:
        self._ingest = ingest
        self._store = store
        self._max_batch = max_batch
        self.shell = ServiceShell(
            "backend ingest",
            broker,
            identifier=identifier,
            database=database,
            subscriptions=subscriptions,  # shared ($share/...) when several ingest workers split the load
            max_inflight=1000,
            clients=clients,
        )
        self.connected = self.shell.connected

    async def run(self) -> None:
        await self.shell.run(serve=self._consume)

    async def _consume(self, client: MqttClient) -> None:
        batch: list[tuple[str, bytes]] = []
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            batch.append((str(message.topic), payload))
            # Natural batching: commit when the broker has nothing more queued for us right now.
            if len(client.messages) == 0 or len(batch) >= self._max_batch:
                await self._flush(client, batch)
                batch = []

    async def _flush(self, client: MqttClient, batch: list[tuple[str, bytes]]) -> None:
        acks = await self.shell.offload(self.store_batch, batch)
        # Not awaited: an ack the link loses is no loss, the vehicle sends its records again after its ack
        # timeout and gets them acknowledged again (duplicates are stored once).
        for topic, ack in acks:
            client.publish_nowait(topic, ack, qos=1)
        self._ingest.stats.acks_sent += len(acks)

    def store_batch(self, batch: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Handle `batch` in one transaction; the acks to publish, none when it did not commit."""
        try:
            with self._store.transaction():
                for topic, payload in batch:
                    self._ingest.handle(topic, payload)
        except BackendError as exc:
            # The database failed (full, locked beyond the busy timeout), not a message: nothing of the
            # batch is stored, so nothing is acknowledged and the vehicles send it again. Ingest goes
            # on; the disk may recover, the lock be released.
            self._ingest.forget_acks()
            _LOGGER.error(
                "a batch of %d message(s) was not stored and is not acknowledged (the vehicles resend it): %s",
                len(batch),
                exc,
            )
            return []
        return self._ingest.take_acks()
