"""One ingest worker process: the backend's ingest alone, on the shared subscription of vehicle records.

`backend-stub run --ingest-workers N` starts N - 1 of these beside the backend's own ingest
(`backend_stub.ingest_workers`); the broker hands each record to one member of the group. A worker
opens, stores and acknowledges its records end to end exactly as the backend's own ingest does — its
own connection to the same database (SQLite's write lock serialises the workers' batches; a record
sent twice is stored once whichever worker gets it: `(vin, epoch, seq)` is the records' key) and its
own MQTT client, whose persistent session the broker keeps while the worker restarts.

The services that book events (provisioning results, measure answers, owner changes, call-centre
cases) run only in the backend's process, so a worker sends each non-telemetry record it stored
there through a pipe, once its batch has committed; telemetry, 99 % of the traffic, stays here.
"""

from __future__ import annotations

import logging
from multiprocessing.connection import Connection

from nacl.public import PrivateKey

from backend_stub.config import BackendConfig
from backend_stub.database_thread import DatabaseThread
from backend_stub.ingest import Ingest, IngestService
from backend_stub.store import BackendStore
from backend_stub.store_location import open_record_store
from tcu.clock import Clock, SystemClock
from tcu.runner import configure_logging, run_service
from telematics_wire.keys import load_private_key
from telematics_wire.records import ReceivedRecord, RecordKind
from telematics_wire.topics import ROOT

_LOGGER = logging.getLogger(__name__)
RECORDS_WILDCARD = f"{ROOT}/+/up/records"
STATUS_WILDCARD = f"{ROOT}/+/up/status"
GROUP = "backend-ingest"  # every backend's ingest shares it: on several hosts too, over one database


def shared(topic: str, group: str) -> str:
    """`topic` as a shared subscription of `group` (MQTT 5, also understood by Mosquitto on 3.1.1)."""
    return f"$share/{group}/{topic}"


class RelayingIngest(Ingest):
    """Ingest that sends each newly stored non-telemetry record to the backend's process after commit."""

    def __init__(
        self, store: BackendStore, private_key: PrivateKey, clock: Clock, max_payload_bytes: int, *, relay: Connection
    ) -> None:
        super().__init__(store, private_key, clock, max_payload_bytes)
        self._relay = relay
        self._uncommitted: list[ReceivedRecord] = []
        self.add_observer(self._hold)

    def _hold(self, record: ReceivedRecord) -> None:
        if record.kind is not RecordKind.TELEMETRY:
            self._uncommitted.append(record)

    def forget_acks(self) -> None:
        self._uncommitted.clear()  # the batch did not commit: none of it is stored
        super().forget_acks()

    def take_acks(self) -> list[tuple[str, bytes]]:
        for record in self._uncommitted:  # called after the commit: these records stand
            self._relay.send(record)
        self._uncommitted.clear()
        return super().take_acks()


def build_worker(
    config: BackendConfig, index: int, relay: Connection, *, clock: Clock | None = None
) -> tuple[IngestService, BackendStore, DatabaseThread]:
    """Worker `index`'s ingest service, its store and its database thread (the caller closes both)."""
    store = open_record_store(config)  # the SQLite file, or PostgreSQL shared across hosts ([store] url)
    ingest = RelayingIngest(
        store, load_private_key(config.private_key), clock or SystemClock(), config.max_payload_bytes, relay=relay
    )
    database = DatabaseThread(f"ingest-{index}-db")
    service = IngestService(
        ingest,
        store,
        config.broker,
        identifier=f"backend-stub-ingest-{index}",
        database=database,
        subscriptions=(shared(RECORDS_WILDCARD, GROUP),),
    )
    return service, store, database


async def _serve(config: BackendConfig, index: int, relay: Connection) -> None:
    service, store, database = build_worker(config, index, relay)
    try:
        await service.run()
    finally:
        database.close()  # the batch in progress commits (and is relayed) before the store closes
        store.close()
        relay.close()


def run_worker(config: BackendConfig, index: int, relay: Connection, log_level: str) -> None:
    """The worker process's entry point (multiprocessing, spawn): runs until SIGTERM."""
    configure_logging(log_level)
    _LOGGER.info("ingest worker %d on %s", index, config.broker.url)
    run_service(_serve(config, index, relay))
