"""Building aiomqtt clients from configuration, shared by the agent and the backend stub.

Sessions are persistent on purpose: aiomqtt's default clean start on the first connect of a process
throws away messages the broker queued while the process was down (a provisioning file sent to a
vehicle that was off). MQTT 5 gets `clean_start=False` plus a Session Expiry Interval; MQTT 3.1.1
(the embedded broker) gets `clean_session=False`.

Acknowledgements: paho acknowledges a QoS 1 message (PUBACK) as soon as it arrives, so a message the
application had not handled yet is gone if the link drops. A client made with `manual_ack=True` leaves
the PUBACK to the caller (`BrokerClient.ack`, once the message is handled): the broker then sends an
unacknowledged message again to the persistent session on the next connection.

Per-message cost: aiomqtt's awaited `publish` costs an Event, a `wait_for` timer and a scan of every
pending call, and its message iterator a task and an `asyncio.wait` per message. `publish_nowait`
hands the message to paho and returns (paho keeps its in-flight window and queues past it), for
senders whose delivery an end-to-end ack decides; `messages` hands out what is queued without waiting
and otherwise waits on one future that the next message or the end of the link resolves.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Self, TypeVar

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.client import MessagesIterator
from aiomqtt.exceptions import MqttCodeError, MqttConnectError
from paho.mqtt import _packet as paho_packets
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tcu.backoff import Backoff
from tcu.broker_config import BrokerConfig
from tcu.reconnect import ReconnectLoop, Sleep
from tcu.uplink.mqtt_port import MqttClient
from tcu.virtual_time import io_timeout

_LOGGER = logging.getLogger(__name__)

_REFUSED_CREDENTIALS = {4, 5, 134, 135}  # v3.1.1 rc 4/5, v5 reason codes 0x86/0x87

ClientT = TypeVar("ClientT", bound=MqttClient)  # aiomqtt's client, or the in-memory twin in tests
_FAIR_SHARE = 64  # messages handed out back to back before the iterator lets the loop's other tasks run


class _LeanProperties(Properties):
    """paho's MQTT 5 `Properties`, its lookup tables (names, types, which property fits which packet)
    shared by the class instead of built again for every packet: paho decodes one for each PUBLISH and
    PUBACK it receives, and those dictionaries were 8 % of a fleet's CPU. The tables are only read, so
    every method behaves as paho's own; `clear` drops the set properties without a pass over every name."""

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's name
        object.__setattr__(self, "packetType", packetType)

    def clear(self) -> None:
        for name in [name for name in vars(self) if name != "packetType"]:
            object.__delattr__(self, name)


def _share_property_tables() -> None:
    """Hand paho's packet decoder (a private module of paho 2.2) the lean class. A paho laid out otherwise
    keeps its own class: slower, never wrong. Idempotent; what we build ourselves stays paho's class."""
    if getattr(paho_packets, "Properties", None) is not Properties:
        _LOGGER.debug("paho's packet decoder is not laid out as in paho 2.2: its Properties left as they are")
        return
    template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for table in ("types", "names", "properties"):
        setattr(_LeanProperties, table, getattr(template, table))
    paho_packets.Properties = _LeanProperties  # type: ignore[attr-defined]


_share_property_tables()


