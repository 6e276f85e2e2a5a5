"""The backend's remote-measure task: takes the vehicles' answers from ingest and sends due attempts.

Observers run inside ingest's database transaction, so answers are queued there (`EventInbox`) and
booked once it has committed (booking writes through the measure store's own connection). The
scheduler is ticked every `poll_s`, at once when a vehicle comes online, and after every answer, so a
retry whose cause went away goes out without waiting. Booking and the tick are plain database work on
the database thread; the orders the tick returns are published here, on the loop, in order (an order
the link drops is an attempt without an answer: lost after the attempt timeout, then retried).
"""

from __future__ import annotations

import logging

from backend_stub.database_thread import DatabaseThread
from backend_stub.ingest import Ingest
from backend_stub.measures import DueOrder, MeasureScheduler
from backend_stub.service_shell import EventInbox, ServiceShell
from tcu.broker_config import BrokerConfig
from tcu.uplink.mqtt_port import ClientFactory, MqttClient
from telematics_wire.records import ReceivedRecord, RecordKind

_LOGGER = logging.getLogger(__name__)
RESULT_EVENT = "measure_result"


class MeasureService:
    def __init__(
        self,
        scheduler: MeasureScheduler,
        broker: BrokerConfig,
        *,
        poll_s: float = 0.5,
        identifier: str = "backend-stub-measures",
        database: DatabaseThread | None = None,
        clients: ClientFactory | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._poll_s = poll_s
        self._inbox: EventInbox[ReceivedRecord] = EventInbox()
        self.shell = ServiceShell("measure service", broker, identifier=identifier, database=database, clients=clients)

    def attach(self, ingest: Ingest) -> None:
        ingest.add_observer(self._on_record)
        ingest.add_status_observer(self._on_status)

    def _on_record(self, record: ReceivedRecord) -> None:
        if record.kind is RecordKind.EVENT and record.body.get("type") == RESULT_EVENT:
            self._inbox.put(record)

    def _on_status(self, vin: str, online: bool) -> None:
        if online:
            self._inbox.wakeup.set()

    def process_inbox(self) -> int:
        taken = self._inbox.take()
        for record in taken:
            self._scheduler.on_record(record)
        return len(taken)

    def _scheduler_pass(self) -> list[DueOrder]:
        """Book the answers, then tick: the orders due, to publish in this order."""
        self.process_inbox()
        return self._scheduler.tick()

    async def _send_due(self, client: MqttClient) -> None:
        for order in await self.shell.offload(self._scheduler_pass):
            await client.publish(order.topic, order.payload, qos=1)
            _LOGGER.info("measure %s: attempt %d sent to %s", order.measure_id, order.attempt, order.vin)

    async def _serve(self, client: MqttClient) -> None:
        await self.shell.repeat(
            lambda: self._send_due(client),
            what="booking answers and sending due measure attempts",
            wakeup=self._inbox.wakeup,
            poll_s=self._poll_s,
        )

    async def run(self) -> None:
        await self.shell.run(serve=self._serve)
