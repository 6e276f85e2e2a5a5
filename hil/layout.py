"""A bench folder: backend and vehicle keys, `backend.toml`, one `agent-<VIN>.toml` per vehicle.

The demo, the scenarios, the tests and the benchmarks all lay out a bench the same way, with the
same files a person would write by hand for a real bench (see README), so what they test is what
users run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import TypedDict, Unpack

from backend_stub.config import BackendConfig
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from hil.config_toml import TomlValue, changed_fields, config_table, toml_lines, toml_table
from tcu.broker_config import BrokerConfig, MqttProtocol, parse_broker_url
from tcu.clock import SystemClock
from tcu.config import KeysConfig, QueueConfig, SimulationConfig, TelemetryConfig, UplinkConfig
from telematics_wire.keys import load_public_key, write_box_keypair, write_signing_keypair

DEMO_VIN = "WMWZZZ3CZ2E123456"
# An agent without legal eCall and without a modem (an absent [ecall] would be presumed legal eCall,
# and the agent would refuse to start).
NO_ECALL: Mapping[str, TomlValue] = {"legal_ecall": False}


def vin_for(index: int) -> str:
    """Deterministic distinct VINs for fleets: WTCZZZ + 11 digits (no I, O or Q, as ISO 3779 wants)."""
    return f"WTCZZZ{index:011d}"


class AgentSettings(TypedDict, total=False):
    """The keywords of an agent config a bench writes (`BenchLayout.agent_toml`)."""

    simulation: bool
    telemetry_interval_s: float
    extra: str
    username: str | None
    password: str | None
    keepalive_s: int | None
    ecall: Mapping[str, TomlValue] | str
    uplink: UplinkConfig | None
    queue: QueueConfig | None
    sources: Mapping[str, Mapping[str, TomlValue]]


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchLayout:
    root: Path
    broker_url: str
    protocol: MqttProtocol = "5"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def backend_config(self) -> Path:
        return self.root / "backend.toml"

    def agent_config(self, vin: str) -> Path:
        return self.root / f"agent-{vin}.toml"

    def data_dir(self, vin: str) -> Path:
        return self.root / "vehicles" / vin

    def create_backend(
        self, *, username: str | None = None, password: str | None = None, keepalive_s: int | None = None
    ) -> None:
        """The backend's keys, and its config `backend_config()` (`write_backend_config` rewrites it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_box_keypair(self.keys, "backend")
        write_signing_keypair(self.keys, "backend")
        self.write_backend_config(self.backend(username=username, password=password, keepalive_s=keepalive_s))

    def broker(
        self, *, username: str | None = None, password: str | None = None, keepalive_s: int | None = None
    ) -> BrokerConfig:
        """The bench's broker as a client of it sees it."""
        host, port, tls = parse_broker_url(self.broker_url)
        broker = BrokerConfig(host=host, port=port, tls=tls, protocol=self.protocol)
        if username is not None:
            broker = replace(broker, username=username, password=password or "")
        return broker if keepalive_s is None else replace(broker, keepalive_s=keepalive_s)

    def backend(
        self, *, username: str | None = None, password: str | None = None, keepalive_s: int | None = None
    ) -> BackendConfig:
        """The bench's backend config: its database and keys in the bench folder, no PSAP stub; change it
        with `dataclasses.replace` and `write_backend_config`."""
        return BackendConfig(
            database=Path("backend.sqlite3"),
            private_key=Path("keys/backend.x25519.key"),
            signing_key=Path("keys/backend.ed25519.key"),
            broker=self.broker(username=username, password=password, keepalive_s=keepalive_s),
        )

    def write_backend_config(self, config: BackendConfig, *, more: Mapping[str, Mapping[str, TomlValue]] = {}) -> None:
        """`backend.toml` from `config`; `more`: keys of other tables, as a scenario passes them on (the
        backend checks them when it loads the file)."""
        self.backend_config.write_text(backend_toml(config, broker_url=self.broker_url, more=more))
        self.backend_config.chmod(0o600)  # it may hold the broker password: refused if others can read it

    def add_vehicle(self, vin: str, **settings: Unpack[AgentSettings]) -> Path:
        """Create the vehicle's keys and config (`write_agent_config`) and enrol it with the backend;
        returns the config path."""
        return self.add_vehicles([vin], **settings)[0]

    def add_vehicles(self, vins: Iterable[str], **settings: Unpack[AgentSettings]) -> list[Path]:
        """`add_vehicle` for many vehicles with the same settings, enrolled in one transaction: opening
        the store and committing per vehicle took ~40 ms each (a 5,000-vehicle fleet: minutes)."""
        vins = list(vins)
        public_keys = {vin: bytes(load_public_key(write_box_keypair(self.keys, vin)[1])) for vin in vins}
        store = BackendStore(self.root / "backend.sqlite3")
        try:
            with store.transaction():
                now = SystemClock().now()
                for vin, public_key in public_keys.items():
                    store.enroll(vin, public_key, now)
        finally:
            store.close()
        return [self.write_agent_config(vin, **settings) for vin in vins]

    def set_legal_ecall(self, vin: str, legal: bool, *, first_registration: date | None = None) -> None:
        """Tell the backend whether the vehicle is equipped with legal eCall (as `enroll --legal-ecall`)
        and when it was first registered (default: today, a new car)."""
        store = ProvisioningStore(self.root / "backend.sqlite3")
        try:
            store.set_legal_ecall(vin, legal)
            store.record_build(vin, today=first_registration or SystemClock().now().date())
        finally:
            store.close()

    def write_agent_config(self, vin: str, *, name: str | None = None, **settings: Unpack[AgentSettings]) -> Path:
        """(Re)write a config for an enrolled vehicle; `name` gives a second config of the same car."""
        config = self.root / name if name is not None else self.agent_config(vin)
        config.write_text(self.agent_toml(vin, **settings))
        config.chmod(0o600)  # it may hold the broker password: refused if others can read it
        return config

    def agent_toml(
        self,
        vin: str,
        *,
        simulation: bool = True,
        telemetry_interval_s: float = 1.0,
        extra: str = "",
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int | None = None,
        ecall: Mapping[str, TomlValue] | str = NO_ECALL,
        uplink: UplinkConfig | None = None,
        queue: QueueConfig | None = None,
        sources: Mapping[str, Mapping[str, TomlValue]] = {},
    ) -> str:
        """An agent config of this bench (the keywords are `AgentSettings`).

        `ecall`: the `[ecall]` table's keys (by default a vehicle without legal eCall and without a
        modem), or TOML text of your own (with `[[ecall.trigger]]` rules, say). `uplink`, `queue`: those
        tables, from their config dataclasses; `sources`: `[sources.<name>]` tables; `extra`: more TOML
        text, appended as it is.
        """
        keys = KeysConfig(
            vehicle_private_key=Path(f"keys/{vin}.x25519.key"),
            backend_public_key=Path("keys/backend.x25519.pub"),
            backend_verify_key=Path("keys/backend.ed25519.pub"),
        )
        tables = [
            toml_lines({"vin": vin, "data_dir": f"vehicles/{vin}"}, where="agent"),
            config_table("keys", keys),
            broker_table(self.broker_url, self.broker(username=username, password=password, keepalive_s=keepalive_s)),
            config_table("telemetry", TelemetryConfig(interval_s=telemetry_interval_s), always=("interval_s",)),
            config_table("simulation", SimulationConfig(enabled=simulation), always=("enabled",)),
            ecall if isinstance(ecall, str) else toml_table("ecall", ecall),
            *(() if uplink is None else (config_table("uplink", uplink),)),
            *(() if queue is None else (config_table("queue", queue),)),
            *(toml_table(f"sources.{source}", table) for source, table in sources.items()),
        ]
        return "\n".join(tables) + extra


