"""A downlink message is acknowledged to the broker only once the car has handled it.

Over the in-memory twin and over a real Mosquitto with the session's own clients (manual acks): an
account message (a pairing code: neither retained nor resent by the backend) that reached the car but
not its handler before the link dropped comes again after the reconnect and is handled exactly once; a
message refused, crashing its handler or of no known kind is acknowledged all the same, so it does not
come again on every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiomqtt
import cbor2
import pytest
from nacl.public import Box

from hil.broker import MosquittoBroker
from hil.mqtt_twin import MemoryBroker
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from tcu.config import UplinkConfig
from tcu.uplink.mqtt_client import BrokerClient, make_client
from tcu.uplink.mqtt_port import MqttClient
from tcu.uplink.outbox import Outbox
from tcu.uplink.session import DownlinkHandler, UplinkSession, broker_client_factory
from telematics_wire.errors import EnvelopeError
from telematics_wire.records import Record, RecordKind
from telematics_wire.topics import VehicleTopics
from tests.conftest import VIN, require_mosquitto
from tests.uplink.session_rig import watched_outbox

WITHIN_S = 10.0  # bounds a wait on the session's tasks or the broker; never reached when passing
UPLINK = UplinkConfig(inflight_window=5, ack_timeout_s=30.0, reconnect_base_s=0.001, reconnect_cap_s=0.002)
PAIRING = b"pairing code 042917"
TOPICS = VehicleTopics(VIN)


class Network(Protocol):
    """The broker the car talks to, and the faults of the car's own connection."""

    config: BrokerConfig  # what the session is told (its log lines name it)
    car_clients: list[MqttClient]  # one per connection the session made, the current one last

    def car_factory(self) -> Callable[[str, aiomqtt.Will | None], MqttClient]: ...

    def backend(self) -> MqttClient: ...

    def drop_car(self) -> None:
        """The network under the car's current connection fails (no DISCONNECT)."""
        ...


class TwinNetwork:
    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.config = BrokerConfig()
        self.car_clients: list[MqttClient] = []

    def car_factory(self) -> Callable[[str, aiomqtt.Will | None], MqttClient]:
        def make(identifier: str, will: aiomqtt.Will | None) -> MqttClient:
            # As `broker_client_factory` makes them for a real broker.
            self.car_clients.append(self.broker.client(identifier, will=will, manual_ack=True))
            return self.car_clients[-1]

        return make

    def backend(self) -> MqttClient:
        return self.broker.client("backend-stub", clean_start=True)

    def drop_car(self) -> None:
        self.broker.drop(f"tcu-{VIN}")


class MosquittoNetwork:
    def __init__(self, broker: MosquittoBroker) -> None:
        self.config = BrokerConfig(port=broker.port)
        self.car_clients: list[MqttClient] = []

    def car_factory(self) -> Callable[[str, aiomqtt.Will | None], MqttClient]:
        product = broker_client_factory(self.config, UPLINK)  # the session's own clients, manual acks and all

        def make(identifier: str, will: aiomqtt.Will | None) -> MqttClient:
            self.car_clients.append(product(identifier, will))
            return self.car_clients[-1]

        return make

    def backend(self) -> MqttClient:
        return make_client(self.config, identifier="backend-stub")

    def drop_car(self) -> None:
        client = self.car_clients[-1]
        assert isinstance(client, BrokerClient)
        client._client.socket().shutdown(socket.SHUT_RDWR)


