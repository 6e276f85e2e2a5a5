"""An in-memory MQTT broker and its clients: the twin of Mosquitto behind `tcu.uplink.mqtt_port.MqttClient`.

It keeps the semantics the agent and the backend rely on, each checked against a real Mosquitto by the
same contract tests (`tests/contract/test_mqtt_twin.py`):

- QoS 0 and 1; a subscriber gets the lower of the publication's and its subscription's QoS, one copy per
  matching subscription (Mosquitto's default with overlapping filters), in publication order;
- retained messages: set, replaced, cleared by an empty retained payload (which subscribers still get
  live); sent with the retain flag on subscribing, without it live;
- topic filters with `+` and `#` (`a/#` matches `a` too; a wildcard first never matches `$...`);
  malformed filters and wildcard topics are a `ValueError`, as paho raises; an empty topic is a
  protocol error, for which the broker drops the connection (and sends the will);
- persistent sessions (the agent's): subscriptions survive a disconnect and QoS 1 messages are queued
  for them; QoS 0 is not queued. A clean start begins an empty session that ends with its connection;
- acknowledgements: a client acknowledges a QoS 1 message on receipt, as paho does, unless it was made
  with `manual_ack` (the agent's): then only `ack` does, and a message not acknowledged when the
  connection ends (read or not, handled or not) is sent again, first and in order, on the session's next
  connection, takeover included. Such a client hands out nothing more once its connection is gone;
- client-id takeover: a second connection with the same id closes the first (no will), and takes over
  the session, its queue and what it had not acknowledged;
- the last will goes out when a connection is lost (`drop`), not on an orderly disconnect;
- a stalled broker (`pause`): QoS 1 publishes wait for their acknowledgement and fail with `MqttError`
  after their timeout, yet are delivered on `resume`, as bytes already in a socket would be: at least
  once, never exactly once; a client's acks are likewise applied on `resume`. A connection dropped
  meanwhile loses what it had not got through.
- a stopped broker (`stop`) drops every connection without wills and refuses new ones until `start`;
  retained messages and sessions persist, as Mosquitto's persistence file keeps them.

Not modelled: MQTT 5 properties (message and session expiry), QoS 2, ACLs, keepalive, message size limits,
the broker's in-flight limit (a manual-ack client that acknowledges nothing would stall on Mosquitto).
An auto-acknowledging client loses with its connection what it had received but not yet iterated;
aiomqtt still hands those (already acknowledged) messages out after the drop: the twin is the stricter.

It lives in `hil` (like the ELM327 twin) so tests, benches and the demo can share it; `tcu` never
imports it, a test injects it into `UplinkSession` as the client factory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import aiomqtt
from aiomqtt.types import PayloadType

_LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0  # what `make_client` gives aiomqtt for the broker's replies


def validate_filter(topic_filter: str) -> None:
    """`ValueError` for a filter paho refuses: empty, `#` not alone and last, `+` not alone in its level."""
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ValueError(f"Invalid subscription filter {topic_filter!r}.")
    if not topic_filter or "\0" in topic_filter:
        raise ValueError(f"Invalid subscription filter {topic_filter!r}.")


def validate_topic(topic: str) -> None:
    """`ValueError` for a topic paho refuses; an empty one it sends, and the broker drops the connection."""
    if "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"Publish topic {topic!r} cannot contain wildcards.")


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT's matching (both already validated): `+` one level, `#` the rest including none."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # `$SYS/...` and the like are reached only by naming them
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels) or level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


@dataclass(frozen=True, slots=True)
class Publication:
    """One message as the broker accepted it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(eq=False, slots=True)
class _Session:
    persistent: bool
    subscriptions: dict[str, int] = field(default_factory=dict)  # filter -> granted QoS
    queued: deque[aiomqtt.Message] = field(default_factory=deque)  # QoS 1 for an offline persistent session
    unacked: dict[int, aiomqtt.Message] = field(default_factory=dict)  # mid -> sent to a manual-ack client
    link: _Link | None = None


@dataclass(eq=False, slots=True)
class _Link:
    """One network connection of one client."""

    identifier: str
    session: _Session
    will: aiomqtt.Will | None
    manual_ack: bool
    inbox: deque[aiomqtt.Message] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # an inbox item arrived, or the link closed
    closed_because: str | None = None

    def deliver(self, message: aiomqtt.Message) -> None:
        if self.manual_ack and message.qos >= 1:
            self.session.unacked[message.mid] = message  # until the client's `ack`; else sent again
        self.inbox.append(message)
        self.ready.set()

    def close(self, reason: str) -> None:
        if self.closed_because is None:
            self.closed_because = reason
            self.ready.set()


@dataclass(eq=False, slots=True)
class _Stalled:
    link: _Link
    publication: Publication
    acked: asyncio.Future[bool]  # True once routed; False if the connection was lost first


