"""Contract tests of the MQTT twin: every test runs against `hil.mqtt_twin.MemoryBroker` and against a
real Mosquitto, so what a unit test learns from the twin holds on the broker the product runs on.

The Mosquitto clients are the product's own (`make_client`: MQTT 5, persistent session, manual acks
when asked); a clean start is the same client with a session expiry of 0. "Nothing more arrived" is
asserted with a fence: a message published after the one that must not arrive, which must then be the
next one in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path
from typing import Protocol

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hil.broker import MosquittoBroker
from hil.mqtt_twin import MemoryBroker
from tcu.broker_config import BrokerConfig
from tcu.uplink.mqtt_client import BrokerClient, make_client
from tcu.uplink.mqtt_port import MqttClient
from tests.conftest import require_mosquitto

WITHIN_S = 5.0  # a real broker on loopback answers in milliseconds; this only bounds a failure


class BrokerUnderTest(Protocol):
    def client(
        self,
        identifier: str,
        *,
        clean_start: bool = False,
        will: aiomqtt.Will | None = None,
        manual_ack: bool = False,
    ) -> MqttClient: ...

    def drop(self, client: MqttClient) -> None:
        """The network under this client's connection fails (no DISCONNECT is sent)."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class TwinUnderTest:
    def __init__(self) -> None:
        self.broker = MemoryBroker()

    def client(
        self,
        identifier: str,
        *,
        clean_start: bool = False,
        will: aiomqtt.Will | None = None,
        manual_ack: bool = False,
    ) -> MqttClient:
        return self.broker.client(identifier, clean_start=clean_start, will=will, manual_ack=manual_ack)

    def drop(self, client: MqttClient) -> None:
        self.broker.drop(client.identifier)

    def pause(self) -> None:
        self.broker.pause()

    def resume(self) -> None:
        self.broker.resume()


class MosquittoUnderTest:
    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.clients: list[BrokerClient] = []

    def client(
        self,
        identifier: str,
        *,
        clean_start: bool = False,
        will: aiomqtt.Will | None = None,
        manual_ack: bool = False,
    ) -> MqttClient:
        if clean_start:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
            client = BrokerClient(
                "127.0.0.1",
                self.broker.port,
                identifier=identifier,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=True,
                properties=properties,
                will=will,
                manual_ack=manual_ack,
            )
        else:
            client = make_client(
                BrokerConfig(port=self.broker.port), identifier=identifier, will=will, manual_ack=manual_ack
            )
        self.clients.append(client)
        return client

    def drop(self, client: MqttClient) -> None:
        assert isinstance(client, BrokerClient)
        client._client.socket().shutdown(socket.SHUT_RDWR)

    def pause(self) -> None:
        self.broker.pause()

    def resume(self) -> None:
        self.broker.resume()

    def forget_disconnects(self) -> None:
        # aiomqtt leaves the error of an unexpected disconnection unretrieved; these tests cause them.
        for client in self.clients:
            disconnected = client._disconnected
            if disconnected.done() and not disconnected.cancelled():
                disconnected.exception()


