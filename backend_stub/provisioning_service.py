"""Delivering provisioning files to vehicles, and taking in what the vehicles answer.

Delivery: the newest file of a vehicle is published on `vehicles/{VIN}/down/provisioning`, QoS 1,
retained, so the broker holds each vehicle's latest desired state even after the vehicle's session
has expired, and a vehicle gets it whenever it subscribes. A file is *delivered* once the broker's
PUBACK returns (aiomqtt's publish awaits it). Files issued by another process (the CLI) are noticed
through the store's change counter, polled every `poll_s`; a vehicle whose status turns online gets
its latest unapplied file again, and a file that expired before the vehicle applied it is reissued
(same desired state, next version, fresh expiry) instead of being sent to certain refusal. On MQTT 5
the message expires at the broker when the file does.

Intake: `provisioning_result` and `capabilities` events arrive as ordinary sealed records; ingest
tells its observers about each stored record inside its transaction, so they are only queued there
and booked here just after. A backend that dies between the two loses nothing: at start the events
of vehicles still awaiting a result are read back from the record store and booked again (booking is
idempotent per record).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from backend_stub.database_thread import DatabaseThread
from backend_stub.errors import BackendError
from backend_stub.ingest import Ingest
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_history import UNRESOLVED, CapabilityReport, IssuedFile, ResultStatus, VehicleResult
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.service_shell import EventInbox, ServiceShell
from backend_stub.store import BackendStore, StoredRecord
from backend_stub.wakeup import Wakeup
from tcu.broker_config import BrokerConfig
from tcu.clock import Clock
from tcu.uplink.mqtt_port import MqttClient
from telematics_wire.records import ReceivedRecord, RecordKind
from telematics_wire.topics import VehicleTopics

_LOGGER = logging.getLogger(__name__)

DOWNLINK_KIND = "provisioning"
RESULT_EVENT = "provisioning_result"
CAPABILITIES_EVENT = "capabilities"
RECONCILE_SLACK = timedelta(days=1)  # vehicle clocks may lag the backend's


def provisioning_topic(vin: str) -> str:
    return VehicleTopics(vin).down(DOWNLINK_KIND)


def parse_result(
    *, vin: str, seq: int, created: datetime, received: datetime, body: Mapping[str, Any], epoch: bytes = b""
) -> VehicleResult:
    """A `provisioning_result` body, tolerantly: a mistyped field becomes None, an unknown status UNKNOWN."""

    def text(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    version = body.get("version")
    return VehicleResult(
        vin=vin,
        epoch=epoch,
        seq=seq,
        created=created,
        received=received,
        version=version if isinstance(version, int) and not isinstance(version, bool) else None,
        status=ResultStatus(text("status") or "unknown"),
        code=text("code"),
        reason=text("reason"),
    )


class Publisher(Protocol):
    async def publish(self, topic: str, payload: bytes, *, expiry_s: int) -> None:
        """Publish retained at QoS 1; return once the broker has acknowledged it."""


class MqttPublisher:
    def __init__(self, client: MqttClient, *, mqtt5: bool) -> None:
        self._client = client
        self._mqtt5 = mqtt5

    async def publish(self, topic: str, payload: bytes, *, expiry_s: int) -> None:
        # The expiry is an MQTT 5 property, which only aiomqtt's client carries (the twin, `hil.mqtt_twin`,
        # does not model properties): without it the file is retained until replaced.
        if self._mqtt5 and isinstance(self._client, aiomqtt.Client):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry_s
            await self._client.publish(topic, payload, qos=1, retain=True, properties=properties)
            return
        await self._client.publish(topic, payload, qos=1, retain=True)


@dataclass
class MemoryPublisher:
    """The in-memory twin: what a broker would retain, and every publication in order."""

    retained: dict[str, bytes] = field(default_factory=dict)
    published: list[tuple[str, bytes, int]] = field(default_factory=list)
    fail: bool = False  # True: publications fail like a dropped link

    async def publish(self, topic: str, payload: bytes, *, expiry_s: int) -> None:
        if self.fail:
            raise aiomqtt.MqttError("link down (in-memory publisher told to fail)")
        self.published.append((topic, payload, expiry_s))
        self.retained[topic] = payload


class ProvisioningService:
    """The backend's provisioning task: `attach` it to ingest, then `run()` it in the app's TaskGroup.

    It keeps its own MQTT connection (a publisher only), so a stalled publication never holds up the
    ingest of vehicle data and its acks. Its database work runs on the database thread when given one.
    """

    def __init__(
        self,
        store: ProvisioningStore,
        records: BackendStore,
        broker: BrokerConfig,
        clock: Clock,
        *,
        issuer: ProvisioningIssuer | None,
        poll_s: float = 0.5,
        identifier: str = "backend-stub-provisioning",
        database: DatabaseThread | None = None,
    ) -> None:
        self._store = store
        self._records = records
        self._clock = clock
        self._issuer = issuer  # None without a signing key: expired files cannot be reissued
        self._poll_s = poll_s
        self._mqtt5 = broker.protocol == "5"
        self._inbox: EventInbox[tuple[ReceivedRecord, datetime]] = EventInbox()
        self._wakeup = Wakeup()
        self._republish: set[str] = set()  # added to on the database thread, read there too
        self._seen_changes = -1
        self.shell = ServiceShell("provisioning delivery", broker, identifier=identifier, database=database)
        self.connected = self.shell.connected

    def attach(self, ingest: Ingest) -> None:
        ingest.add_observer(self.on_record)
        ingest.add_status_observer(self.on_status)

    # -- intake ----------------------------------------------------------------------------------

    def on_record(self, record: ReceivedRecord) -> None:
        """Ingest observer: queue the events we book; runs inside ingest's transaction."""
        if record.kind is RecordKind.EVENT and record.body.get("type") in (RESULT_EVENT, CAPABILITIES_EVENT):
            self._inbox.put((record, self._clock.now()))

    def on_status(self, vin: str, online: bool) -> None:
        if online:
            self._republish.add(vin)
            self._wakeup.set()

    def process_inbox(self) -> int:
        """Book what the observers queued; returns how many events were taken."""
        taken = self._inbox.take()
        for record, received in taken:
            self._take(record, received)
        return len(taken)

    def reconcile(self) -> int:
        """Book events stored while the backend died before booking them (see the module docstring)."""
        taken = 0
        for vin, since in self._store.awaiting_results().items():
            for stored in self._records.records(vin, kind=RecordKind.EVENT.value, since=since - RECONCILE_SLACK):
                if stored.body.get("type") in (RESULT_EVENT, CAPABILITIES_EVENT):
                    self._take(stored, stored.received)
                    taken += 1
        return taken

    def _take(self, record: ReceivedRecord | StoredRecord, received: datetime) -> None:
        vin, seq, body = record.vin, record.seq, record.body
        if body.get("type") == CAPABILITIES_EVENT:
            report = CapabilityReport(
                vin=vin,
                ordinal=self._records.epoch_ordinal(vin, record.epoch) or 0,
                seq=seq,
                created=record.created,
                received=received,
                report=dict(body),
            )
            if self._store.set_capabilities(report):
                _LOGGER.info("capability report of %s (seq %d) stored", vin, seq)
            return
        result = parse_result(
            vin=vin, epoch=record.epoch, seq=seq, created=record.created, received=received, body=body
        )
        booked = self._store.record_result(result)
        if booked is None:
            return  # taken before
        if booked.attributed is None:
            _LOGGER.warning(
                "provisioning result of %s (seq %d, version %s, %s) matches no single file: logged only; %s",
                vin,
                seq,
                booked.version,
                booked.status,
                booked.reason,
            )
        elif booked.status is ResultStatus.REJECTED:
            _LOGGER.warning(
                "%s rejected provisioning file version %d (%s): %s", vin, booked.attributed, booked.code, booked.reason
            )
        else:
            _LOGGER.info("%s: provisioning file version %d %s", vin, booked.attributed, booked.status)

    async def _book(self) -> None:
        await self.shell.offload(self.process_inbox)

    # -- delivery --------------------------------------------------------------------------------

    async def deliver(self, publisher: Publisher) -> int:
        """Publish every due file (new, or asked again by a vehicle coming online); returns how many."""
        published = 0
        for vin, head in await self.shell.offload(self._due_files):
            remaining_s = math.ceil((head.expires - self._clock.now()).total_seconds())
            await publisher.publish(provisioning_topic(vin), head.signed, expiry_s=max(1, remaining_s))
            await self.shell.offload(self._published, vin, head.version)
            published += 1
            _LOGGER.info("published provisioning file version %d to %s (retained)", head.version, vin)
        return published

    def _due_files(self) -> list[tuple[str, IssuedFile]]:
        """(vin, file) to publish, oldest VIN first; an expired file is reissued first when it can be."""
        self._seen_changes = self._store.changes()
        due = []
        for vin in sorted(set(self._store.pending_vins()) | self._republish):
            head = self._store.head(vin)
            if head is None or head.state not in UNRESOLVED:
                self._republish.discard(vin)  # nothing to deliver: applied, rejected, or never provisioned
                continue
            if self._clock.now() >= head.expires:
                if self._issuer is None:
                    _LOGGER.warning("%s: version %d expired unapplied; no signing key to reissue", vin, head.version)
                    self._republish.discard(vin)
                    continue
                try:
                    head = self._issuer.reissue(vin, f"version {head.version} expired before the vehicle applied it")
                except BackendError as exc:
                    _LOGGER.error("%s: cannot reissue expired file version %d: %s", vin, head.version, exc)
                    self._republish.discard(vin)
                    continue
            due.append((vin, head))
        return due

    def _published(self, vin: str, version: int) -> None:
        self._store.mark_published(vin, version, self._clock.now())
        self._republish.discard(vin)

    async def _changed_elsewhere(self) -> bool:
        """True when the change counter moved: another process (the CLI) issued a file."""
        return await self.shell.offload(self._store.changes) != self._seen_changes

    async def deliver_forever(self, publisher: Publisher) -> None:
        """Deliver now, then whenever woken (a vehicle came online) or the change counter moved."""
        await self.shell.repeat(
            lambda: self.deliver(publisher),
            what="delivering provisioning files",
            wakeup=self._wakeup,
            poll_s=self._poll_s,
            due=self._changed_elsewhere,
        )

    async def _serve(self, client: MqttClient) -> None:
        await self.deliver_forever(MqttPublisher(client, mqtt5=self._mqtt5))

    async def run(self) -> None:
        """Book what a previous run missed, then take in results and deliver files until cancelled."""
        if taken := await self.shell.offload(self.reconcile):
            _LOGGER.info("booked %d vehicle event(s) stored before the last shutdown", taken)
        intake = functools.partial(
            self.shell.repeat, self._book, what="booking vehicle events", wakeup=self._inbox.wakeup, poll_s=None
        )
        await self.shell.run(serve=self._serve, loops={"intake": intake})
