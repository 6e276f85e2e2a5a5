"""The backend stub's composition root."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from backend_stub.account_service import AccountService
from backend_stub.accounts import AccountStore, OwnerChange, Sealer
from backend_stub.call_centre import CallCentreBehaviour, CallCentreStub
from backend_stub.cardata.http_app import create_app
from backend_stub.cardata.server import CardataServer
from backend_stub.cardata.streaming_credentials import StreamingCredentials
from backend_stub.cardata.wiring import CardataParts, open_cardata, open_streaming
from backend_stub.config import BackendConfig
from backend_stub.database_thread import DatabaseThread
from backend_stub.ingest import Ingest, IngestService
from backend_stub.ingest_worker import GROUP as INGEST_GROUP
from backend_stub.ingest_worker import RECORDS_WILDCARD, STATUS_WILDCARD, shared
from backend_stub.ingest_workers import IngestWorkers
from backend_stub.invoice_store import InvoiceStore
from backend_stub.invoices import CHECK_INTERVAL_S, Billing
from backend_stub.measure_answers import sim_of
from backend_stub.measure_service import MeasureService
from backend_stub.measure_store import MeasureStore
from backend_stub.measures import MeasureScheduler
from backend_stub.periodic import every
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_service import ProvisioningService
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.psap import PsapBehaviour, PsapStub
from backend_stub.psap_ng import PsapNg
from backend_stub.retention import PersonalValues, RetentionJob, SideTables
from backend_stub.store import BackendStore
from backend_stub.store_location import open_record_store
from tcu.backoff import Backoff
from tcu.clock import Clock, SystemClock
from telematics_wire.keys import load_private_key, load_signing_key
from telematics_wire.strict_cbor import describe
from telematics_wire.topics import UP_WILDCARD

_LOGGER = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")
RETENTION_INTERVAL_S = 3600.0  # personal data is due by the millisecond; an hour late is within "nach 4 Wochen"


def _text(value: object) -> str | None:
    # A last value is whatever a vehicle sent; str() of a huge integer would raise.
    return None if value is None else (value if isinstance(value, str) else describe(value)).lower()


def _owner_changed(cardata: CardataParts, credentials: StreamingCredentials, change: OwnerChange) -> None:
    """The seller's consents on the car ended with the link: their streaming login follows at once."""
    gcid = None if change.ended_link is None else cardata.store.known_gcid(change.ended_link.account)
    if gcid is not None:
        credentials.consents_changed(gcid)


