"""Building aiomqtt clients from configuration, shared by the agent and the backend stub.

Sessions are persistent on purpose: aiomqtt's default clean start on the first connect of a process
throws away messages the broker queued while the process was down (a provisioning file sent to a
vehicle that was off). MQTT 5 gets `clean_start=False` plus a Session Expiry Interval; MQTT 3.1.1
(the embedded broker) gets `clean_session=False`.

Acknowledgements: paho acknowledges a QoS 1 message (PUBACK) as soon as it arrives, so a message the
application had not handled yet is gone if the link drops. A client made with `manual_ack=True` leaves
the PUBACK to the caller (`BrokerClient.ack`, once the message is handled): the broker then sends an
unacknowledged message again to the persistent session on the next connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import aiomqtt
from aiomqtt.client import MessagesIterator
from aiomqtt.exceptions import MqttConnectError
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


class BrokerClient(aiomqtt.Client):
    """aiomqtt's client with `ack`, which satisfies `tcu.uplink.mqtt_port.MqttClient`."""

    def __init__(self, *args: Any, manual_ack: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._manual_ack = manual_ack
        self._client.manual_ack_set(manual_ack)  # aiomqtt 2.5 has no option of its own for it

    def ack(self, message: aiomqtt.Message) -> None:
        """PUBACK `message` (QoS 1, manual acks; otherwise paho does nothing): the broker may forget it."""
        self._client.ack(message.mid, message.qos)

    @property
    def messages(self) -> MessagesIterator:
        return _LinkMessages(self) if self._manual_ack else super().messages

    def link_lost(self) -> bool:
        """The current connection dropped."""
        return self._disconnected.done()


class _LinkMessages(MessagesIterator):
    """aiomqtt goes on handing out what it had queued after the link dropped. With manual acks those
    messages cannot be acknowledged any more and the broker sends them again on the next connection:
    handled now, they would be handled twice. So iteration ends with the link, as for an empty queue."""

    def __init__(self, client: BrokerClient) -> None:
        super().__init__(client)
        self._owner = client

    async def __anext__(self) -> aiomqtt.Message:
        message = await super().__anext__()
        if self._owner.link_lost():
            raise aiomqtt.MqttError("Disconnected during message iteration")
        return message


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
