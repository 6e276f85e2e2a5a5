"""The backend's remote-measure task: takes the vehicles' answers from ingest and sends due attempts.

Observers run inside ingest's database transaction, so answers are queued there and booked once it
has committed (booking writes through the measure store's own connection). The scheduler is ticked
every `poll_s`, at once when a vehicle comes online, and after every answer, so a retry whose cause
went away goes out without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import aiomqtt

from backend_stub.broker_link import serve_reconnecting
from backend_stub.ingest import Ingest
from backend_stub.measures import MeasureScheduler
from tcu.config import BrokerConfig
from tcu.uplink.records import ReceivedRecord, RecordKind

_LOGGER = logging.getLogger(__name__)


class MeasureService:
    def __init__(
        self,
        scheduler: MeasureScheduler,
        broker: BrokerConfig,
        *,
        poll_s: float = 0.5,
        identifier: str = "backend-stub-measures",
    ) -> None:
        self._scheduler = scheduler
        self._broker = broker
        self._poll_s = poll_s
        self._identifier = identifier
        self._inbox: deque[ReceivedRecord] = deque()
        self._wakeup = asyncio.Event()

    def attach(self, ingest: Ingest) -> None:
        ingest.add_observer(self._on_record)
        ingest.add_status_observer(self._on_status)

    def _on_record(self, record: ReceivedRecord) -> None:
        if record.kind is RecordKind.EVENT and record.body.get("type") == "measure_result":
            self._inbox.append(record)
            self._wakeup.set()

    def _on_status(self, vin: str, online: bool) -> None:
        if online:
            self._wakeup.set()

    def process_inbox(self) -> int:
        taken = 0
        while self._inbox:
            self._scheduler.on_record(self._inbox.popleft())
            taken += 1
        return taken

    async def run(self) -> None:
        await serve_reconnecting(
            self._broker,
            identifier=self._identifier,
            serve=self._serve,
            on_down=lambda reason: _LOGGER.warning("measure service MQTT link down: %s", reason),
        )

    async def _serve(self, client: aiomqtt.Client) -> None:
        async def publish(topic: str, payload: bytes) -> None:
            await client.publish(topic, payload, qos=1)

        while True:
            self.process_inbox()
            await self._scheduler.tick(publish)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wakeup.wait()