class BackendStub:
    def __init__(self, config: BackendConfig, *, clock: Clock | None = None, log_level: str = "info") -> None:
        self.config = config
        self.clock = clock or SystemClock()
        # Without a signing key the backend still delivers files and books results, but cannot sign.
        signing_key = None if config.signing_key is None else load_signing_key(config.signing_key)
        # Every store's connection to the database is used on this one thread while the app runs, so
        # the loop (MQTT links, the PSAP) never waits on a lock or an fsync.
        self.database = DatabaseThread("backend-db")
        self._running = False  # between `run` starting and its stores closing: see `operate`
        self.store = open_record_store(config)  # the SQLite file, or PostgreSQL ([store] url)
        private_key = load_private_key(config.private_key)
        self.ingest = Ingest(self.store, private_key, self.clock, config.max_payload_bytes)
        # Several ingest workers (or, on PostgreSQL, workers on other hosts may join): this process's
        # ingest is one member of the shared subscription of records and keeps the statuses (retained,
        # which a shared subscription never gets).
        several = config.ingest_workers > 1 or config.store_url is not None
        subscriptions = (STATUS_WILDCARD, shared(RECORDS_WILDCARD, INGEST_GROUP)) if several else (UP_WILDCARD,)
        self.service = IngestService(
            self.ingest, self.store, config.broker, database=self.database, subscriptions=subscriptions
        )
        self.workers = (
            IngestWorkers(config, config.ingest_workers, relayed=self.ingest.notify_stored, log_level=log_level)
            if several
            else None
        )
        self.provisioning_store = ProvisioningStore(config.database)
        self.issuer = (
            None
            if signing_key is None
            else ProvisioningIssuer(
                self.provisioning_store,
                signing_key=signing_key,
                clock=self.clock,
                enrolled=lambda vin: self.store.public_key(vin) is not None,
            )
        )
        self.provisioning = ProvisioningService(
            self.provisioning_store, self.store, config.broker, self.clock, issuer=self.issuer, database=self.database
        )
        self.provisioning.attach(self.ingest)
        self.measure_store = MeasureStore(config.database)
        self.measures = (
            None
            if signing_key is None
            else MeasureScheduler(
                self.measure_store,
                signing_key=signing_key,
                clock=self.clock,
                vehicle_mode=lambda vin: _text(self.store.last_value(vin, "Vehicle.Mode")),
                online=self.store.online,
                sim=lambda vin: sim_of(self.provisioning_store.capabilities(vin)),
                backoff=Backoff(base_s=config.measure_retry_base_s, cap_s=config.measure_retry_cap_s),
                attempt_timeout_s=config.measure_attempt_timeout_s,
            )
        )
        self.measure_service = (
            None if self.measures is None else MeasureService(self.measures, config.broker, database=self.database)
        )
        self.psap = (
            None
            if config.psap_port is None
            else PsapStub(
                port=config.psap_port,
                database=config.database,
                behaviour=PsapBehaviour(voice_s=config.psap_voice_s),
                clock=self.clock,  # an MSD's received time on the backend's clock (a bench's virtual time)
            )
        )
        self.psap_ng = (  # the same PSAP's NG eCall side: SIP over UDP (RFC 8147), its MSDs in the same table
            None
            if config.psap_sip_port is None
            else PsapNg(
                port=config.psap_sip_port,
                database=config.database,
                behaviour=PsapBehaviour(voice_s=config.psap_voice_s),
                clock=self.clock,
            )
        )
        if self.measure_service is not None:
            self.measure_service.attach(self.ingest)
        self.call_centre = (  # the intelligent emergency call (6AC): voice line + the cases sent up
            None
            if config.call_centre_port is None
            else CallCentreStub(
                port=config.call_centre_port,
                behaviour=CallCentreBehaviour(
                    answer_delay_s=config.call_centre_answer_delay_s, voice_s=config.call_centre_voice_s
                ),
                clock=self.clock,
            )
        )
        if self.call_centre is not None:
            self.call_centre.attach(self.ingest)
        self.accounts = AccountStore(
            config.database,
            sealer=Sealer(bytes(private_key)),
            signing_key=signing_key,
            enrolled=lambda vin: self.store.public_key(vin) is not None,
        )
        self.retention_tables = SideTables(config.database)  # the PSAP's MSDs, the invoices
        self.retention = RetentionJob(
            self.store,
            self.accounts,
            PersonalValues(self.provisioning_store.catalogue),
            self.clock,
            side=self.retention_tables,
        )
        self.account_service = AccountService(
            self.accounts, self.provisioning_store, self.retention, config.broker, self.clock, database=self.database
        )
        self.account_service.attach(self.ingest)
        # Invoices and the payment default they start (AGB 5.5 c): suspending needs the signing key.
        self.invoice_store = InvoiceStore(config.database)
        self.billing = (
            None
            if self.issuer is None
            else Billing(self.invoice_store, self.provisioning_store, self.issuer, self.clock)
        )
        self.account_service.billing = self.billing  # an owner change hands the seller's invoices over (AGB 7.1)
        # CarData (issue 16): third parties' HTTP API beside ingest, on the same database; its store
        # calls run on the database thread, never on the loop.
        self.cardata: CardataParts | None = None
        self.cardata_server: CardataServer | None = None
        if config.cardata_port is not None:
            self.cardata = open_cardata(
                config, clock=self.clock, records=self.store, provisioning=self.provisioning_store
            )
            cardata_app = create_app(
                self.cardata.service,
                self.cardata.flow,
                max_body_bytes=config.cardata_max_body_bytes,
                run=self.database.run,
                clock=self.clock,
                auto_approve_account=config.cardata_auto_approve_account,
            )
            self.cardata_server = CardataServer(cardata_app, host=config.cardata_host, port=config.cardata_port)
        # CarData streaming and push: each stored record to the consenting clients, on the streaming broker,
        # whose logins (gcid + id_token) follow the tokens and consents.
        self.cardata_streaming = open_streaming(config, clock=self.clock, parts=self.cardata, run=self.database.run)
        if self.cardata_streaming is not None:
            self.cardata_streaming.streamer.attach(self.ingest)
            credentials = self.cardata_streaming.credentials
            if credentials is not None and self.cardata is not None:
                self.account_service.owner_changed = functools.partial(_owner_changed, self.cardata, credentials)
        if self.cardata is not None:
            self.retention.cardata = self.cardata.purge_ended

    async def operate(self, job: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """`job(*args, **kwargs)` with the backend's own stores, for an operator in this process (a
        bench's step, a test booking a service): on the database thread while the app runs, a plain
        call when it does not.

        The stores' connections are shared with that thread: a call from the loop could interleave
        with its transaction (a commit of the other's half-done work, "cannot commit transaction - SQL
        statements in progress"). Handed over, it runs after the work queued before it, alone."""
        if not self._running:
            return job(*args, **kwargs)
        return await self.database.run(job, *args, **kwargs)

    def reader(self) -> BackendStore:
        """A read-only view of the records on a connection of its own, for a test or a bench to poll
        while the backend runs; the caller closes it.

        `self.store` is the backend's own connection, used by its database thread: a read on it from
        another thread could see a batch not yet committed (or one about to be rolled back). A
        connection of its own sees only committed batches (WAL: a reader never blocks the writer)."""
        return open_record_store(self.config, read_only=True)

    def _check_payments(self) -> None:
        if self.billing is not None:
            list(self.billing.check_all())  # the checks run as the generator is consumed: here, on the thread

    async def run(self) -> None:
        self._running = True
        try:
            self.store.claim_services()  # PostgreSQL: refuses a second backend on the same record store
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.service.run(), name="backend-ingest")
                if self.workers is not None:
                    tasks.create_task(self.workers.run(), name="backend-ingest-workers")
                tasks.create_task(self.provisioning.run(), name="backend-provisioning")
                if self.measure_service is not None:
                    tasks.create_task(self.measure_service.run(), name="backend-measures")
                if self.psap is not None:
                    tasks.create_task(self.psap.run(), name="psap")
                if self.psap_ng is not None:
                    tasks.create_task(self.psap_ng.run(), name="psap-ng")
                if self.call_centre is not None:
                    tasks.create_task(self.call_centre.run(), name="call-centre")
                tasks.create_task(self.account_service.run(), name="backend-accounts")
                if self.cardata_server is not None:
                    tasks.create_task(self.cardata_server.run(), name="cardata-http")
                if self.cardata_streaming is not None:
                    tasks.create_task(self.cardata_streaming.run(), name="cardata-streaming")
                retention = every(RETENTION_INTERVAL_S, "retention pass", self.retention.run, self.database)
                tasks.create_task(retention, name="backend-retention")
                if self.billing is not None:
                    payments = every(CHECK_INTERVAL_S, "payment check", self._check_payments, self.database)
                    tasks.create_task(payments, name="backend-billing")
        finally:
            self._running = False  # an operator's call from here on is plain: there is no thread
            # The job in progress finishes (at most a busy timeout) before its connection closes.
            self.database.close()
            self.retention_tables.close()
            self.invoice_store.close()
            if self.cardata is not None:
                self.cardata.close()
            self.accounts.close()
            self.measure_store.close()
            self.provisioning_store.close()
            self.store.close()
