"""The backend stub's composition root."""

from __future__ import annotations

import asyncio
import logging

from backend_stub.config import BackendConfig
from backend_stub.ingest import Ingest, IngestService
from backend_stub.store import BackendStore
from tcu.clock import Clock, SystemClock
from tcu.keys import load_private_key

_LOGGER = logging.getLogger(__name__)


class BackendStub:
    def __init__(self, config: BackendConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.store = BackendStore(config.database)
        self.ingest = Ingest(self.store, load_private_key(config.private_key), self.clock, config.max_payload_bytes)
        self.service = IngestService(self.ingest, self.store, config.broker)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.service.run(), name="backend-ingest")
        finally:
            self.store.close()
