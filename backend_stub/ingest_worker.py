"""One ingest worker: the backend's ingest alone, on the shared subscription of vehicle records.

`backend-stub run --ingest-workers N` starts N - 1 of these beside the backend's own ingest, as its
child processes (`backend_stub.ingest_workers`); `backend-stub ingest-worker --config ...` runs one on
its own, on any host that reaches the broker and the PostgreSQL record store (`run_standalone`). The
broker hands each record to one member of the group. A worker opens, stores and acknowledges its
records end to end exactly as the backend's own ingest does — its own connection to the same record
store (a record sent twice is stored once whichever worker gets it: `(vin, epoch, seq)` is the
records' key) and its own MQTT client, whose persistent session the broker keeps while the worker
restarts.

The services that book events (provisioning results, measure answers, owner changes, call-centre
cases) run only in the backend's process, so a worker relays each non-telemetry record it stored
there; telemetry, 99 % of the traffic, stays here. With the SQLite file (one host) through a pipe to
its parent, once its batch has committed; with PostgreSQL through the database, in the batch's own
transaction (`PostgresStore.relay`, heard by the backend's `store_postgres_relay.RelayListener`), so
the worker needs no parent and the relay is as durable as the records.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from multiprocessing.connection import Connection

from nacl.public import PrivateKey

from backend_stub.config import BackendConfig
from backend_stub.database_thread import DatabaseThread
from backend_stub.errors import BackendConfigError
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
    """Ingest that relays each newly stored non-telemetry record to the backend's process.

    `relay` is the pipe to it, each record sent once its batch committed; or a function called inside
    the batch's transaction, which delivers only what commits (`PostgresStore.relay`)."""

    def __init__(
        self,
        store: BackendStore,
        private_key: PrivateKey,
        clock: Clock,
        max_payload_bytes: int,
        *,
        relay: Connection | Callable[[ReceivedRecord], None],
    ) -> None:
        super().__init__(store, private_key, clock, max_payload_bytes)
        self._pipe = relay if isinstance(relay, Connection) else None
        self._in_transaction = None if isinstance(relay, Connection) else relay
        self._uncommitted: list[ReceivedRecord] = []
        self.add_observer(self._hold)

    def _hold(self, record: ReceivedRecord) -> None:
        if record.kind is RecordKind.TELEMETRY:
            return
        if self._in_transaction is not None:
            self._in_transaction(record)
        else:
            self._uncommitted.append(record)

    def forget_acks(self) -> None:
        self._uncommitted.clear()  # the batch did not commit: none of it is stored
        super().forget_acks()

    def take_acks(self) -> list[tuple[str, bytes]]:
        if self._pipe is not None:
            for record in self._uncommitted:  # called after the commit: these records stand
                self._pipe.send(record)
        self._uncommitted.clear()
        return super().take_acks()


def build_worker(
    config: BackendConfig, name: str, pipe: Connection | None, *, clock: Clock | None = None
) -> tuple[IngestService, BackendStore, DatabaseThread]:
    """Worker `name`'s ingest service, its store and its database thread (the caller closes both).

    Its records go to the backend through `pipe`, or through PostgreSQL when there is none. Raises
    `BackendConfigError` for a worker without a pipe whose record store is the SQLite file."""
    if pipe is None:
        _require_postgres(config)
    store = open_record_store(config)  # the SQLite file, or PostgreSQL shared across hosts ([store] url)
    relay: Connection | Callable[[ReceivedRecord], None]
    if pipe is not None:
        relay = pipe
    else:
        from backend_stub.store_postgres import PostgresStore  # noqa: PLC0415 - psycopg is an optional extra

        assert isinstance(store, PostgresStore)  # [store] url names it
        relay = store.relay
    ingest = RelayingIngest(
        store, load_private_key(config.private_key), clock or SystemClock(), config.max_payload_bytes, relay=relay
    )
    database = DatabaseThread(f"ingest-{name}-db")
    service = IngestService(
        ingest,
        store,
        config.broker,
        identifier=f"backend-stub-ingest-{name}",  # its persistent session: the same name after a restart
        database=database,
        subscriptions=(shared(RECORDS_WILDCARD, GROUP),),
    )
    return service, store, database


async def serve_worker(config: BackendConfig, name: str, pipe: Connection | None) -> None:
    """Run worker `name` until cancelled."""
    service, store, database = build_worker(config, name, pipe)
    try:
        await service.run()
    finally:
        database.close()  # the batch in progress commits (and is relayed) before the store closes
        store.close()
        if pipe is not None:
            pipe.close()


def run_worker(config: BackendConfig, index: int, pipe: Connection | None, log_level: str) -> None:
    """The child process's entry point (multiprocessing, spawn): runs until SIGTERM. Without a `pipe`
    (the store is PostgreSQL) it relays through the database."""
    configure_logging(log_level)
    _LOGGER.info("ingest worker %d on %s", index, config.broker.url)
    run_service(serve_worker(config, str(index), pipe))


def run_standalone(config: BackendConfig, name: str | None = None) -> None:
    """`backend-stub ingest-worker`: one worker with no backend beside it, relaying through PostgreSQL;
    runs until SIGTERM. `name` (default: this host's) must differ between workers: it is the worker's
    MQTT client identifier. Raises `BackendConfigError` when the record store is not PostgreSQL."""
    _require_postgres(config)  # refused before anything starts
    name = name or socket.gethostname()
    _LOGGER.info("ingest worker %s on %s, record store %s", name, config.broker.url, config.store_url)
    run_service(serve_worker(config, name, None))


def _require_postgres(config: BackendConfig) -> None:
    if config.store_url is None:
        raise BackendConfigError(
            "an ingest worker of its own needs the record store on PostgreSQL ([store] url): the SQLite file "
            "is one host's, and the backend hears of the events a worker stored through PostgreSQL"
        )