class MemoryBroker:
    """The broker: sessions by client id, retained messages, and the faults a bench needs."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, Publication] = {}
        self._paused = False
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._stalled: list[_Stalled] = []
        self._stalled_acks: list[tuple[_Link, int]] = []  # (connection, mid) sent while paused
        self._running = True
        self._mids = itertools.count(1)
        self.published: list[Publication] = []  # everything accepted, in order: for tests to read
        self.connects: dict[str, int] = {}  # client id -> connections accepted

    def client(
        self,
        identifier: str,
        *,
        clean_start: bool = False,
        will: aiomqtt.Will | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        manual_ack: bool = False,
    ) -> MemoryClient:
        return MemoryClient(
            self, identifier, clean_start=clean_start, will=will, timeout=timeout, manual_ack=manual_ack
        )

    @property
    def retained(self) -> dict[str, bytes]:
        return {topic: publication.payload for topic, publication in self._retained.items()}

    # -- faults ----------------------------------------------------------------------------------

    def drop(self, identifier: str, reason: str = "connection lost") -> None:
        """The network under `identifier`'s connection fails: its will goes out, its stalled bytes are lost."""
        session = self._sessions.get(identifier)
        if session is None or session.link is None:
            raise ValueError(f"client {identifier!r} is not connected")
        link = session.link
        self._disconnect(link, reason)
        for stalled in [item for item in self._stalled if item.link is link]:
            self._stalled.remove(stalled)
            if not stalled.acked.done():
                stalled.acked.set_result(False)
        if link.will is not None:
            will = link.will
            self._accept(Publication(will.topic, _as_bytes(will.payload), min(will.qos, 1), will.retain), sender=None)

    def pause(self) -> None:
        """A wedged broker: connections stay open, nothing is acknowledged or delivered until `resume`."""
        self._paused = True
        self._unpaused.clear()

    def resume(self) -> None:
        self._paused = False
        self._unpaused.set()
        stalled, self._stalled = self._stalled, []
        for item in stalled:
            self._route(item.publication)
            if not item.acked.done():
                item.acked.set_result(True)
        acks, self._stalled_acks = self._stalled_acks, []
        for link, mid in acks:
            self._ack(link, mid)

    def stop(self) -> None:
        """The broker process dies: every connection drops without a will; connecting fails until `start`."""
        self._running = False
        for session in list(self._sessions.values()):
            if session.link is not None:
                self._disconnect(session.link, "broker went away")
        for item in self._stalled:
            if not item.acked.done():
                item.acked.set_result(False)
        self._stalled.clear()

    def start(self) -> None:
        self._running = True

    # -- what clients call -----------------------------------------------------------------------

    def _connect(self, identifier: str, *, clean_start: bool, will: aiomqtt.Will | None, manual_ack: bool) -> _Link:
        if not self._running:
            raise aiomqtt.MqttError(f"[code:1] Connection refused: no broker for {identifier!r}")
        session = self._sessions.get(identifier)
        if session is not None and session.link is not None:
            _LOGGER.info("client %s taken over by a new connection", identifier)
            self._disconnect(session.link, "Session taken over")
            session = self._sessions.get(identifier)  # a clean session ended with its connection
        if session is None or clean_start:
            session = _Session(persistent=not clean_start)
            self._sessions[identifier] = session
        link = _Link(identifier, session, will, manual_ack)
        session.link = link
        self.connects[identifier] = self.connects.get(identifier, 0) + 1
        unacked, session.unacked = list(session.unacked.values()), {}
        for message in unacked:  # what the last connection did not acknowledge goes first, in its order
            link.deliver(message)
        while session.queued:
            link.deliver(session.queued.popleft())
        return link

    def _disconnect(self, link: _Link, reason: str) -> None:
        link.close(reason)
        session = link.session
        if session.link is link:
            session.link = None
            if not session.persistent and self._sessions.get(link.identifier) is session:
                del self._sessions[link.identifier]

    def _ack(self, link: _Link, mid: int) -> None:
        """A PUBACK from `link`: lost with a closed connection, held by a stalled broker."""
        if link.closed_because is not None:
            return
        if self._paused:
            self._stalled_acks.append((link, mid))
            return
        link.session.unacked.pop(mid, None)

    def _subscribe(self, link: _Link, topic_filter: str, qos: int) -> None:
        granted = min(qos, 1)
        link.session.subscriptions[topic_filter] = granted
        for publication in self._retained.values():
            if filter_matches(topic_filter, publication.topic):
                link.deliver(self._message(publication, min(publication.qos, granted), retain=True))

    def _accept(self, publication: Publication, *, sender: _Link | None) -> asyncio.Future[bool]:
        """Take a publication; the future is the sender's acknowledgement (False: lost with its connection)."""
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._paused and sender is not None:
            self._stalled.append(_Stalled(sender, publication, acked))
            return acked
        self._route(publication)
        acked.set_result(True)
        return acked

    async def _until_running(self) -> None:
        await self._unpaused.wait()

    def _route(self, publication: Publication) -> None:
        self.published.append(publication)
        if publication.retain:
            if publication.payload:
                self._retained[publication.topic] = publication
            else:
                self._retained.pop(publication.topic, None)
        for session in self._sessions.values():
            for topic_filter, granted in session.subscriptions.items():
                if not filter_matches(topic_filter, publication.topic):
                    continue
                qos = min(publication.qos, granted)
                message = self._message(publication, qos, retain=False)
                if session.link is not None:
                    session.link.deliver(message)
                elif qos >= 1:
                    session.queued.append(message)

    def _message(self, publication: Publication, qos: int, *, retain: bool) -> aiomqtt.Message:
        return aiomqtt.Message(publication.topic, publication.payload, qos, retain, next(self._mids), None)