@pytest.fixture(params=["twin", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    if request.param == "twin":
        yield TwinNetwork()
        return
    require_mosquitto()
    async with MosquittoBroker(tmp_path / "mosquitto") as mosquitto:
        yield MosquittoNetwork(mosquitto)


@dataclass
class Handlers:
    """The agent's account and measure handlers, as far as the session can tell: each call begun, each
    that returned. The first measure order waits for `release`, the car busy with it."""

    begun: defaultdict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    returned: defaultdict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def routes(self) -> dict[str, DownlinkHandler]:
        return {"account": self.account, "measure": self.measure}

    async def account(self, payload: bytes) -> None:
        self.begun["account"].append(payload)
        if payload == b"forged":
            raise EnvelopeError("account: signature does not verify")
        if payload == b"bug":
            raise RuntimeError("a handler's own bug")
        self.returned["account"].append(payload)

    async def measure(self, payload: bytes) -> None:
        self.begun["measure"].append(payload)
        if len(self.begun["measure"]) == 1:
            await self.release.wait()
        self.returned["measure"].append(payload)


@dataclass
class Car:
    session: UplinkSession
    outbox: Outbox
    network: Network
    backend: MqttClient
    clock: ManualClock
    handlers: Handlers
    uplink: list[tuple[str, bytes]] = field(default_factory=list)  # what the backend got from the car

    async def send_down(self, kind: str, payload: bytes) -> None:
        await self.backend.publish(TOPICS.down(kind), payload, qos=1)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WITHIN_S):
                while not condition():  # noqa: ASYNC110 - moved by the session's tasks and the broker
                    await asyncio.sleep(0.002)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def put_a_record(self) -> None:
        """Give the car something to send: its next publish, which fails at once on a link that is gone."""
        await self.outbox.put_many([Record(kind=RecordKind.TELEMETRY, created=self.clock.now(), body={"n": 1})])
        self.session.notify()

    def records_seen(self) -> int:
        return sum(1 for topic, _ in self.uplink if topic == TOPICS.records)

    def link_lost_seen(self) -> bool:
        return any(
            topic == TOPICS.status and payload and not cbor2.loads(payload)["online"] for topic, payload in self.uplink
        )

    async def drop_link(self) -> None:
        """Drop the car's connection and wait until the broker (hence the car's own client) saw it: its will."""
        self.network.drop_car()
        await self.until(self.link_lost_seen, "the broker to send the car's will")

    def held_by_car(self) -> int:
        """Messages the car's client received and the session has not read yet."""
        return len(self.network.car_clients[-1].messages)


@pytest.fixture
async def car(network: Network, tmp_path: Path, vehicle_box: Box, clock: ManualClock) -> AsyncIterator[Car]:
    handlers = Handlers()
    outbox = watched_outbox(tmp_path, vehicle_box=vehicle_box, clock=clock)
    session = UplinkSession(
        vin=VIN,
        broker=network.config,
        uplink=UPLINK,
        outbox=outbox,
        box=vehicle_box,
        clock=clock,
        rng=random.Random(14),
        downlink_handlers=handlers.routes(),
        client_factory=network.car_factory(),
    )
    async with outbox, network.backend() as backend:
        await backend.subscribe("vehicles/+/up/#", qos=1)
        running = Car(session, outbox, network, backend, clock, handlers)

        async def listen() -> None:
            async for message in backend.messages:
                assert isinstance(message.payload, bytes)
                running.uplink.append((str(message.topic), message.payload))

        listener = asyncio.create_task(listen(), name="backend-listener")
        task = asyncio.create_task(session.run(), name="session-under-test")
        try:
            async with asyncio.timeout(WITHIN_S):
                await session.wait_connected()
            yield running
        finally:
            for job in (task, listener):
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job


async def _fenced(car: Car) -> None:
    """A fresh account message goes through: anything the broker was to send again came before it."""
    await car.send_down("account", b"fence")
    await car.until(lambda: car.handlers.returned["account"][-1:] == [b"fence"], "the fence message")


@pytest.mark.parametrize("noticed_by", ["sender", "receiver"])
async def test_an_account_message_the_link_lost_before_its_handler_comes_again_and_is_handled_once(
    car: Car, noticed_by: str
) -> None:
    await car.send_down("measure", b"order-1")  # the car is busy with it when the pairing code arrives
    await car.until(lambda: car.handlers.begun["measure"] == [b"order-1"], "the measure order to be handled")
    await car.send_down("account", PAIRING)
    await car.until(lambda: car.held_by_car() == 1, "the pairing code to reach the car")

    await car.drop_link()
    if noticed_by == "sender":
        await car.put_a_record()  # its publish fails: the session reconnects, the measure handler is cancelled
    else:
        car.handlers.release.set()  # the measure order returns; the next read finds the link gone
    await car.until(lambda: car.session.stats.connects == 2, "the session to reconnect")
    car.handlers.release.set()

    await car.until(lambda: car.handlers.returned["account"] == [PAIRING], "the pairing code to come again")
    await _fenced(car)
    assert car.handlers.begun["account"] == [PAIRING, b"fence"]  # exactly once, though it reached the car twice
    if noticed_by == "sender":
        assert car.handlers.returned["measure"] == [b"order-1"]  # cancelled the first time, so it came again
    else:
        # Returned while the link was down, its ack had nowhere to go: at least once, as measure orders are.
        assert car.handlers.returned["measure"] == [b"order-1", b"order-1"]
    assert car.session.stats.rejected_downlink == 0


@pytest.mark.parametrize(
    ("kind", "payload"),
    [("account", b"forged"), ("account", b"bug"), ("firmware", b"no handler for it")],
    ids=["refused", "handler-crashed", "unknown-kind"],
)
async def test_a_message_the_car_refuses_is_acknowledged_and_does_not_come_again(
    car: Car, kind: str, payload: bytes
) -> None:
    await car.send_down(kind, payload)
    await car.until(lambda: car.session.stats.rejected_downlink == 1, "the message to be refused")
    # A record the car sends after its ack, on the same connection: once it arrived, so had the ack.
    await car.put_a_record()
    await car.until(lambda: car.records_seen() == 1, "the record to reach the backend")

    await car.drop_link()
    await car.until(lambda: car.session.stats.connects == 2, "the session to reconnect")
    await _fenced(car)
    assert car.session.stats.rejected_downlink == 1
    assert car.handlers.begun["account"].count(payload) == (1 if kind == "account" else 0)
