"""Client-id takeover on the documented Mosquitto setup (issue 10, item 13).

MQTT lets a new connection with an existing client id take over that session: the broker drops the
old connection, and a clean start wipes its persistent session. Under a plain password file and ACL,
car A's valid credentials with client id `tcu-<B>` knocked B offline over and over and, while B was
offline, wiped B's session with the measure order queued in it. The documented setup binds the client
id to the username on the vehicles' listener (`use_username_as_clientid true`); the backend has its
own listener, since its clients share one username.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttCodeError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hil.broker import MosquittoBroker
from hil.layout import BenchLayout
from tcu.broker_config import BrokerConfig
from tcu.uplink.mqtt_client import make_client
from tests.conftest import OTHER_VIN, VIN, eventually, require_mosquitto
from tests.integration.conftest import FAST_UPLINK, running_agent

pytestmark = pytest.mark.mosquitto

VICTIM, ATTACKER = VIN, OTHER_VIN
USERS = {VICTIM: "pw-victim", ATTACKER: "pw-attacker", "backend-stub": "pw-backend"}
ORDER_TOPIC = f"vehicles/{VICTIM}/down/measures"


@asynccontextmanager
async def secured_broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    require_mosquitto()
    async with MosquittoBroker(tmp_path / "broker", users=USERS, acl_per_vehicle=True) as broker:
        yield broker


def vehicle_client(broker: MosquittoBroker, vin: str) -> aiomqtt.Client:
    """The victim's connection exactly as the agent makes it: client id `tcu-<VIN>`, persistent session."""
    config = BrokerConfig(host="127.0.0.1", port=broker.port, username=vin, password=USERS[vin])
    return make_client(config, identifier=f"tcu-{vin}")


def attacker_client(port: int, *, identifier: str = f"tcu-{VICTIM}") -> aiomqtt.Client:
    """Car A's own valid credentials, the victim's client id, and a clean start: what wipes a session."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=identifier,
        username=ATTACKER,
        password=USERS[ATTACKER],
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        properties=properties,
    )


async def queue_order(broker: MosquittoBroker, payload: bytes) -> None:
    """The backend sends a measure order to the (offline) victim, from the backend's listener."""
    backend = BrokerConfig(host="127.0.0.1", port=broker.backend_port, username="backend-stub", password="pw-backend")
    async with make_client(backend, identifier="backend-stub-measures") as client:
        await client.publish(ORDER_TOPIC, payload, qos=1)


async def next_message(client: aiomqtt.Client, within: float = 5.0) -> bytes:
    async with asyncio.timeout(within):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return message.payload
    raise AssertionError("the message stream ended")


async def test_another_cars_credentials_cannot_wipe_an_offline_cars_queued_order(tmp_path: Path) -> None:
    async with secured_broker(tmp_path) as broker:
        async with vehicle_client(broker, VICTIM) as victim:
            await victim.subscribe(f"vehicles/{VICTIM}/down/#", qos=1)
        await queue_order(broker, b"measure order 1")
        async with attacker_client(broker.port):  # accepted, but as the attacker's own client id
            pass
        # The backend listener refuses a car's credentials outright.
        with pytest.raises(MqttCodeError, match="Not authorized"):
            async with attacker_client(broker.backend_port, identifier=VICTIM):
                pass
        async with vehicle_client(broker, VICTIM) as victim:
            assert await next_message(victim) == b"measure order 1", "the victim's session and its order survive"


async def test_another_cars_credentials_do_not_knock_a_connected_car_offline(tmp_path: Path) -> None:
    async with secured_broker(tmp_path) as broker:
        root = tmp_path / "bench"
        BenchLayout(root=root, broker_url=broker.backend_url).create_backend(
            username="backend-stub", password="pw-backend"
        )
        layout = BenchLayout(root=root, broker_url=broker.url)
        config = layout.add_vehicle(
            VICTIM, telemetry_interval_s=0.05, uplink=FAST_UPLINK, username=VICTIM, password=USERS[VICTIM]
        )
        async with running_agent(config) as agent:
            await eventually(lambda: agent.session.stats.connected, what="the victim connected")
            for _ in range(10):
                async with attacker_client(broker.port):
                    await asyncio.sleep(0.05)
            await queue_order(broker, b"not a real order")  # lands in the live session: rejected, counted
            await eventually(lambda: agent.session.stats.rejected_downlink == 1, what="the downlink delivered")
            assert agent.session.stats.connected
            assert agent.session.stats.connects == 1, "not one link drop"
