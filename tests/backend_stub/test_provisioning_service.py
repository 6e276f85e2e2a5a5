"""Delivery and intake of provisioning, with the in-memory publisher and a real Ingest (no broker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import pytest
from nacl.public import Box, PrivateKey
from nacl.signing import SigningKey

from backend_stub.ingest import Ingest
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_history import FileState
from backend_stub.provisioning_service import MemoryPublisher, ProvisioningService, parse_result
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from telematics_wire.catalogue import Catalogue
from telematics_wire.envelope import seal_record
from telematics_wire.provisioning import verify_file
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN, running_task

CATALOGUE = Catalogue.load()
TOPIC = f"vehicles/{VIN}/down/provisioning"
STATUS = f"vehicles/{VIN}/up/status"
RECORDS = f"vehicles/{VIN}/up/records"


@dataclass
class Backend:
    """The parts of a backend that provisioning touches, wired as the app wires them."""

    records: BackendStore
    store: ProvisioningStore
    ingest: Ingest
    issuer: ProvisioningIssuer
    service: ProvisioningService
    key: SigningKey
    box: Box  # the vehicle's side
    clock: ManualClock
    seq: int = 0

    def handle(self, topic: str, payload: bytes) -> None:
        with self.records.transaction():
            self.ingest.handle(topic, payload)

    def event(self, body: dict[str, Any]) -> bytes:
        self.seq += 1
        return seal_record(self.box, VIN, self.seq, Record(kind=RecordKind.EVENT, created=self.clock.now(), body=body))

    def result(self, status: str, version: int | None, code: str | None = None, reason: str | None = None) -> None:
        body = {"type": "provisioning_result", "version": version, "status": status, "code": code, "reason": reason}
        self.handle(RECORDS, self.event(body))

    def status(self, online: bool) -> None:
        self.handle(STATUS, cbor2.dumps({"online": online, "ts": 0, "agent": "test"}))


@pytest.fixture
def backend(tmp_path: Path, clock: ManualClock, vehicle_key: PrivateKey, backend_key: PrivateKey) -> Iterator[Backend]:
    path = tmp_path / "backend.sqlite3"
    records = BackendStore(path)
    records.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    store = ProvisioningStore(path, CATALOGUE)
    key = SigningKey.generate()
    issuer = ProvisioningIssuer(
        store, signing_key=key, clock=clock, enrolled=lambda vin: records.public_key(vin) is not None
    )
    ingest = Ingest(records, backend_key, clock, max_payload_bytes=64 * 1024)
    service = ProvisioningService(store, records, BrokerConfig(), clock, issuer=issuer, poll_s=0.01)
    service.attach(ingest)
    yield Backend(records, store, ingest, issuer, service, key, Box(vehicle_key, backend_key.public_key), clock)
    store.close()
    records.close()


def _states(backend: Backend) -> list[tuple[int, FileState]]:
    return [(f.version, f.state) for f in backend.store.files(VIN)]


# -- delivery --------------------------------------------------------------------------------------


async def test_a_pending_file_is_published_retained_and_becomes_delivered(backend: Backend) -> None:
    backend.issuer.book(VIN, "6AE", "unlimited")
    publisher = MemoryPublisher()
    assert await backend.service.deliver(publisher) == 1
    [(topic, payload, expiry_s)] = publisher.published
    assert (topic, expiry_s) == (TOPIC, 30 * 86400)
    accepted = verify_file(
        payload,
        backend.key.verify_key,
        vin=VIN,
        now=backend.clock.now(),
        applied=None,
        applied_version=0,
        legal_ecall_equipped=False,
        catalogue=CATALOGUE,
    )
    assert accepted.file.version == 1
    assert _states(backend) == [(1, FileState.DELIVERED)]
    assert await backend.service.deliver(publisher) == 0  # delivered once is enough until the vehicle asks


async def test_only_the_newest_version_is_published(backend: Backend) -> None:
    backend.issuer.book(VIN, "6AE", "unlimited")
    backend.issuer.deactivate_sim(VIN)
    publisher = MemoryPublisher()
    await backend.service.deliver(publisher)
    assert [backend.store.file(VIN, 2).signed] == [p for _, p, _ in publisher.published]  # type: ignore[union-attr]
    assert _states(backend) == [(1, FileState.SUPERSEDED), (2, FileState.DELIVERED)]


async def test_a_failed_publication_leaves_the_file_pending(backend: Backend) -> None:
    backend.issuer.book(VIN, "6AE", "unlimited")
    with pytest.raises(aiomqtt.MqttError):
        await backend.service.deliver(MemoryPublisher(fail=True))
    assert _states(backend) == [(1, FileState.PENDING)]


async def test_the_latest_unapplied_file_is_published_again_when_the_vehicle_comes_online(backend: Backend) -> None:
    backend.issuer.book(VIN, "6AE", "unlimited")
    publisher = MemoryPublisher()
    await backend.service.deliver(publisher)
    backend.status(False)
    assert await backend.service.deliver(publisher) == 0
    backend.status(True)  # through ingest's status observer
    assert await backend.service.deliver(publisher) == 1
    assert backend.store.files(VIN)[0].publications == 2
    backend.result("applied", 1)
    backend.service.process_inbox()
    backend.status(True)
    assert await backend.service.deliver(publisher) == 0  # applied: nothing to send again


async def test_an_expired_unapplied_file_is_reissued_rather_than_sent_to_certain_refusal(backend: Backend) -> None:
    backend.issuer.book(VIN, "6AE", "unlimited")
    publisher = MemoryPublisher()
    await backend.service.deliver(publisher)
    backend.clock.advance(31 * 86400)
    backend.status(True)
    await backend.service.deliver(publisher)
    assert _states(backend) == [(1, FileState.DELIVERED), (2, FileState.DELIVERED)]
    assert backend.store.file(VIN, 2).operation == "reissue: version 1 expired before the vehicle applied it"  # type: ignore[union-attr]
    assert publisher.retained[TOPIC] == backend.store.file(VIN, 2).signed  # type: ignore[union-attr]


async def test_without_a_signing_key_an_expired_file_is_not_published(backend: Backend, caplog) -> None:
    service = ProvisioningService(backend.store, backend.records, BrokerConfig(), backend.clock, issuer=None)
    backend.issuer.book(VIN, "6AE", "unlimited")
    backend.clock.advance(31 * 86400)
    assert await service.deliver(MemoryPublisher()) == 0
    assert "no signing key to reissue" in caplog.text


@contextlib.asynccontextmanager
async def delivering(service: ProvisioningService, publisher: MemoryPublisher) -> AsyncIterator[None]:
    async with running_task(service.deliver_forever(publisher), name="delivery-under-test"):
        yield


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - state written by another task or connection
            await asyncio.sleep(0.005)


async def test_a_file_issued_by_another_process_is_noticed_through_the_change_counter(
    backend: Backend, tmp_path: Path
) -> None:
    publisher = MemoryPublisher()
    cli_store = ProvisioningStore(tmp_path / "backend.sqlite3", CATALOGUE)  # the CLI's own connection
    try:
        async with delivering(backend.service, publisher):
            await asyncio.sleep(0.03)
            ProvisioningIssuer(
                cli_store, signing_key=backend.key, clock=backend.clock, enrolled=lambda _vin: True
            ).book(VIN, "6AE", "unlimited")
            await _until(lambda: len(publisher.published) == 1)
    finally:
        cli_store.close()
    assert _states(backend) == [(1, FileState.DELIVERED)]


async def test_a_vehicle_coming_online_wakes_delivery_without_waiting_for_the_poll(backend: Backend) -> None:
    service = ProvisioningService(
        backend.store, backend.records, BrokerConfig(), backend.clock, issuer=backend.issuer, poll_s=3600
    )
    service.attach(backend.ingest)
    backend.issuer.book(VIN, "6AE", "unlimited")
    publisher = MemoryPublisher()
    async with delivering(service, publisher):
        await _until(lambda: len(publisher.published) == 1)
        backend.status(True)
        await _until(lambda: len(publisher.published) == 2)


# -- intake ----------------------------------------------------------------------------------------


async def test_results_arrive_through_ingest_and_are_booked_after_its_commit(backend: Backend) -> None:
    backend.issuer.book(VIN, "6AE", "unlimited")
    await backend.service.deliver(MemoryPublisher())
    backend.result("applied", 1)
    assert _states(backend) == [(1, FileState.DELIVERED)]  # queued inside ingest's transaction
    assert backend.service.process_inbox() == 1
    assert _states(backend) == [(1, FileState.APPLIED)]
    backend.issuer.book(VIN, "STORE-CONNECTED", "1y")
    await backend.service.deliver(MemoryPublisher())
    backend.result("rejected", None, "forbidden_change", "forbidden change: ...")
    backend.service.process_inbox()
    latest = backend.store.file(VIN, 2)
    assert latest is not None
    assert (latest.state, latest.code, latest.reason) == (
        FileState.REJECTED,
        "forbidden_change",
        "forbidden change: ...",
    )


async def test_the_last_capability_report_is_stored_as_sent(backend: Backend) -> None:
    report = {"type": "capabilities", "provisioning_version": 0, "sim": "active", "categories": {"position": {}}}
    backend.handle(RECORDS, backend.event(report))
    backend.handle(RECORDS, backend.event({"type": "door_opened"}))  # other events are not ours
    backend.handle(RECORDS, backend.event({**report, "provisioning_version": 1}))
    assert backend.service.process_inbox() == 2
    stored = backend.store.capabilities(VIN)
    assert stored is not None
    assert (stored.seq, stored.report) == (3, {**report, "provisioning_version": 1})


async def test_a_replayed_record_reaches_no_observer(backend: Backend) -> None:
    payload = backend.event({"type": "capabilities", "provisioning_version": 0})
    backend.handle(RECORDS, payload)
    backend.handle(RECORDS, payload)
    assert backend.service.process_inbox() == 1


async def test_events_stored_before_a_crash_are_booked_at_the_next_start(backend: Backend, backend_key) -> None:
    backend.issuer.book(VIN, "6AE", "unlimited")
    await backend.service.deliver(MemoryPublisher())
    # The backend died after ingest committed the result, before provisioning booked it:
    backend.ingest = Ingest(backend.records, backend_key, backend.clock, max_payload_bytes=64 * 1024)
    backend.result("applied", 1)
    backend.handle(RECORDS, backend.event({"type": "capabilities", "provisioning_version": 1}))
    assert _states(backend) == [(1, FileState.DELIVERED)]
    assert backend.service.reconcile() == 2
    assert _states(backend) == [(1, FileState.APPLIED)]
    assert backend.store.capabilities(VIN) is not None
    assert backend.service.reconcile() == 0  # nothing awaits a result any more


def test_a_failing_observer_is_logged_and_ingest_goes_on(backend: Backend, caplog) -> None:
    def broken(_record: object) -> None:
        raise RuntimeError("observer bug")

    seen: list[tuple[str, bool]] = []
    backend.ingest.add_observer(broken)
    backend.ingest.add_status_observer(lambda vin, online: seen.append((vin, online)))
    with caplog.at_level(logging.ERROR):
        backend.handle(RECORDS, backend.event({"type": "capabilities"}))
        backend.status(True)
    assert backend.records.seqs(VIN) == [1]
    assert [topic for topic, _ in backend.ingest.take_acks()] == [f"vehicles/{VIN}/down/ack"]
    assert "ingest observer" in caplog.text
    assert "observer bug" in caplog.text
    assert seen == [(VIN, True)]


def test_a_result_body_is_read_tolerantly() -> None:
    at = ManualClock().now()
    body = {"type": "provisioning_result", "version": True, "status": 3, "code": None, "reason": ["x"]}
    result = parse_result(vin=VIN, seq=1, created=at, received=at, body=body)
    assert (result.version, result.status.value, result.code, result.reason) == (None, "unknown", None, None)