class BrokerClient(aiomqtt.Client):
    """aiomqtt's client with `ack`, which satisfies `tcu.uplink.mqtt_port.MqttClient`."""

    def __init__(self, *args: Any, manual_ack: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._manual_ack = manual_ack
        self._client.manual_ack_set(manual_ack)  # aiomqtt 2.5 has no option of its own for it
        self._arrival: asyncio.Future[None] | None = None  # what an iterator waiting for a message awaits

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._disconnected.add_done_callback(lambda _link: self._wake())
        return self

    def ack(self, message: aiomqtt.Message) -> None:
        """PUBACK `message` (QoS 1, manual acks; otherwise paho does nothing): the broker may forget it."""
        self._client.ack(message.mid, message.qos)

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Hand the message to paho without waiting for the PUBACK; `MqttError` if paho cannot take it."""
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttCodeError(info.rc, "Could not publish message")

    @property
    def messages(self) -> MessagesIterator:
        return _Messages(self, end_with_link=self._manual_ack)

    def link_lost(self) -> bool:
        """The current connection dropped."""
        return self._disconnected.done()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        super()._on_message(client, userdata, message)
        self._wake()

    def _wake(self) -> None:
        arrival = self._arrival
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    def queued(self) -> aiomqtt.Message | None:
        """The next message received and not yet handed out, if any."""
        return None if self._queue.empty() else self._queue.get_nowait()

    async def arrival(self) -> None:
        """Returns once a message arrives or the link ends."""
        self._arrival = asyncio.get_running_loop().create_future()
        try:
            await self._arrival
        finally:
            self._arrival = None


class _Messages(MessagesIterator):
    """aiomqtt's iteration without its task and `asyncio.wait` per message. With manual acks iteration ends
    with the link: aiomqtt goes on handing out what it had queued after the link dropped, which could not
    be acknowledged any more, and the broker sends it again on the next connection: handled now, it would
    be handled twice. Without, what was queued is handed out first, as aiomqtt does."""

    def __init__(self, client: BrokerClient, *, end_with_link: bool) -> None:
        super().__init__(client)
        self._owner = client
        self._end_with_link = end_with_link
        self._streak = 0

    async def __anext__(self) -> aiomqtt.Message:
        owner = self._owner
        if self._streak >= _FAIR_SHARE:  # a long queue must not keep every other task off the loop
            self._streak = 0
            await asyncio.sleep(0)
        while True:
            if self._end_with_link and owner.link_lost():
                raise aiomqtt.MqttError("Disconnected during message iteration")
            message = owner.queued()
            if message is not None:
                self._streak += 1
                return message
            if owner.link_lost():
                raise aiomqtt.MqttError("Disconnected during message iteration") from owner._disconnected.exception()
            self._streak = 0
            await owner.arrival()


def make_client(
    broker: BrokerConfig,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    max_inflight: int = 100,
    max_pending_calls: int = 1000,
    manual_ack: bool = False,
) -> BrokerClient:
    """A client of `broker`; with `manual_ack`, QoS 1 messages are acknowledged only by `BrokerClient.ack`."""
    client = _build_client(broker, identifier=identifier, will=will, max_inflight=max_inflight, manual_ack=manual_ack)
    # Our callers bound their concurrent publishes themselves (the uplink's in-flight window);
    # aiomqtt's own warning past 10 pending calls would fire on every healthy burst.
    client.pending_calls_threshold = max_pending_calls
    return client


def _build_client(
    broker: BrokerConfig, *, identifier: str, will: aiomqtt.Will | None, max_inflight: int, manual_ack: bool
) -> BrokerClient:
    tls_context = None
    if broker.tls:
        tls_context = ssl.create_default_context(cafile=str(broker.ca_file) if broker.ca_file else None)
        if broker.cert_file is not None:
            tls_context.load_cert_chain(str(broker.cert_file), str(broker.key_file) if broker.key_file else None)
    # Persistent sessions either way; MQTT 5 also says how long the broker keeps one for us.
    session: dict[str, Any]
    if broker.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = broker.session_expiry_s
        session = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False, "properties": properties}
    else:
        session = {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
    return BrokerClient(
        broker.host,
        broker.port,
        identifier=identifier,
        username=broker.username,
        password=broker.password,
        will=will,
        keepalive=broker.keepalive_s,
        tls_context=tls_context,
        max_inflight_messages=max_inflight,
        timeout=io_timeout(10),  # the broker's replies: never shorter than real I/O on a bench's virtual time
        manual_ack=manual_ack,
        **session,
    )


def describe_mqtt_error(exc: aiomqtt.MqttError, broker: BrokerConfig) -> str:
    """A reason a person can act on, for a connection that failed or dropped."""
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    if isinstance(exc, MqttConnectError) and code in _REFUSED_CREDENTIALS:
        who = f"user {broker.username!r}" if broker.username else "anonymous access"
        return f"broker {broker.url} refused the credentials ({who}): {exc}; check [broker] username/password"
    if isinstance(exc, MqttConnectError):
        return f"broker {broker.url} refused the connection: {exc}"
    return f"broker {broker.url}: {exc}"


def find_mqtt_error(exc: BaseException) -> aiomqtt.MqttError | None:
    """The MqttError that is, or is inside a (nested) TaskGroup failure of, `exc`; else None."""
    if isinstance(exc, aiomqtt.MqttError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_mqtt_error(inner)
            if found is not None:
                return found
    return None


def _retrieve_disconnect_error(client: object) -> None:
    # aiomqtt 2.5 leaves the future of an unexpected disconnection unretrieved, so asyncio would log
    # "Future exception was never retrieved" for every dropped link; we have already reported it.
    disconnected = getattr(client, "_disconnected", None)
    if isinstance(disconnected, asyncio.Future) and disconnected.done() and not disconnected.cancelled():
        disconnected.exception()


async def run_reconnecting(
    connect: Callable[[], ClientT],
    serve: Callable[[ClientT], Awaitable[None]],
    *,
    broker: BrokerConfig,
    backoff: Backoff,
    rng: random.Random,
    on_down: Callable[[str], None],
    proven_after_s: float | None = None,
    monotonic: Callable[[], float] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> NoReturn:
    """Connect, serve until the link fails, wait a jittered backoff, repeat; only cancellation ends it.

    `tcu.reconnect.ReconnectLoop` with MQTT's rules: an accepted connection starts the proof, and the
    backoff resets only once it stayed up `proven_after_s` (default: the backoff's cap), so a broker
    that accepts and drops at once is retried ever more slowly. Errors other than MQTT ones are bugs
    and propagate.
    """

    async def session() -> None:
        client = connect()
        try:
            async with client:
                loop.healthy()
                await serve(client)
        finally:
            _retrieve_disconnect_error(client)

    def failure_reason(exc: Exception) -> str | None:
        error = find_mqtt_error(exc)
        return None if error is None else describe_mqtt_error(error, broker)

    loop = ReconnectLoop(
        name=f"MQTT {broker.url}",
        backoff=backoff,
        rng=rng,
        on_down=on_down,
        failure_reason=failure_reason,
        retry_unexpected=False,
        proven_after_s=proven_after_s,
        monotonic=monotonic,
        sleep=sleep,
        log_retries=False,  # `on_down` reports the outage; each retry is a debug line
    )
    await loop.run(session)