def _as_bytes(payload: PayloadType) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


class MemoryMessages:
    """`client.messages` of a `MemoryClient`."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client

    def __aiter__(self) -> AsyncIterator[aiomqtt.Message]:
        return self

    async def __anext__(self) -> aiomqtt.Message:
        while True:
            link = self._client.link_or_error("Disconnected during message iteration")
            if link.inbox:
                return link.inbox.popleft()
            link.ready.clear()
            await link.ready.wait()

    def __len__(self) -> int:
        link = self._client.current_link
        return 0 if link is None else len(link.inbox)


class MemoryClient:
    """A client of a `MemoryBroker`; satisfies `tcu.uplink.mqtt_port.MqttClient`."""

    def __init__(
        self,
        broker: MemoryBroker,
        identifier: str,
        *,
        clean_start: bool,
        will: aiomqtt.Will | None,
        timeout: float,
        manual_ack: bool = False,
    ) -> None:
        self._broker = broker
        self._identifier = identifier
        self._clean_start = clean_start
        self._will = will
        self._timeout = timeout
        self._manual_ack = manual_ack
        self._link: _Link | None = None

    @property
    def identifier(self) -> str:
        return self._identifier

    @property
    def current_link(self) -> _Link | None:
        return self._link

    def link_or_error(self, what: str) -> _Link:
        link = self._link
        if link is None:
            raise aiomqtt.MqttError(f"{what}: the client is not connected")
        if link.closed_because is not None:
            raise aiomqtt.MqttError(f"{what}: {link.closed_because}")
        return link

    async def __aenter__(self) -> Self:
        if self._link is not None and self._link.closed_because is None:
            raise aiomqtt.MqttReentrantError("The client context manager is reusable, but not reentrant")
        await asyncio.sleep(0)  # a connect is I/O: let others run, as a real one would
        self._link = self._broker._connect(
            self._identifier, clean_start=self._clean_start, will=self._will, manual_ack=self._manual_ack
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        link, self._link = self._link, None
        if link is not None and link.closed_because is None:
            self._broker._disconnect(link, "client disconnected")  # an orderly DISCONNECT: no will

    @property
    def messages(self) -> MemoryMessages:
        return MemoryMessages(self)

    def ack(self, message: aiomqtt.Message) -> None:
        """PUBACK `message` on the current connection (manual acks only; otherwise it was acked on receipt)."""
        link = self._link
        if self._manual_ack and link is not None and message.qos >= 1:
            self._broker._ack(link, message.mid)

    async def subscribe(self, topic: str, *, qos: int = 0) -> object:
        validate_filter(topic)
        self.link_or_error("Could not subscribe")
        try:
            async with asyncio.timeout(self._timeout):
                await self._broker._until_running()  # a stalled broker sends no SUBACK
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None
        self._broker._subscribe(self.link_or_error("Could not subscribe"), topic, qos)
        return (min(qos, 1),)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - aiomqtt's signature: a publish has its own ack timeout
    ) -> None:
        validate_topic(topic)
        link = self.link_or_error("Could not publish message")
        if not topic:
            self._broker.drop(self._identifier, "[code:130] Protocol error")
            raise aiomqtt.MqttError("Could not publish message: the broker dropped the connection (empty topic)")
        acked = self._broker._accept(Publication(topic, _as_bytes(payload), min(qos, 1), retain), sender=link)
        await asyncio.sleep(0)  # a publish is I/O: others run meanwhile, as with a socket
        if qos == 0:
            return
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                delivered = await asyncio.shield(acked)
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None
        if not delivered:
            raise aiomqtt.MqttError(f"Disconnected before the broker acknowledged {topic!r}")

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """`publish` without waiting for the acknowledgement: delivered at once, or held by a stalled broker."""
        validate_topic(topic)
        link = self.link_or_error("Could not publish message")
        if not topic:
            self._broker.drop(self._identifier, "[code:130] Protocol error")
            raise aiomqtt.MqttError("Could not publish message: the broker dropped the connection (empty topic)")
        self._broker._accept(Publication(topic, _as_bytes(payload), min(qos, 1), retain), sender=link)