def broker_table(url: str, broker: BrokerConfig, *, table: str = "broker") -> str:
    """`[broker]` (or another broker's table): the URL as given (it says host, port and TLS), then what
    differs from the defaults."""
    fields = changed_fields(broker, always=("protocol",))
    for implied in ("host", "port", "tls"):
        fields.pop(implied, None)
    return toml_table(table, {"url": url} | fields)


# BackendConfig's fields by table and key, as backend_stub.config reads them.
_BACKEND_TABLES: dict[str, dict[str, str]] = {
    "": {"database": "database"},
    "keys": {"private_key": "private_key", "signing_key": "signing_key"},
    "ingest": {"max_payload_bytes": "max_payload_bytes", "workers": "ingest_workers"},
    "measures": {
        "retry_base_s": "measure_retry_base_s",
        "retry_cap_s": "measure_retry_cap_s",
        "attempt_timeout_s": "measure_attempt_timeout_s",
    },
    "psap": {"port": "psap_port", "voice_s": "psap_voice_s", "sip_port": "psap_sip_port"},
    "call_centre": {
        "port": "call_centre_port",
        "answer_delay_s": "call_centre_answer_delay_s",
        "voice_s": "call_centre_voice_s",
    },
    "cardata": {
        "port": "cardata_port",
        "host": "cardata_host",
        "auto_approve_account": "cardata_auto_approve_account",
        "max_body_bytes": "cardata_max_body_bytes",
    },
}


def backend_toml(config: BackendConfig, *, broker_url: str, more: Mapping[str, Mapping[str, TomlValue]] = {}) -> str:
    """A `backend.toml` of `config` (whose broker is at `broker_url`): the database, the keys, each table
    with a field that differs from its default (and the keys of `more`), the broker last."""
    changed = changed_fields(config, always=("database", "private_key", "signing_key"))
    parts = []
    for table, keys in _BACKEND_TABLES.items():
        values: dict[str, TomlValue | None] = {key: changed.get(field) for key, field in keys.items()}
        values |= more.get(table, {})
        if table == "":
            parts.append(toml_lines(values, where="backend"))
        elif any(value is not None for value in values.values()):
            parts.append(toml_table(table, values))
    streaming = config.cardata_streaming  # CarData's streaming listener, the backend as its plugin's admin
    if streaming is not None:
        url = f"{'mqtts' if streaming.tls else 'mqtt'}://{streaming.host}:{streaming.port}"
        parts.append(broker_table(url, streaming, table="cardata.streaming"))
    # Last: a bench appends keys of its own to [broker] (a CA file, say).
    parts.append(broker_table(broker_url, config.broker))
    return "\n".join(parts)
