"""CarData streaming: each record ingest stores goes out, as CarData messages, to the clients the owner
consented to, on the owner's topic `<gcid>/<vin>` of the streaming broker (MQTT over TLS; BMW's clients
subscribe there with username = gcid and password = id_token, `backend_stub.cardata.streaming_credentials`).

- Only consented keys: each message carries the keys of the record that the client may receive now,
  and nothing when it may receive none. With several consenting clients of one owner on the one topic,
  the message carries the keys the streaming client (`holder`, the one whose id_token is the owner's
  streaming password, newest wins: `StreamingCredentials.holder`) may receive, and nothing while no
  client holds the login (nobody could read it). Without a holder function (streaming logins kept by
  hand), only the keys all of them may receive.
- Only available keys: those the capability service calls available for the VIN now (SIM state,
  running services, the privacy settings: `availability.py`), as REST answers — read per round with
  the consents and dropped with them.
- At most as often as the catalogue allows (`CardataKey.min_interval_s`, per gcid + VIN + key): a
  reading that comes too early is held and coalesced, the latest wins (`stream_rate.RateGate`).
- Push events (`backend_stub.cardata.push`) go out at once, whatever the interval.
- Each message is logged as a transfer ("stream" or "push") for the owner's transaction report, after
  it was handed to the broker.
- Revocation stops streaming at once: consent is read at publish time, for every round of messages.
  It is cached, but the cache is dropped whenever anything was committed to the database since
  (SQLite's `PRAGMA data_version`), so a revoke is never missed; readings held for a stream whose
  consent ended are dropped with it.

Never in ingest's way: the ingest observer only appends the record to a bounded queue (the oldest goes
when it is full; how many is counted and logged), and the rest runs in this service's task, with the
consent reads and transfer writes on a database thread of its own (SQLite WAL: a reader never waits for
ingest's transaction). MQTT QoS 0, as BMW streams: a message the link loses is not sent again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from backend_stub.cardata.availability import Availability
from backend_stub.cardata.catalogue import CardataCatalogue
from backend_stub.cardata.consents import CardataStore
from backend_stub.cardata.push import PushMap
from backend_stub.cardata.stream_message import Reading, encode_message, readings_from_signals, stream_topic
from backend_stub.cardata.stream_rate import RateGate, StreamId
from backend_stub.database_thread import DatabaseThread
from backend_stub.ingest import Ingest
from backend_stub.service_shell import ServiceShell
from backend_stub.wakeup import Wakeup
from tcu.broker_config import BrokerConfig
from tcu.clock import Clock
from tcu.uplink.mqtt_port import ClientFactory, MqttClient
from telematics_wire.records import ReceivedRecord, RecordKind

_LOGGER = logging.getLogger(__name__)
_Item = TypeVar("_Item")
MAX_QUEUE = 10_000  # records waiting to be streamed; at ~1 kB each a bounded 10 MB
CONSENT_MAX_AGE_S = 1.0  # a consent may also end by time (`now`), not only by a commit
Holder = Callable[[str], str | None]  # gcid → the client whose token streams for it now, if known


class BoundedInbox(Generic[_Item]):
    """A queue any thread may append to, holding at most `limit` items: when full the oldest goes."""

    def __init__(self, limit: int) -> None:
        self._items: deque[_Item] = deque()
        self._limit = limit
        self._lock = threading.Lock()
        self._dropped = 0
        self.wakeup = Wakeup()

    def put(self, item: _Item) -> None:
        with self._lock:
            was_empty = not self._items
            if len(self._items) >= self._limit:
                self._items.popleft()
                self._dropped += 1
            self._items.append(item)
        if was_empty:  # one wake-up per batch: the taker takes everything queued by then
            self.wakeup.set()

    def take(self) -> tuple[list[_Item], int]:
        """Everything queued, in order, and how many were dropped since the last take."""
        with self._lock:
            items, dropped = list(self._items), self._dropped
            self._items.clear()
            self._dropped = 0
        return items, dropped


@dataclass(frozen=True, slots=True)
class Audience:
    """Who hears a VIN's stream on the owner's topic, and which keys it may carry."""

    gcid: str
    clients: tuple[str, ...]
    keys: frozenset[str]


def audiences(consents: list[tuple[str, str, frozenset[str]]], holder: Holder | None) -> list[Audience]:
    """The audience per gcid of `consenting_clients` rows (see the module docstring)."""
    by_gcid: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for gcid, client_id, keys in consents:
        by_gcid.setdefault(gcid, []).append((client_id, keys))
    result = []
    for gcid, entries in by_gcid.items():
        streaming = None if holder is None else holder(gcid)
        chosen = entries if holder is None else [entry for entry in entries if entry[0] == streaming]
        if chosen:
            keys = frozenset.intersection(*(keys for _, keys in chosen))
            result.append(Audience(gcid, tuple(client for client, _ in chosen), keys))
    return result


class ConsentCache:
    """`consenting_clients` and the available keys by VIN, dropped when the database changed or
    `max_age_s` passed (a term may end by time alone).

    Used on the streamer's database thread only (the connections are that thread's)."""

    def __init__(
        self,
        store: CardataStore,
        database: Path,
        clock: Clock,
        max_age_s: float,
        availability: Availability | None = None,
    ) -> None:
        self._store = store
        self._availability = availability
        self._available: dict[str, frozenset[str]] = {}
        self._clock = clock
        self._max_age_s = max_age_s
        # A connection of its own: data_version changes when any *other* connection commits.
        self._probe = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)
        self._version: int | None = None
        self._since = 0.0
        self._by_vin: dict[str, list[tuple[str, str, frozenset[str]]]] = {}

    def consenting(self, vin: str, now: datetime) -> list[tuple[str, str, frozenset[str]]]:
        (version,) = self._probe.execute("PRAGMA data_version").fetchone()
        moment = self._clock.monotonic()
        if version != self._version or moment - self._since > self._max_age_s:
            self._by_vin.clear()
            self._available.clear()
            self._version, self._since = version, moment
        cached = self._by_vin.get(vin)
        if cached is None:
            cached = self._by_vin[vin] = self._store.consenting_clients(vin, now)
        return cached

    def available(self, vin: str, now: datetime) -> frozenset[str] | None:
        """The keys the capability service calls available (after `consenting` for the same round);
        None when nothing decides (every key passes)."""
        if self._availability is None:
            return None
        cached = self._available.get(vin)
        if cached is None:
            cached = self._available[vin] = self._availability.available(vin, now)
        return cached

    def close(self) -> None:
        self._probe.close()
        if self._availability is not None:
            self._availability.close()


@dataclass(slots=True)
class StreamStats:
    streamed: int = 0  # stream messages handed to the broker
    pushed: int = 0  # push messages handed to the broker
    dropped: int = 0  # records not streamed: the queue was full
    held: int = 0  # readings held back by a key's minimum interval right now


_Transfer = tuple[str, str, str, str]  # (gcid, client_id, vin, channel)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    stream: StreamId
    channel: str  # "stream" or "push"
    audience: Audience
    readings: dict[str, Reading]


class CardataStreamer:
    """The streaming and push service: an ingest observer and one task on the streaming broker."""

    def __init__(
        self,
        catalogue: CardataCatalogue,
        database: Path,
        broker: BrokerConfig,
        clock: Clock,
        *,
        holder: Holder | None = None,
        availability: Availability | None = None,
        max_queue: int = MAX_QUEUE,
        poll_s: float = 0.2,
        identifier: str = "backend-stub-cardata",
        clients: ClientFactory | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._database = database
        self._clock = clock
        self._holder = holder
        self._availability = availability  # used (and closed) on the streamer's database thread
        self._poll_s = poll_s
        self._push = PushMap(catalogue)
        self._intervals = {name: entry.min_interval_s for name, entry in catalogue.entries.items()}
        self._inbox: BoundedInbox[ReceivedRecord] = BoundedInbox(max_queue)
        self._gate: RateGate[Reading] = RateGate()
        self._thread = DatabaseThread("cardata-stream")
        self._cache: ConsentCache | None = None  # opened on the thread by the first round
        self._store: CardataStore | None = None
        self.stats = StreamStats()
        self.shell = ServiceShell(
            "cardata streaming", broker, identifier=identifier, database=self._thread, clients=clients
        )

    def attach(self, ingest: Ingest) -> None:
        ingest.add_observer(self._inbox.put)

    async def run(self) -> None:
        try:
            await self.shell.run(serve=self._serve)
        finally:
            self._thread.submit(self._close)
            self._thread.close()

    async def _serve(self, client: MqttClient) -> None:
        await self.shell.repeat(
            lambda: self.publish_round(client),
            what="publishing CarData streams",
            wakeup=self._inbox.wakeup,
            poll_s=self._poll_s,
            due=self._held_due,
        )

    async def _held_due(self) -> bool:
        due = self._gate.next_due(self._intervals)
        return due is not None and due <= self._clock.monotonic()

    async def publish_round(self, client: MqttClient) -> None:
        """Publish what was stored since the last round, and the held readings now due."""
        records, dropped = self._inbox.take()
        if dropped:
            self.stats.dropped += dropped
            _LOGGER.warning("CarData streaming fell behind: %d record(s) not streamed (its queue was full)", dropped)
        now, moment = self._clock.now(), self._clock.monotonic()
        fresh = [(record.vin, self._stream_readings(record), self._push.readings(record)) for record in records]
        vins = {vin for vin, streamed, pushed in fresh if streamed or pushed} | {vin for _, vin in self._gate.streams()}
        if not vins:
            return
        heard = await self.shell.offload(self._audiences, sorted(vins), now)
        for stream in self._gate.streams():
            if stream not in heard:
                self._gate.forget(stream)  # consent ended: what it held goes nowhere
        messages: list[_Outgoing] = []
        for vin, streamed, pushed in fresh:
            for stream, audience in heard.items():
                if stream[1] != vin:
                    continue
                messages.append(_Outgoing(stream, "push", audience, _only(pushed, audience.keys)))
                allowed = _only(streamed, audience.keys)
                passed = self._gate.offer(stream, allowed, self._intervals, moment) if allowed else {}
                messages.append(_Outgoing(stream, "stream", audience, passed))
        for stream, held in self._gate.take_due(self._intervals, moment).items():
            messages.append(_Outgoing(stream, "stream", heard[stream], _only(held, heard[stream].keys)))
        self.stats.held = self._gate.held_count
        await self._publish(client, messages, now)

    def _stream_readings(self, record: ReceivedRecord) -> dict[str, Reading]:
        if record.kind is not RecordKind.TELEMETRY:
            return {}
        return readings_from_signals(record.body.get("signals"), self._catalogue, record.created, streamable_only=True)

    async def _publish(self, client: MqttClient, messages: list[_Outgoing], now: datetime) -> None:
        sent: dict[_Transfer, set[str]] = {}
        try:
            for message in messages:
                if not message.readings:
                    continue
                gcid, vin = message.stream
                payload = encode_message(gcid=gcid, vin=vin, readings=message.readings, now=now)
                client.publish_nowait(stream_topic(gcid, vin), payload, qos=0)
                if message.channel == "push":
                    self.stats.pushed += 1
                else:
                    self.stats.streamed += 1
                for client_id in message.audience.clients:
                    sent.setdefault((gcid, client_id, vin, message.channel), set()).update(message.readings)
        finally:  # what went out is reported, even when the link failed half-way
            if sent:
                await self.shell.offload(self._log_transfers, sent, now)

    # -- on the streamer's database thread ----------------------------------------------------------

    def _audiences(self, vins: list[str], now: datetime) -> dict[StreamId, Audience]:
        if self._cache is None:
            self._store = CardataStore(self._database, self._catalogue)
            self._cache = ConsentCache(self._store, self._database, self._clock, CONSENT_MAX_AGE_S, self._availability)
        heard: dict[StreamId, Audience] = {}
        for vin in vins:
            found = audiences(self._cache.consenting(vin, now), self._holder)
            available = self._cache.available(vin, now) if found else None  # read only for a listener
            for audience in found:
                keys = audience.keys if available is None else audience.keys & available
                heard[(audience.gcid, vin)] = Audience(audience.gcid, audience.clients, keys)
        return heard

    def _log_transfers(self, sent: Mapping[_Transfer, set[str]], now: datetime) -> None:
        store = self._store
        if store is None:
            return
        try:
            with store.transaction():  # one commit for the round, not one per message
                for (gcid, client_id, vin, channel), keys in sent.items():
                    store.log_transfer(gcid, client_id, vin, channel, keys, now)
        except Exception:  # the messages went out: say loudly that the report misses them
            _LOGGER.exception("CarData: %d transfer(s) were sent but could not be logged", len(sent))

    def _close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        if self._store is not None:
            self._store.close()


def _only(readings: Mapping[str, Reading], keys: frozenset[str]) -> dict[str, Reading]:
    return {key: reading for key, reading in readings.items() if key in keys}
