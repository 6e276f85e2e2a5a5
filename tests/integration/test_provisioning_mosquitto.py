"""Provisioning through a real Mosquitto: retained, signed delivery; re-delivery online; vehicle results.

The first tests stand in for the vehicle with a plain MQTT client, so they check the backend alone;
the last ones run the real agent and follow a file from `backend-stub provision` to the vehicle's
result and capability report.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import cbor2
import pytest

from backend_stub.app import BackendStub
from backend_stub.cli import main as backend_cli
from backend_stub.provisioning_history import FileState
from backend_stub.provisioning_store import ProvisioningStore
from hil.broker import MosquittoBroker
from hil.devices.modem_sim import ModemSimulator
from hil.layout import BenchLayout
from telematics_wire.catalogue import Catalogue
from telematics_wire.keys import load_verify_key
from telematics_wire.provisioning import ProvisioningFile, verify_file
from tests.conftest import VIN, eventually
from tests.integration.conftest import legal_ecall, running_agent, vehicle_config

TOPIC = f"vehicles/{VIN}/down/provisioning"


def provision(layout: BenchLayout, action: str, *options: str) -> None:
    """As a person would, from another process's point of view: the CLI has its own database connection."""
    assert backend_cli(["provision", action, VIN, *options, "--config", str(layout.backend_config)]) == 0


@pytest.fixture
def provisioning(backend: BackendStub) -> Iterator[ProvisioningStore]:
    """What the running `backend` has committed, on a connection of the test's own: the backend's own
    connection belongs to its database thread, where a transaction may be half written."""
    store = ProvisioningStore(backend.config.database)
    yield store
    store.close()


def state(provisioning: ProvisioningStore, version: int) -> FileState | None:
    file = provisioning.file(VIN, version)
    return None if file is None else file.state


@contextlib.asynccontextmanager
async def vehicle_stand_in(mosquitto: MosquittoBroker) -> AsyncIterator[aiomqtt.Client]:
    """A plain MQTT 5 client subscribed to the vehicle's provisioning topic."""
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.port, identifier="stand-in", protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe(TOPIC, qos=1)
        yield client


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async for message in client.messages:
        return message
    raise AssertionError("subscription ended")


def verified(layout: BenchLayout, backend: BackendStub, payload: bytes) -> ProvisioningFile:
    return verify_file(
        payload,
        load_verify_key(layout.keys / "backend.ed25519.pub"),
        vin=VIN,
        now=backend.clock.now(),
        applied=None,
        applied_version=0,
        legal_ecall_equipped=False,
        catalogue=Catalogue.load(),
    ).file


async def test_a_booked_file_is_published_retained_signed_for_this_vehicle(
    layout: BenchLayout, backend: BackendStub, mosquitto: MosquittoBroker, provisioning: ProvisioningStore
) -> None:
    layout.add_vehicle(VIN)
    # The CLI as a real process: the running backend notices its file through the database alone.
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend_stub.cli",
        "--log-level",
        "warning",
        "provision",
        "book",
        VIN,
        "--service",
        "6AE",
        "--term",
        "unlimited",
        "--config",
        str(layout.backend_config),
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert await cli.wait() == 0
    await eventually(lambda: state(provisioning, 1) is FileState.DELIVERED, what="PUBACK for version 1")
    async with vehicle_stand_in(mosquitto) as vehicle:  # subscribes after the publication: the retained copy
        message = await next_message(vehicle)
    assert (str(message.topic), message.retain, message.qos) == (TOPIC, True, 1)
    assert isinstance(message.payload, bytes)
    file = verified(layout, backend, message.payload)
    assert (file.version, sorted(file.codes)) == (1, ["6AE"])


async def test_the_retained_copy_is_always_the_newest_version(
    layout: BenchLayout, backend: BackendStub, mosquitto: MosquittoBroker, provisioning: ProvisioningStore
) -> None:
    layout.add_vehicle(VIN)
    provision(layout, "book", "--service", "6AE", "--term", "unlimited")
    provision(layout, "deactivate-sim")  # any second version (suspend needs a paid code since issue 12)
    await eventually(lambda: state(provisioning, 2) is FileState.DELIVERED, what="version 2 delivered")
    async with vehicle_stand_in(mosquitto) as vehicle:
        message = await next_message(vehicle)
    assert isinstance(message.payload, bytes)
    assert verified(layout, backend, message.payload).version == 2


async def test_the_latest_unapplied_file_is_published_again_when_the_vehicle_comes_online(
    layout: BenchLayout, backend: BackendStub, mosquitto: MosquittoBroker, provisioning: ProvisioningStore
) -> None:
    layout.add_vehicle(VIN)
    provision(layout, "book", "--service", "6AE", "--term", "unlimited")
    await eventually(lambda: state(provisioning, 1) is FileState.DELIVERED, what="version 1 delivered")
    async with vehicle_stand_in(mosquitto) as vehicle:
        retained = await next_message(vehicle)
        await vehicle.publish(f"vehicles/{VIN}/up/status", cbor2.dumps({"online": True, "ts": 0, "agent": "x"}), qos=1)
        again = await next_message(vehicle)  # a live publication, not the retained copy
    assert (retained.retain, again.retain) == (True, False)
    assert again.payload == retained.payload
    await eventually(lambda: provisioning.files(VIN)[0].publications == 2, what="second publication counted")


async def test_a_vehicle_applies_the_file_and_reports_its_capabilities(
    layout: BenchLayout, backend: BackendStub, provisioning: ProvisioningStore
) -> None:
    config = vehicle_config(layout, interval_s=0.5)
    async with running_agent(config) as agent:
        provision(layout, "book", "--service", "6AE", "--term", "unlimited")
        await eventually(lambda: state(provisioning, 1) is FileState.APPLIED, what="the vehicle applied version 1")
        assert agent.services.entitlements.version == 1
        await eventually(
            lambda: (
                (report := provisioning.capabilities(VIN)) is not None and report.report["provisioning_version"] == 1
            ),
            what="capability report after the apply",
        )
    [booked] = [r for r in provisioning.results(VIN) if r.attributed == 1]
    assert booked.status.value == "applied"


async def test_a_file_issued_while_the_vehicle_was_off_is_applied_when_it_starts(
    layout: BenchLayout, backend: BackendStub, provisioning: ProvisioningStore
) -> None:
    config = vehicle_config(layout, interval_s=0.5)
    provision(layout, "book", "--service", "6AE", "--term", "unlimited")
    await eventually(lambda: state(provisioning, 1) is FileState.DELIVERED, what="retained at the broker")
    async with running_agent(config):
        await eventually(lambda: state(provisioning, 1) is FileState.APPLIED, what="applied at first start")


async def test_equipment_the_backend_does_not_know_of_is_reported_as_a_rejection(
    layout: BenchLayout, backend: BackendStub, tmp_path: Path, provisioning: ProvisioningStore
) -> None:
    """The vehicle has legal eCall; the backend was not told at enrolment, so its file lacks 6AF."""
    async with ModemSimulator(psap_address=("127.0.0.1", 9), link_path=tmp_path / "ttyMODEM") as modem:
        config = vehicle_config(layout, interval_s=0.5, ecall=legal_ecall(modem.path))
        async with running_agent(config):
            provision(layout, "book", "--service", "6AE", "--term", "unlimited")
            await eventually(lambda: state(provisioning, 1) is FileState.REJECTED, what="the vehicle's refusal")
    file = provisioning.file(VIN, 1)
    assert file is not None
    assert file.code == "forbidden_change"
    assert "removes legal eCall (6AF)" in (file.reason or "")
