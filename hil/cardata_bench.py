"""CarData on a pure-software bench (`tcu-hil demo --cardata`): the backend serves BMW's customer API and
the device-code sign-in on a loopback port, approves every third party's sign-in at once for the bench's
owner, and streams through Mosquitto's TLS + dynamic-security listener (`hil.streaming_listener`).

    bench = CardataBench.create(workdir)                  # TLS files, listener and HTTP ports
    broker = MosquittoBroker(workdir / "mosquitto", streaming=bench.listener)
    layout.write_backend_config(bench.configure(layout.backend()))
    ... backend running, agent connected ...
    await pair_owner(backend, layout, vin, bench.owner)  # the real pairing: the code the car shows
    print(bench.describe(layout))

The owner (`OWNER`) is a backend account paired with the demo car the way a customer pairs: the backend
sends a security code into the car, the bench reads it where the car shows it, and pairs. A third party
still needs the operator to register it and the owner's consent (`backend-stub cardata client-add`,
`grant`): the bench approves sign-ins, never consents. The owner's own pages (`cardata:owner`) are never
auto-approved (`backend-stub cardata approve CODE --account OWNER --owner`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path

from backend_stub.app import BackendStub
from backend_stub.config import BackendConfig
from hil.broker import free_port
from hil.layout import BenchLayout
from hil.streaming_listener import DYNSEC_PLUGIN, StreamingListener
from hil.tls_files import make_tls_files
from tcu.broker_config import BrokerConfig
from tcu.errors import ConfigError
from tcu.services.personal import PersonalStore

OWNER = "owner@example.org"  # the bench's owner account: every third-party sign-in is approved for it
PAIR_WAIT_S = 30.0  # the security code reaches the car through the account service's 1 s poll
CODE_WAIT_S = 5.0  # then a new code is asked for


@dataclass(frozen=True, slots=True, kw_only=True)
class CardataBench:
    listener: StreamingListener
    http_port: int
    owner: str = OWNER

    @classmethod
    def create(cls, workdir: Path, *, owner: str = OWNER) -> CardataBench:
        """TLS files in `workdir/tls` and free ports; refused without Mosquitto's dynamic-security plugin."""
        if not DYNSEC_PLUGIN.exists():
            raise ConfigError(
                f"CarData streaming needs Mosquitto's dynamic-security plugin ({DYNSEC_PLUGIN}; Debian's "
                "mosquitto package ships it) and --broker mosquitto"
            )
        listener = StreamingListener(make_tls_files(workdir / "tls"), port=free_port())
        return cls(listener=listener, http_port=free_port(), owner=owner)

    def configure(self, config: BackendConfig) -> BackendConfig:
        """`[cardata]` and `[cardata.streaming]` (the backend logs in as the plugin's admin)."""
        streaming = BrokerConfig(
            host="127.0.0.1",
            port=self.listener.port,
            tls=True,
            username=self.listener.admin_username,
            password=self.listener.admin_password,
            ca_file=self.listener.tls.ca_file,
        )
        return replace(
            config,
            cardata_port=self.http_port,
            cardata_auto_approve_account=self.owner,
            cardata_streaming=streaming,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def describe(self, layout: BenchLayout, vin: str) -> str:
        """What a third party needs, and the operator's commands, for the start of the bench's run."""
        config = layout.backend_config
        return "\n".join(
            (
                f"CarData API {self.url} (OpenAPI {self.url}/docs); sign-ins approved for {self.owner}",
                f"CarData streaming mqtts://127.0.0.1:{self.listener.port} (CA {self.listener.tls.ca_file}); "
                f"topic <gcid>/{vin}",
                f"  register a client: backend-stub cardata client-add NAME --config {config}",
                f"  the owner consents: backend-stub cardata grant {vin} CLIENT_ID VEHICLE_STATUS --config {config}",
            )
        )


async def pair_owner(backend: BackendStub, layout: BenchLayout, vin: str, account: str) -> None:
    """Pair `account` with the car as a customer does: a security code into the car, typed back."""
    accounts, clock = backend.accounts, backend.clock

    def request_code() -> None:
        if accounts.contact(account) is None:
            accounts.create(account, name="Bench owner", email=account, now=clock.now())
        accounts.request_code(vin, account, clock.now())

    personal = PersonalStore(layout.data_dir(vin) / "personal.cbor")  # where the car shows the code
    async with asyncio.timeout(PAIR_WAIT_S):
        while True:
            # Asked again when none came: a code sent before the car subscribed is gone (QoS 1 to a new session).
            await backend.operate(request_code)
            for _ in range(int(CODE_WAIT_S / 0.2)):
                shown = personal.current().security_code
                if shown is not None and shown.account == account:
                    await backend.operate(accounts.pair, vin, account, shown.code, clock.now())
                    return
                await asyncio.sleep(0.2)  # the car writes it in its own task: no event to wait on