@pytest.fixture(params=["twin", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BrokerUnderTest]:
    if request.param == "twin":
        yield TwinUnderTest()
        return
    require_mosquitto()
    async with MosquittoBroker(tmp_path / "mosquitto") as mosquitto:
        harness = MosquittoUnderTest(mosquitto)
        yield harness
        harness.forget_disconnects()


_ids = count(1)


def fresh_id(what: str) -> str:
    return f"{what}-{next(_ids)}"


Received = tuple[str, bytes, int, bool]


async def next_message(client: MqttClient) -> Received:
    async with asyncio.timeout(WITHIN_S):
        message = await anext(aiter(client.messages))
    assert isinstance(message.payload, bytes)
    return str(message.topic), message.payload, message.qos, message.retain


async def fenced(publisher: MqttClient, subscriber: MqttClient, fence: str) -> list[Received]:
    """Everything `subscriber` receives up to the fence message, which `publisher` sends now."""
    await publisher.publish(fence, b"fence", qos=1)
    received: list[Received] = []
    while (message := await next_message(subscriber))[0] != fence:
        received.append(message)
    return received


@contextlib.asynccontextmanager
async def connected(broker: BrokerUnderTest, what: str, **options: object) -> AsyncIterator[MqttClient]:
    client = broker.client(fresh_id(what), clean_start=True, **options)  # type: ignore[arg-type]
    async with client:
        yield client


async def test_qos1_messages_arrive_once_in_publication_order(broker: BrokerUnderTest) -> None:
    async with connected(broker, "pub") as publisher, connected(broker, "sub") as subscriber:
        await subscriber.subscribe("order/#", qos=1)
        for index in range(20):
            await publisher.publish(f"order/{index % 3}", str(index).encode(), qos=1)
        received = [await next_message(subscriber) for _ in range(20)]
        assert received == [(f"order/{index % 3}", str(index).encode(), 1, False) for index in range(20)]
        assert await fenced(publisher, subscriber, "order/fence") == []


async def test_publish_nowait_sends_in_order_and_refuses_without_a_connection(broker: BrokerUnderTest) -> None:
    async with connected(broker, "pub") as publisher, connected(broker, "sub") as subscriber:
        await subscriber.subscribe("nowait/#", qos=1)
        for index in range(50):
            publisher.publish_nowait(f"nowait/{index % 3}", str(index).encode(), qos=1)
        received = [await next_message(subscriber) for _ in range(50)]
        assert received == [(f"nowait/{index % 3}", str(index).encode(), 1, False) for index in range(50)]
    with pytest.raises(aiomqtt.MqttError):
        publisher.publish_nowait("nowait/after", b"x", qos=1)  # its connection is closed


@pytest.mark.parametrize(("subscribed", "published", "delivered"), [(0, 1, 0), (1, 0, 0), (1, 1, 1)])
async def test_delivery_qos_is_the_lower_of_subscription_and_publication(
    broker: BrokerUnderTest, subscribed: int, published: int, delivered: int
) -> None:
    async with connected(broker, "pub") as publisher, connected(broker, "sub") as subscriber:
        await subscriber.subscribe("qos/x", qos=subscribed)
        await publisher.publish("qos/x", b"m", qos=published)
        assert await next_message(subscriber) == ("qos/x", b"m", delivered, False)


async def test_overlapping_filters_deliver_one_copy_each(broker: BrokerUnderTest) -> None:
    async with connected(broker, "pub") as publisher, connected(broker, "sub") as subscriber:
        await subscriber.subscribe("both/#", qos=1)
        await subscriber.subscribe("both/+", qos=0)
        await publisher.publish("both/a", b"m", qos=1)
        copies = [await next_message(subscriber), await next_message(subscriber)]
        assert sorted(copies) == [("both/a", b"m", 0, False), ("both/a", b"m", 1, False)]


async def test_retained_message_is_set_replaced_and_cleared(broker: BrokerUnderTest) -> None:
    topic = f"retained/{fresh_id('r')}"
    async with connected(broker, "pub") as publisher:
        await publisher.publish(topic, b"first", qos=1, retain=True)
        await publisher.publish(topic, b"second", qos=1, retain=True)
        async with connected(broker, "late") as late:
            await late.subscribe(topic, qos=1)
            assert await next_message(late) == (topic, b"second", 1, True)  # the latest only, flagged retained
            await late.subscribe(topic + "/fence", qos=1)
            assert await fenced(publisher, late, topic + "/fence") == []
            await publisher.publish(topic, b"", qos=1, retain=True)
            assert await next_message(late) == (topic, b"", 1, False)  # a clear still reaches live subscribers
        async with connected(broker, "after") as after:
            await after.subscribe(topic, qos=1)
            await after.subscribe(topic + "/fence", qos=1)
            assert await fenced(publisher, after, topic + "/fence") == []  # cleared: nothing retained


async def test_subscribing_again_sends_the_retained_message_again(broker: BrokerUnderTest) -> None:
    topic = f"again/{fresh_id('r')}"
    async with connected(broker, "pub") as publisher, connected(broker, "sub") as subscriber:
        await publisher.publish(topic, b"kept", qos=1, retain=True)
        await subscriber.subscribe(topic, qos=0)
        assert await next_message(subscriber) == (topic, b"kept", 0, True)
        await subscriber.subscribe(topic, qos=1)
        assert await next_message(subscriber) == (topic, b"kept", 1, True)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/x/c", False),
        ("a/+", "a", False),
        ("a/#", "a", True),  # `#` includes the parent level
        ("a/#", "a/b/c", True),
        ("#", "x/y", True),
        ("+", "x/y", False),
        ("+/+", "x/y", True),
        ("+/b", "/b", True),  # an empty level is a level
        ("a/b", "a/b/", False),
        ("A/b", "a/b", False),  # case matters
        ("#", "$private/x", False),  # a wildcard first never matches a `$` topic
        ("+/x", "$private/x", False),
        ("$private/#", "$private/x", True),
        ("vehicles/+/up/#", "vehicles/WMWZZZ3CZ2E123456/up/records", True),
        ("vehicles/WMWZZZ3CZ2E123456/down/#", "vehicles/WVWZZZ1JZXW000002/down/ack", False),
    ],
)
async def test_topic_filters(broker: BrokerUnderTest, topic_filter: str, topic: str, matches: bool) -> None:
    fence = f"fence/{fresh_id('f')}"
    async with connected(broker, "pub") as publisher, connected(broker, "sub") as subscriber:
        await subscriber.subscribe(topic_filter, qos=1)
        await subscriber.subscribe(fence, qos=1)
        await publisher.publish(topic, b"m", qos=1)
        assert await fenced(publisher, subscriber, fence) == ([(topic, b"m", 1, False)] if matches else [])


