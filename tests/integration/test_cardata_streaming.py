"""Issue 16 end to end: a third-party client written only against BMW's published interface (device-code
sign-in, a container, telematicData, then paho on TLS with username = gcid and password = id_token)
receives a simulated car's door opening and parked position through Mosquitto's streaming listener,
hears nothing more once the owner revokes the consent, and shows in the owner's transaction report.

The car is its sealed records on the real ingest path (as the other integration tests send them); the
operator acts through the backend's stores, as `backend-stub account` / `cardata` do; the owner signs in
to their own pages (`cardata:owner`, approved as `backend-stub cardata approve CODE --owner` does) and
revokes there. Nothing stands in for the backend towards the broker: the streaming login is the one
the backend's StreamingCredentials made when the tokens were issued, and the revoke ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import paho.mqtt.client as mqtt
import pytest

from backend_stub.app import BackendStub
from backend_stub.cardata.consents import CardataStore
from hil.broker import MosquittoBroker, free_port
from hil.fixtures.backend import running_backend
from hil.layout import BenchLayout
from hil.streaming_listener import DYNSEC_PLUGIN, StreamingListener
from telematics_wire.envelope import seal_record
from telematics_wire.keys import load_private_key, load_public_key
from telematics_wire.records import Record, RecordKind, to_millis
from tests.backend_stub.cardata.http_world import device_sign_in as sign_in
from tests.conftest import VIN, eventually, require_mosquitto
from tests.integration.certificates import make_tls_files

OWNER = "anna"
SCOPE = "authenticate_user openid cardata:streaming:read cardata:api:read"
OWNER_SCOPE = "openid cardata:owner"
ARRIVAL_S = 2.0  # the issue: a client receives a door opening and the position within 2 s
DOOR = "vehicle.cabin.door.row1.driver.isOpen"
LATITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.latitude"
LONGITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.longitude"


@pytest.fixture
async def streaming_broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    require_mosquitto()
    if not DYNSEC_PLUGIN.exists():
        pytest.skip(f"Mosquitto's dynamic-security plugin is not installed ({DYNSEC_PLUGIN})")
    listener = StreamingListener(make_tls_files(tmp_path / "tls"), port=free_port())
    async with MosquittoBroker(tmp_path / "mosquitto", streaming=listener) as broker:
        yield broker


@pytest.fixture
def bench(tmp_path: Path, streaming_broker: MosquittoBroker) -> BenchLayout:
    listener = streaming_broker.streaming
    assert listener is not None
    layout = BenchLayout(root=tmp_path / "bench", broker_url=streaming_broker.url)
    layout.create_backend()
    layout.add_vehicles([VIN])
    with layout.backend_config.open("a") as config:  # the backend publishes the streams as the plugin's admin
        config.write(
            f'\n[cardata]\nport = {free_port()}\nauto_approve_account = "{OWNER}"\n'
            f'\n[cardata.streaming]\nurl = "mqtts://127.0.0.1:{listener.port}"\n'
            f'username = "{listener.admin_username}"\npassword = "{listener.admin_password}"\n'
            f'ca_file = "{listener.tls.ca_file}"\n'
        )
    return layout


@contextlib.contextmanager
def operator_store(backend: BackendStub) -> Iterator[CardataStore]:
    """The operator's and the owner's CarData commands: a connection of their own, as a CLI process has."""
    store = CardataStore(backend.config.database)
    try:
        yield store
    finally:
        store.close()


class StreamClient:
    """The third party's MQTT side, as BMW's published client does it: paho, TLS, gcid + id_token."""

    def __init__(self, ca_file: Path, port: int, gcid: str, id_token: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.subscribed = asyncio.Event()
        self.disconnected: list[str] = []
        loop = asyncio.get_running_loop()
        # No reconnecting: once the backend ends the login, the old id_token must stay refused.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        client.tls_set_context(ssl.create_default_context(cafile=str(ca_file)))
        client.username_pw_set(gcid, id_token)
        client.on_connect = lambda c, _u, _f, code, _p: c.subscribe(f"{gcid}/{VIN}", qos=1) if code == 0 else None
        client.on_subscribe = lambda _c, _u, _m, codes, _p: (
            loop.call_soon_threadsafe(self.subscribed.set) if all(code.value < 0x80 for code in codes) else None
        )
        client.on_message = lambda _c, _u, message: self.messages.append(json.loads(message.payload))
        client.on_disconnect = lambda _c, _u, _f, code, _p: self.disconnected.append(str(code))
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        self._client = client

    def keys(self) -> list[str]:
        return [key for message in self.messages for key in message["data"]]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def send(broker: MosquittoBroker, layout: BenchLayout, seq: int, body: dict[str, Any]) -> None:
    """One record of the car, sealed and published where the agent publishes it."""
    from nacl.public import Box  # noqa: PLC0415 - only the car's side needs it

    box = Box(load_private_key(layout.keys / f"{VIN}.x25519.key"), load_public_key(layout.keys / "backend.x25519.pub"))
    record = Record(kind=RecordKind.EVENT, created=_now(), body=body)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"car-{seq}") as car:
        await car.publish(f"vehicles/{VIN}/up/records", seal_record(box, VIN, seq, record), qos=1)


def _now() -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.now(UTC)


def _door(value: bool) -> dict[str, Any]:
    path = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"
    return {"type": "door", "path": path, "value": value, "previous": not value, "changed_at": to_millis(_now())}


def _parked() -> dict[str, Any]:
    stamp = to_millis(_now())
    position = {
        "Vehicle.CurrentLocation.Latitude": {"v": 48.137154, "t": stamp},
        "Vehicle.CurrentLocation.Longitude": {"v": 11.576124, "t": stamp},
    }
    return {"type": "parked_position", "trigger": "parked", "position": position}


async def test_a_third_party_streams_a_door_and_a_position_until_the_owner_revokes(
    bench: BenchLayout, streaming_broker: MosquittoBroker
) -> None:
    listener = streaming_broker.streaming
    assert listener is not None
    async with running_backend(bench.backend_config) as backend:
        assert backend.cardata_server is not None
        # The owner has an account and the car; the operator registers the third party; the owner consents.
        await backend.operate(backend.accounts.create, OWNER, name="Anna", email="anna@example.org", now=_now())
        with sqlite3.connect(backend.config.database) as db:  # pairing with the code read in the car
            db.execute(
                "INSERT INTO account_links (vin, account, linked_ms) VALUES (?, ?, ?)", (VIN, OWNER, to_millis(_now()))
            )
        with operator_store(backend) as store:
            client_id = store.add_client("Insurer").client_id
            store.grant(VIN, client_id, [DOOR, LATITUDE, LONGITUDE], _now())

        async with asyncio.timeout(10):
            await backend.cardata_server.ready.wait()
        async with httpx.AsyncClient(base_url=backend.cardata_server.url) as http:
            tokens = await sign_in(http, client_id)
            gcid, headers = tokens["gcid"], {"Authorization": f"Bearer {tokens['access_token']}", "x-version": "v1"}
            created = await http.post(
                "/customers/containers",
                headers=headers,
                json={"name": "door and position", "purpose": "insurance", "technicalDescriptors": [DOOR, LATITUDE]},
            )
            assert created.status_code in (200, 201), created.text
            container = created.json()["containerId"]
            data = await http.get(
                f"/customers/vehicles/{VIN}/telematicData", headers=headers, params={"containerId": container}
            )
            assert data.status_code == 200, data.text

            # The backend made the streaming login when it issued the tokens (no hand-made dynsec here),
            # and answered them only once it was in force: the client connects at once and is let in.
            credentials = backend.cardata_streaming.credentials if backend.cardata_streaming else None
            assert credentials is not None
            assert credentials.holder(gcid) == client_id
            stream = StreamClient(listener.tls.ca_file, listener.port, gcid, tokens["id_token"])
            try:
                async with asyncio.timeout(10):
                    await stream.subscribed.wait()
                sent = time.monotonic()
                await send(streaming_broker, bench, 1, _door(True))
                await send(streaming_broker, bench, 2, _parked())
                await eventually(lambda: {DOOR, LATITUDE, LONGITUDE} <= set(stream.keys()), within=10, what="streamed")
                # The promise, from the car's first publish to the third party's last key.
                assert time.monotonic() - sent < ARRIVAL_S, "door and position took longer than 2 s"
                door = next(m for m in stream.messages if DOOR in m["data"])
                assert door["vin"] == VIN
                assert door["topic"] == f"{gcid}/{VIN}"
                assert door["data"][DOOR]["value"] is True
                # REST serves the last transmitted values: these event-only records transmitted the door's.
                served = await http.get(
                    f"/customers/vehicles/{VIN}/telematicData", headers=headers, params={"containerId": container}
                )
                assert served.status_code == 200, served.text
                values = served.json()["telematicData"]
                assert values[DOOR]["value"] == "true", values
                assert values[DOOR]["timestamp"] == door["data"][DOOR]["timestamp"]  # when the door changed
                assert LATITUDE in values, values

                # The owner signs in to their own pages (their approval: the bench approves no such
                # sign-in by itself) and withdraws the consent there.
                own_app = (await backend.operate(backend.cardata.store.add_client, "Anna's app")).client_id
                mine = await sign_in(http, own_app, OWNER_SCOPE, approve=approve_as_owner(backend))
                owner = {"Authorization": f"Bearer {mine['access_token']}", "x-version": "v1"}
                revoked = await http.delete(f"/simulator/consents/{VIN}/{client_id}", headers=owner)
                assert revoked.status_code == 204, revoked.text
                heard = len(stream.messages)
                await eventually(lambda: stream.disconnected != [], within=10, what="the streaming login ended")
                assert credentials.holder(gcid) is None
                await send(streaming_broker, bench, 3, _door(False))
                await send(streaming_broker, bench, 4, _parked())
                await eventually(lambda: backend.ingest.stats.stored >= 4, what="both records stored")
                await asyncio.sleep(0.5)  # what a late publish would need to arrive
                assert len(stream.messages) == heard
            finally:
                stream.close()

            assert (await http.get("/simulator/reports/transactions", headers=headers)).status_code == 403
            report = await http.get("/simulator/reports/transactions", headers=owner)
            assert report.status_code == 200, report.text
            sent_to = {(item["clientId"], item["channel"]) for item in _transfers(report.json())}
            # The first REST read found no values yet (nothing went); the one after the events did.
            assert sent_to == {(client_id, "push"), (client_id, "rest")}, report.text


def approve_as_owner(backend: BackendStub) -> Callable[[str], Awaitable[object]]:
    """`backend-stub cardata approve CODE --account anna --owner`, in the backend's process."""
    assert backend.cardata is not None
    flow = backend.cardata.flow
    return lambda user_code: backend.operate(flow.approve, user_code, OWNER, owner=True)


def _transfers(report: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = report["transfers"]
    return found
