"""The agent's configuration: one TOML file read once into frozen dataclasses.

Relative paths in the file are resolved against the file's own directory, so a bench folder holding
`agent.toml` and `keys/` can be moved as a whole. `TCU_BROKER_URL` overrides `[broker] url`, the one
thing CI and the HIL runner change per run.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from tcu.broker_config import BrokerConfig, parse_broker, refuse_exposed_password
from tcu.ecall.config import EcallConfig, load_ecall_config
from tcu.errors import ConfigError
from tcu.toml_config import REQUIRED, TomlSection, load_toml
from telematics_wire.catalogue import Brand, Catalogue, VehicleFit
from telematics_wire.errors import VinError
from telematics_wire.vin import validate_vin

SyncMode = Literal["full", "normal"]

# The shipped catalogue (two TOML files, ~130 ms to parse) is read once per process, not per config or
# agent: a fleet process loads thousands of configs. It is immutable; an agent takes its `for_vehicle` copy.
shipped_catalogue = functools.cache(Catalogue.load)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysConfig:
    vehicle_private_key: Path
    backend_public_key: Path
    backend_verify_key: Path | None = None  # Ed25519, for signed backend → vehicle messages


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    max_records: int = 100_000  # beyond this, oldest telemetry is dropped; events never are
    max_bytes: int = 256 * 1024 * 1024  # hard cap of the database file, like a full disk
    synchronous: SyncMode = "full"  # "full" survives power cuts; "normal" only process crashes

    def __post_init__(self) -> None:
        if self.max_records < 1:
            raise ConfigError("queue.max_records: must be at least 1")
        if self.max_bytes < 64 * 1024:
            raise ConfigError("queue.max_bytes: must be at least 65536")


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkConfig:
    inflight_window: int = 500  # records published but not yet acknowledged by the backend
    ack_timeout_s: float = 30.0  # resend a record the backend has not acknowledged by then
    reconnect_base_s: float = 0.5
    reconnect_cap_s: float = 60.0
    max_payload_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryConfig:
    interval_s: float = 5.0
    # true on a production car: a category is sent only while a running service needs it; false on a
    # bench without provisioning. The SIM gates collection either way (tcu.telemetry.data_policy).
    require_services: bool = False

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ConfigError("telemetry.interval_s: must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleConfig:
    services_tick_s: float = 60.0  # how often service terms are re-checked
    status_interval_s: float = 1.0  # how often status.json is rewritten; 0 turns it off
    # What the vehicle is, for checking provisioning files against the catalogue of the terms: its brand;
    # the option codes it is built with (None, the default: not stated, every option code of the brand,
    # so that configs written before issue 12 keep working); its first registration (None: taken from the
    # files; set, a file naming another one is refused).
    fit: VehicleFit = field(default_factory=VehicleFit)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    enabled: bool = False
    update_interval_s: float = 0.5
    speedup: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    vin: str
    data_dir: Path
    keys: KeysConfig
    vehicle: VehicleConfig = field(default_factory=VehicleConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    # None only for a vehicle that says `legal_ecall = false` and has no modem (tcu.ecall.config).
    ecall: EcallConfig | None = None
    # Device sections ([sources.*]) are read by the sources themselves; kept raw here.
    sources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The config file's folder: relative paths the sources read (a DBC, a mapping) resolve against it.
    config_dir: Path | None = None

    @property
    def legal_ecall(self) -> bool:
        """Equipped with the EU 112 eCall: nothing may switch it or its SIM off."""
        return self.ecall is not None and self.ecall.legal_ecall

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def provisioning_path(self) -> Path:
        return self.data_dir / "provisioning.cose"

    @property
    def personal_path(self) -> Path:
        return self.data_dir / "personal.cbor"

    @property
    def ecu_config_path(self) -> Path:
        return self.data_dir / "ecu_config.cbor"

    @property
    def status_path(self) -> Path:
        return self.data_dir / "status.json"

    @property
    def measure_journal_path(self) -> Path:
        return self.data_dir / "measures.cbor"


def parse_vehicle_fit(section: TomlSection) -> VehicleFit:
    """`[vehicle] brand`, `equipment` (option codes) and `first_registration`, checked against the catalogue."""
    brand = Brand(section.choice("brand", tuple(b.value for b in Brand), Brand.BMW.value))
    codes = section._get("equipment", (list,), 'an array of option codes, e.g. ["6AE", "6AC"]', None)
    equipment = None
    if codes is not None:
        if not all(isinstance(code, str) for code in codes):
            raise ConfigError(f"vehicle.equipment: got {codes!r}; expected an array of option codes (strings)")
        equipment = frozenset(codes)
        try:
            shipped_catalogue().check_equipment(equipment, brand)
        except ValueError as exc:
            raise ConfigError(f"vehicle.equipment: {exc}") from exc
    registered = section._get("first_registration", (date, str), "a date, e.g. 2026-11-23", None)
    if isinstance(registered, str):
        try:
            registered = date.fromisoformat(registered)
        except ValueError as exc:
            raise ConfigError(f"vehicle.first_registration: {registered!r} is not a YYYY-MM-DD date") from exc
    elif registered is not None and type(registered) is not date:  # a TOML date-time is not a day
        raise ConfigError(f"vehicle.first_registration: got {registered!r}; expected a date, e.g. 2026-11-23")
    return VehicleFit(brand=brand, equipment=equipment, first_registration=registered)


def load_agent_config(path: Path, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate an agent config file; raises ConfigError naming the offending key."""
    env = os.environ if env is None else env
    root = TomlSection(load_toml(path), "", path.resolve().parent)
    keys = root.table("keys")
    queue = root.table("queue")
    uplink = root.table("uplink")
    telemetry = root.table("telemetry")
    simulation = root.table("simulation")
    vehicle = root.table("vehicle")
    sources = root.table("sources")
    ecall = root.table("ecall")
    try:
        vin = validate_vin(root.text("vin", REQUIRED))
    except VinError as exc:
        raise ConfigError(str(exc)) from exc
    config = AgentConfig(
        vin=vin,
        # An absent [ecall] is presumed legal eCall, and then refused for want of a modem port.
        ecall=load_ecall_config(ecall.raw() if "ecall" in root.raw() else None, vin=vin),
        data_dir=root.path("data_dir", REQUIRED),
        keys=KeysConfig(
            vehicle_private_key=keys.path("vehicle_private_key", REQUIRED),
            backend_public_key=keys.path("backend_public_key", REQUIRED),
            backend_verify_key=keys.path("backend_verify_key"),
        ),
        vehicle=VehicleConfig(
            services_tick_s=vehicle.number("services_tick_s", 60.0),
            status_interval_s=vehicle.number("status_interval_s", 1.0),
            fit=parse_vehicle_fit(vehicle),
        ),
        broker=parse_broker(root.table("broker"), env),
        queue=QueueConfig(
            max_records=queue.integer("max_records", 100_000),
            max_bytes=queue.integer("max_bytes", 256 * 1024 * 1024),
            synchronous=queue.choice("synchronous", ("full", "normal"), "full"),
        ),
        uplink=UplinkConfig(
            inflight_window=uplink.integer("inflight_window", 500),
            ack_timeout_s=uplink.number("ack_timeout_s", 30.0),
            reconnect_base_s=uplink.number("reconnect_base_s", 0.5),
            reconnect_cap_s=uplink.number("reconnect_cap_s", 60.0),
            max_payload_bytes=uplink.integer("max_payload_bytes", 64 * 1024),
        ),
        telemetry=TelemetryConfig(
            interval_s=telemetry.number("interval_s", 5.0),
            require_services=telemetry.flag("require_services", False),
        ),
        simulation=SimulationConfig(
            enabled=simulation.flag("enabled", False),
            update_interval_s=simulation.number("update_interval_s", 0.5),
            speedup=simulation.number("speedup", 1.0),
        ),
        sources=dict(sources._data),
        config_dir=path.resolve().parent,
    )
    for section in (keys, queue, uplink, telemetry, simulation, vehicle):
        section.reject_unknown()
    root.reject_unknown()
    refuse_exposed_password(path, config.broker)
    return config