@pytest.mark.parametrize("topic_filter", ["a/#/b", "a/b#", "a+/b", "+a", ""])
async def test_malformed_filter_is_refused_and_the_connection_lives_on(
    broker: BrokerUnderTest, topic_filter: str
) -> None:
    async with connected(broker, "sub") as subscriber:
        with pytest.raises(ValueError, match="filter"):
            await subscriber.subscribe(topic_filter, qos=1)
        await subscriber.subscribe("still/here", qos=1)
        await subscriber.publish("still/here", b"ok", qos=1)
        assert await next_message(subscriber) == ("still/here", b"ok", 1, False)


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "+"])
async def test_publishing_to_a_wildcard_topic_is_refused(broker: BrokerUnderTest, topic: str) -> None:
    async with connected(broker, "pub") as publisher:
        with pytest.raises(ValueError, match="wildcards"):
            await publisher.publish(topic, b"m", qos=1)
        await publisher.publish("still/connected", b"ok", qos=1)


async def test_publishing_to_an_empty_topic_costs_the_connection(broker: BrokerUnderTest) -> None:
    async with connected(broker, "watch") as watcher:
        await watcher.subscribe("wills/#", qos=1)
        async with connected(broker, "pub", will=aiomqtt.Will("wills/empty", b"gone", qos=1)) as publisher:
            with pytest.raises(aiomqtt.MqttError):
                await publisher.publish("", b"m", qos=1, timeout=1)
            assert await next_message(watcher) == ("wills/empty", b"gone", 1, False)
            with pytest.raises(aiomqtt.MqttError):
                await publisher.publish("wills/after", b"x", qos=1, timeout=WITHIN_S)


async def test_persistent_session_keeps_qos1_for_an_offline_client_not_qos0(broker: BrokerUnderTest) -> None:
    identifier = fresh_id("car")
    async with broker.client(identifier) as car:
        await car.subscribe("offline/#", qos=1)
    async with connected(broker, "pub") as publisher:
        await publisher.publish("offline/q0", b"zero", qos=0)
        await publisher.publish("offline/q1", b"one", qos=1)
        async with broker.client(identifier) as car:
            assert await fenced(publisher, car, "offline/fence") == [("offline/q1", b"one", 1, False)]


async def test_clean_start_discards_the_session(broker: BrokerUnderTest) -> None:
    identifier = fresh_id("car")
    async with broker.client(identifier) as car:
        await car.subscribe("wiped/#", qos=1)
    async with connected(broker, "pub") as publisher:
        await publisher.publish("wiped/queued", b"lost", qos=1)
        async with broker.client(identifier, clean_start=True) as car:
            await car.subscribe("fence/wiped", qos=1)
            await publisher.publish("wiped/live", b"unsubscribed", qos=1)
            assert await fenced(publisher, car, "fence/wiped") == []


async def test_a_second_connection_with_the_same_id_takes_over(broker: BrokerUnderTest) -> None:
    identifier = fresh_id("car")
    first = broker.client(identifier, will=aiomqtt.Will("takeover/will", b"gone", qos=1))
    async with connected(broker, "watch") as watcher, connected(broker, "pub") as publisher:
        await watcher.subscribe("takeover/will", qos=1)
        await watcher.subscribe("takeover/fence", qos=1)
        async with first:
            await first.subscribe("takeover/to-car", qos=1)
            async with broker.client(identifier) as second:
                with pytest.raises(aiomqtt.MqttError):
                    await next_message(first)
                with pytest.raises(aiomqtt.MqttError):
                    await first.publish("takeover/from-old", b"x", qos=1, timeout=WITHIN_S)
                # The session (its subscription) went over to the new connection.
                await publisher.publish("takeover/to-car", b"for-the-car", qos=1)
                assert await next_message(second) == ("takeover/to-car", b"for-the-car", 1, False)
        assert await fenced(publisher, watcher, "takeover/fence") == []  # a takeover sends no will


async def test_the_will_goes_out_when_the_connection_is_lost_not_on_disconnect(broker: BrokerUnderTest) -> None:
    async with connected(broker, "watch") as watcher, connected(broker, "pub") as publisher:
        await watcher.subscribe("wills/#", qos=1)
        async with broker.client(fresh_id("orderly"), will=aiomqtt.Will("wills/orderly", b"x", qos=1)):
            pass
        assert await fenced(publisher, watcher, "wills/fence") == []
        lost = broker.client(fresh_id("lost"), will=aiomqtt.Will("wills/lost", b"gone", qos=1))
        async with lost:
            broker.drop(lost)
            assert await next_message(watcher) == ("wills/lost", b"gone", 1, False)
            with pytest.raises(aiomqtt.MqttError):
                await next_message(lost)
            with pytest.raises(aiomqtt.MqttError):
                await lost.publish("wills/after", b"x", qos=1, timeout=WITHIN_S)


