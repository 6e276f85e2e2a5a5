"""CarData's parts on the backend's database, built once for the backend (`BackendStub`) and for the
operator's commands (`backend-stub cardata ...`), so both open them alike.

    parts = open_cardata(config, clock=clock, records=records, provisioning=provisioning)
    ...
    parts.close()

The device-code flow signs id_tokens and keys its token digests with the backend's Ed25519 key, so
CarData needs `[keys] signing_key`; the refusal says so. The account tables must exist first (open the
`AccountStore` before this), as CardataStore's consents hang on account links.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend_stub.cardata.catalogue import load_cardata_catalogue
from backend_stub.cardata.consents import CardataStore
from backend_stub.cardata.oauth import DeviceFlow
from backend_stub.cardata.server import DEFAULT_HOST
from backend_stub.cardata.service import CardataService
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
