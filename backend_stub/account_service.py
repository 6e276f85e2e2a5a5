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

import asyncio
import contextlib
import logging
from collections import deque

import aiomqtt

from backend_stub.accounts import AccountStore, OwnerChange
from backend_stub.broker_link import serve_reconnecting
from backend_stub.handover import handover_list
from backend_stub.ingest import Ingest
from backend_stub.invoices import Billing
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.retention import RetentionJob
from tcu.clock import Clock
from tcu.config import BrokerConfig
from tcu.services.terms import Booking
from tcu.uplink.records import ReceivedRecord, RecordKind
from tcu.uplink.topics import VehicleTopics

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
    ) -> None:
        self.billing = billing  # None: no signing key, so no invoices can suspend anything
        self._accounts = accounts
        self._provisioning = provisioning
        self._retention = retention
        self._broker = broker
        self._clock = clock
        self._poll_s = poll_s
        self._identifier = identifier
        self._inbox: deque[ReceivedRecord] = deque()
        self._wakeup = asyncio.Event()

    def attach(self, ingest: Ingest) -> None:
        ingest.add_observer(self._on_record)

    def _on_record(self, record: ReceivedRecord) -> None:
        if record.kind is RecordKind.EVENT and record.body.get("type") == OWNER_CHANGE:
            self._inbox.append(record)
            self._wakeup.set()

    def process_inbox(self) -> list[OwnerChange]:
        """Handle the owner changes ingest stored since the last call; call after its commit."""
        handled = []
        while self._inbox:
            record = self._inbox.popleft()
            now = self._clock.now()
            if (record.vin, bytes(record.epoch), record.seq) in self._accounts.owner_changes(record.vin):
                continue  # taken twice: the seller's invoices were handed over the first time
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
                continue
            self._retention.after_owner_change(record.vin, record.epoch, record.seq)
            account = "no linked account" if change.ended_link is None else f"account {change.ended_link.account}"
            _LOGGER.warning(
                "owner change of vehicle %s: link with %s ended, consents ended, personal data removed; "
                "the new owner is told of %d service(s)",
                record.vin,
                account,
                len(change.handover),
            )
            handled.append(change)
        return handled

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._handle_forever(), name="backend-owner-changes")
            tasks.create_task(
                serve_reconnecting(
                    self._broker,
                    identifier=self._identifier,
                    serve=self._serve,
                    on_down=lambda reason: _LOGGER.warning("account service MQTT link down: %s", reason),
                ),
                name="backend-account-messages",
            )

    async def _handle_forever(self) -> None:
        while True:
            try:
                self.process_inbox()
            except Exception:  # one report that cannot be handled must not stop the others
                _LOGGER.exception("owner change could not be handled")
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wakeup.wait()

    async def _serve(self, client: aiomqtt.Client) -> None:
        while True:
            for number, vin, signed in self._accounts.pending_messages(self._clock.now()):
                await client.publish(VehicleTopics(vin).down("account"), signed, qos=1)
                self._accounts.mark_published(number, self._clock.now())
                _LOGGER.info("account message %d published to vehicle %s", number, vin)
            await asyncio.sleep(self._poll_s)
