"""The backend's account task: owner changes reported by cars, and account messages into the cars.

An `owner_change` event (tcu `owner-change`, AGB 7.2) is taken from ingest — inside ingest's
transaction, so it is queued there and handled once that has committed: the seller's unpaid invoices
become his debt alone, recorded against his account, and the bookings suspended for his overdue ones
end (backend_stub.invoices `Billing.owner_change`, AGB 7.1: his contract is not the buyer's); the
account link ends with its consents, the new owner's handover list is kept (AGB 7.3, `backend-stub
handover`), and the previous owner's personal data goes (backend_stub.retention). Handling it twice
changes nothing.

Account messages (the pairing security code, the link) are issued by the CLI in another process, so
the store is polled every `poll_s` and what is pending is published with QoS 1; the vehicle's
persistent session holds it for a car that is off.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from backend_stub.accounts import AccountStore, OwnerChange
from backend_stub.database_thread import DatabaseThread
from backend_stub.handover import handover_list
from backend_stub.ingest import Ingest
from backend_stub.invoices import Billing
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.retention import RetentionJob
from backend_stub.service_shell import EventInbox, ServiceShell
from backend_stub.wakeup import Wakeup
from tcu.broker_config import BrokerConfig
from tcu.clock import Clock
from tcu.uplink.mqtt_port import MqttClient
from telematics_wire.records import ReceivedRecord, RecordKind
from telematics_wire.terms import Booking
from telematics_wire.topics import VehicleTopics

_LOGGER = logging.getLogger(__name__)
OWNER_CHANGE = "owner_change"


class AccountService:
    def __init__(
        self,
        accounts: AccountStore,
        provisioning: ProvisioningStore,
        retention: RetentionJob,
        broker: BrokerConfig,
        clock: Clock,
        *,
        poll_s: float = 1.0,
        identifier: str = "backend-stub-accounts",
        billing: Billing | None = None,
        database: DatabaseThread | None = None,
    ) -> None:
        self.billing = billing  # None: no signing key, so no invoices can suspend anything
        self.owner_changed: Callable[[OwnerChange], None] | None = None  # told after each (CarData's logins)
        self._accounts = accounts
        self._provisioning = provisioning
        self._retention = retention
        self._clock = clock
        self._poll_s = poll_s
        self._inbox: EventInbox[ReceivedRecord] = EventInbox()
        self._publish_tick = Wakeup()  # never set: messages are issued by another process, so polled
        self.shell = ServiceShell("account service", broker, identifier=identifier, database=database)

    def attach(self, ingest: Ingest) -> None:
        ingest.add_observer(self._on_record)

    def _on_record(self, record: ReceivedRecord) -> None:
        if record.kind is RecordKind.EVENT and record.body.get("type") == OWNER_CHANGE:
            self._inbox.put(record)

    def process_inbox(self) -> list[OwnerChange]:
        """Handle the owner changes ingest stored since the last call; call after its commit."""
        handled = []
        for record in self._inbox.take():
            try:
                change = self._owner_change(record)
            except Exception:  # one report that cannot be handled must not stop the others
                _LOGGER.exception("owner change of vehicle %s (seq %d) could not be handled", record.vin, record.seq)
                continue
            if change is not None:
                handled.append(change)
        return handled

    def _owner_change(self, record: ReceivedRecord) -> OwnerChange | None:
        now = self._clock.now()
        if (record.vin, bytes(record.epoch), record.seq) in self._accounts.owner_changes(record.vin):
            return None  # taken twice: the seller's invoices were handed over the first time
        link = self._accounts.link(record.vin)
        ended: tuple[Booking, ...] = ()
        if self.billing is not None:
            ended = self.billing.owner_change(record.vin, debtor=None if link is None else link.account).ended
        change = self._accounts.owner_change(
            record.vin,
            epoch=record.epoch,
            seq=record.seq,
            created=record.created,
            now=now,
            handover=handover_list(self._provisioning, record.vin, now, ended=ended),
        )
        if change is None:
            return None
        self._retention.after_owner_change(record.vin, record.epoch, record.seq)
        if self.owner_changed is not None:
            self.owner_changed(change)
        account = "no linked account" if change.ended_link is None else f"account {change.ended_link.account}"
        _LOGGER.warning(
            "owner change of vehicle %s: link with %s ended, consents ended, personal data removed; "
            "the new owner is told of %d service(s)",
            record.vin,
            account,
            len(change.handover),
        )
        return change

    async def _handle_owner_changes(self) -> None:
        await self.shell.offload(self.process_inbox)

    async def _publish_messages(self, client: MqttClient) -> None:
        for number, vin, signed in await self.shell.offload(self._accounts.pending_messages, self._clock.now()):
            await client.publish(VehicleTopics(vin).down("account"), signed, qos=1)
            await self.shell.offload(self._accounts.mark_published, number, self._clock.now())
            _LOGGER.info("account message %d published to vehicle %s", number, vin)

    async def _serve(self, client: MqttClient) -> None:
        await self.shell.repeat(
            lambda: self._publish_messages(client),
            what="publishing account messages",
            wakeup=self._publish_tick,
            poll_s=self._poll_s,
        )

    async def run(self) -> None:
        owner_changes = functools.partial(
            self.shell.repeat,
            self._handle_owner_changes,
            what="handling owner changes",
            wakeup=self._inbox.wakeup,
            poll_s=self._poll_s,
        )
        await self.shell.run(serve=self._serve, loops={"owner-changes": owner_changes})
