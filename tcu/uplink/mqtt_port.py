"""The MQTT client as the agent uses it, as a `Protocol`: so a session runs over a broker or its twin.

`mqtt_client.BrokerClient` (aiomqtt's client plus `ack`) satisfies it structurally, which mypy checks
where `make_client`'s result is used as one; the in-memory twin is `hil.mqtt_twin`, and the same
contract tests (`tests/contract/test_mqtt_twin.py`) run against both it and a real Mosquitto.

What callers may rely on, either way:
- a link failure (refused connect, dropped or taken-over connection, a publish the broker did not
  acknowledge within its timeout) raises `aiomqtt.MqttError`; the reconnect loop tells link failures
  from bugs by that type;
- `publish_nowait` hands a message over in publication order and returns at once: the broker's
  acknowledgement is not awaited (for senders whose delivery an end-to-end ack decides); it raises
  `aiomqtt.MqttError` when the client has no connection to send it on;
- a malformed topic or topic filter raises `ValueError` before anything is sent;
- messages are `aiomqtt.Message` values, whose `payload` is `bytes` for anything a broker delivered;
- a client made with manual acks acknowledges a QoS 1 message (PUBACK) only when told (`ack`), so the
  broker sends it again, after a reconnect, to a persistent session that had not acknowledged it; such
  a client hands out nothing more once its connection is gone (what it still held comes again). Any
  other client acknowledges on receipt and `ack` does nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Protocol, Self

import aiomqtt


class MessageStream(Protocol):
    """`client.messages`: iterating it waits for the next message; it raises `MqttError` once the link is gone."""

    def __aiter__(self) -> AsyncIterator[aiomqtt.Message]: ...

    def __len__(self) -> int:
        """Messages received and not yet iterated (a consumer may batch by it)."""
        ...


class MqttClient(Protocol):
    """One client identity; `async with client:` is one connection, and the context is reusable."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    @property
    def identifier(self) -> str: ...

    @property
    def messages(self) -> MessageStream: ...

    async def subscribe(self, topic: str, *, qos: int = 0) -> object: ...

    def ack(self, message: aiomqtt.Message) -> None:
        """Acknowledge `message` to the broker, on this connection; lost, like any packet, if it is gone."""
        ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - aiomqtt's signature: a publish has its own ack timeout
    ) -> None: ...

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Send `payload` without waiting for the broker's acknowledgement; `MqttError` without a connection."""
        ...


# (client id, last will) -> a client not yet connected, with manual acks (the session acknowledges each
# downlink message once handled); a session calls it once per connection attempt.
ClientFactory = Callable[[str, aiomqtt.Will | None], MqttClient]