async def test_publish_in_flight_on_a_stalled_broker_fails_yet_may_arrive(broker: BrokerUnderTest) -> None:
    """At least once, never exactly once: the sender must resend and the receiver de-duplicate."""
    async with connected(broker, "pub") as publisher, connected(broker, "sub") as subscriber:
        await subscriber.subscribe("stall/#", qos=1)
        broker.pause()
        try:
            with pytest.raises(aiomqtt.MqttError, match="timed out"):
                await publisher.publish("stall/1", b"in-flight", qos=1, timeout=0.3)
        finally:
            broker.resume()
        assert await next_message(subscriber) == ("stall/1", b"in-flight", 1, False)
        await publisher.publish("stall/2", b"after", qos=1)
        assert await next_message(subscriber) == ("stall/2", b"after", 1, False)


async def _until_held(client: MqttClient, count: int) -> None:
    """Wait until `client` holds `count` received messages it has not handed out yet."""
    async with asyncio.timeout(WITHIN_S):
        while len(client.messages) < count:  # noqa: ASYNC110 - filled by the client's own socket reader
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("ended", ["dropped", "closed"])
async def test_an_unacknowledged_qos1_message_comes_again_to_a_persistent_session(
    broker: BrokerUnderTest, ended: str
) -> None:
    """With manual acks, what the client read but did not acknowledge, and what it held unread, comes
    again on its next connection, first and in order; what it acknowledged does not."""
    identifier = fresh_id("car")
    will = aiomqtt.Will("wills/acks", b"gone", qos=1)
    async with connected(broker, "pub") as publisher, connected(broker, "watch") as watcher:
        await watcher.subscribe("wills/acks", qos=1)
        car = broker.client(identifier, will=will, manual_ack=True)
        async with car:
            await car.subscribe("acks/#", qos=1)
            for index in range(1, 4):
                await publisher.publish(f"acks/{index}", str(index).encode(), qos=1)
            first = await anext(aiter(car.messages))
            car.ack(first)
            await next_message(car)  # read, never acknowledged
            await _until_held(car, 1)  # the third arrived, unread
            if ended == "dropped":
                broker.drop(car)
                assert await next_message(watcher) == ("wills/acks", b"gone", 1, False)  # the broker saw it
                with pytest.raises(aiomqtt.MqttError):
                    await next_message(car)  # nothing more is handed out: it could not be acknowledged
        await publisher.publish("acks/4", b"4", qos=1)  # queued for the offline session
        async with broker.client(identifier, manual_ack=True) as car:
            assert await fenced(publisher, car, "acks/fence") == [
                ("acks/2", b"2", 1, False),
                ("acks/3", b"3", 1, False),
                ("acks/4", b"4", 1, False),
            ]


async def test_acknowledged_messages_do_not_come_again(broker: BrokerUnderTest) -> None:
    identifier = fresh_id("car")
    async with connected(broker, "pub") as publisher:
        async with broker.client(identifier, manual_ack=True) as car:
            await car.subscribe("done/#", qos=1)
            await publisher.publish("done/1", b"1", qos=1)
            await publisher.publish("done/2", b"2", qos=0)  # QoS 0 needs no ack and is never sent again
            for _ in range(2):
                car.ack(await anext(aiter(car.messages)))
        async with broker.client(identifier, manual_ack=True) as car:
            assert await fenced(publisher, car, "done/fence") == []


async def test_a_takeover_gets_what_the_old_connection_did_not_acknowledge(broker: BrokerUnderTest) -> None:
    identifier = fresh_id("car")
    async with connected(broker, "pub") as publisher:
        first = broker.client(identifier, manual_ack=True)
        async with first:
            await first.subscribe("handover/#", qos=1)
            await publisher.publish("handover/1", b"1", qos=1)
            assert await next_message(first) == ("handover/1", b"1", 1, False)
            async with broker.client(identifier, manual_ack=True) as second:
                assert await fenced(publisher, second, "handover/fence") == [("handover/1", b"1", 1, False)]


async def test_without_manual_acks_a_message_is_acknowledged_on_receipt(broker: BrokerUnderTest) -> None:
    """Why the agent asks for manual acks: otherwise a message it read but never handled is gone."""
    identifier = fresh_id("car")
    async with connected(broker, "pub") as publisher:
        async with broker.client(identifier) as car:
            await car.subscribe("auto/#", qos=1)
            await publisher.publish("auto/1", b"1", qos=1)
            assert await next_message(car) == ("auto/1", b"1", 1, False)
        async with broker.client(identifier) as car:
            assert await fenced(publisher, car, "auto/fence") == []
