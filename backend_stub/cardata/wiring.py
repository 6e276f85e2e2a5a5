"""CarData's parts on the backend's database, built once for the backend (`BackendStub`) and for the
operator's commands (`backend-stub cardata ...`), so both open them alike.

    parts = open_cardata(config, clock=clock, records=records, provisioning=provisioning)
    ...
    parts.close()

The device-code flow signs id_tokens and keys its token digests with the backend's Ed25519 key, so
CarData needs `[keys] signing_key`; the refusal says so. The account tables must exist first (open the
`AccountStore` before this), as CardataStore's consents hang on account links.

The backend also opens the streaming side when `[cardata.streaming]` names the broker's streaming
listener (with the dynamic-security admin's login):

    streaming = open_streaming(config, clock=clock, parts=parts, run=database.run)
    streaming.streamer.attach(ingest); tasks.create_task(streaming.run())

`StreamingCredentials` hears every token issued and revoked (`flow.listener`) and every consent
granted or revoked through this process (`store.consents_changed`), and starts from the logins the
token store knows; the streamer sends the keys of the client holding the login (`credentials.holder`)
that the capability service calls available now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from backend_stub.cardata.availability import StoreAvailability
from backend_stub.cardata.catalogue import load_cardata_catalogue
from backend_stub.cardata.consents import CardataStore
from backend_stub.cardata.oauth import DeviceFlow
from backend_stub.cardata.server import DEFAULT_HOST
from backend_stub.cardata.service import CardataService
from backend_stub.cardata.streaming import CardataStreamer
from backend_stub.cardata.streaming_credentials import StreamingCredentials
from backend_stub.config import BackendConfig
from backend_stub.errors import BackendConfigError
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from tcu.clock import Clock
from telematics_wire.keys import load_signing_key

ISSUER = "backend-stub"  # the id_token's `iss`
DEVICE_PAGE = "/simulator/device"  # where the owner is told how to approve a user code


@dataclass(frozen=True, slots=True, kw_only=True)
class CardataParts:
    store: CardataStore
    flow: DeviceFlow
    service: CardataService

    def close(self) -> None:
        self.flow.close()
        self.store.close()

    def purge_ended(self) -> int:
        """Retention's part for CarData (`CardataStore.purge_ended`); a deleted account's sign-ins go too."""
        deleted, forgotten = self.store.purge_ended()
        for gcid in forgotten:
            self.flow.forget(gcid)
        return deleted


@dataclass(frozen=True, slots=True, kw_only=True)
class CardataStreaming:
    streamer: CardataStreamer
    credentials: StreamingCredentials | None  # None: no sign-in here ([cardata] port unset), logins kept by hand

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.streamer.run(), name="cardata-streaming")
            if self.credentials is not None:
                tasks.create_task(self.credentials.run(), name="cardata-streaming-logins")


def verification_uri(config: BackendConfig) -> str:
    host = config.cardata_host or DEFAULT_HOST
    shown = f"[{host}]" if ":" in host else host
    port = "" if not config.cardata_port else f":{config.cardata_port}"
    return f"http://{shown}{port}{DEVICE_PAGE}"


def open_cardata(
    config: BackendConfig, *, clock: Clock, records: BackendStore, provisioning: ProvisioningStore
) -> CardataParts:
    if config.signing_key is None:
        raise BackendConfigError(
            "CarData needs [keys] signing_key: its sign-in signs id_tokens with the backend's Ed25519 key"
        )
    catalogue = load_cardata_catalogue()
    store = CardataStore(config.database, catalogue)
    try:
        flow = DeviceFlow(
            config.database,
            clock,
            load_signing_key(config.signing_key),
            directory=store,
            issuer=ISSUER,
            verification_uri=verification_uri(config),
        )
    except BaseException:
        store.close()
        raise
    service = CardataService(store, catalogue, records, provisioning, clock)
    return CardataParts(store=store, flow=flow, service=service)


Verdicts = Callable[[Callable[[], dict[str, bool]]], Awaitable[dict[str, bool]]]


def open_streaming(
    config: BackendConfig, *, clock: Clock, parts: CardataParts | None, run: Verdicts
) -> CardataStreaming | None:
    """The streamer and, with the sign-in in `parts`, the broker logins kept in step; None without
    `[cardata.streaming]`. `run` runs consent reads where `parts.store` is used (the database thread)."""
    broker = config.cardata_streaming
    if broker is None:
        return None
    catalogue = load_cardata_catalogue()
    credentials = None
    if parts is not None:
        store = parts.store
        credentials = StreamingCredentials(
            broker, clock, may_stream=lambda gcid: store.has_consents(gcid, clock.now()), run=run
        )
        parts.flow.listener = credentials
        store.consents_changed = credentials.consents_changed
        credentials.track(parts.flow.streaming_expiries(), holders=parts.flow.streaming_holders())
    streamer = CardataStreamer(
        catalogue,
        config.database,
        broker,
        clock,
        holder=None if credentials is None else credentials.holder,
        availability=StoreAvailability(config, catalogue),
    )
    return CardataStreaming(streamer=streamer, credentials=credentials)
