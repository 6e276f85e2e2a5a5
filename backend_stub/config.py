"""The backend stub's configuration: one TOML file, the same broker section as the agent's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backend_stub.errors import BackendConfigError
from backend_stub.store_url import PostgresUrl
from tcu.broker_config import BrokerConfig, parse_broker, refuse_exposed_password
from tcu.errors import ConfigError
from tcu.toml_config import REQUIRED, TomlSection, load_toml
from telematics_wire.private_files import refuse_exposed


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConfig:
    database: Path  # the SQLite file: the records too, unless `store_url` names PostgreSQL
    private_key: Path  # X25519: opens vehicle envelopes, seals acks
    signing_key: Path | None  # Ed25519: signs provisioning files and measure orders
    broker: BrokerConfig
    max_payload_bytes: int = 64 * 1024
    ingest_workers: int = 1  # ingest processes on a shared subscription (backend_stub.ingest_workers)
    measure_retry_base_s: float = 30.0  # backoff after a failed remote-measure attempt ...
    measure_retry_cap_s: float = 900.0  # ... capped here (the cause going away retries at once)
    measure_attempt_timeout_s: float = 900.0  # no answer by then: the attempt counts as lost
    psap_port: int | None = None  # the simulated 112 network's PSAP on 127.0.0.1; None: no PSAP stub
    psap_voice_s: float | None = None  # the operator clears down after this long; None: never (T2 does)
    psap_sip_port: int | None = None  # the NG eCall PSAP's SIP (UDP) port on 127.0.0.1; None: no NG PSAP
    call_centre_port: int | None = None  # the intelligent emergency call's call centre on 127.0.0.1; None: none
    call_centre_answer_delay_s: float = 0.0  # ringing before an agent picks up
    call_centre_voice_s: float | None = None  # the agent clears down after this long; None: the vehicle ends it
    store_url: PostgresUrl | None = None  # [store] url: the record store in PostgreSQL (store_location.py)
    cardata_port: int | None = None  # [cardata] port: the CarData HTTP API (0: any free port); None: not served
    cardata_host: str = "127.0.0.1"  # loopback unless the config says otherwise: it hands out vehicle data
    cardata_auto_approve_account: str | None = None  # a bench's owner: device codes approved at once, no person
    cardata_max_body_bytes: int = 64 * 1024  # a larger request body is refused before it is parsed
    # [cardata.streaming]: the TLS + dynamic-security listener the streams go out on; None: no streaming
    cardata_streaming: BrokerConfig | None = None


def load_backend_config(path: Path, env: Mapping[str, str] | None = None) -> BackendConfig:
    env = os.environ if env is None else env
    try:
        root = TomlSection(load_toml(path), "", path.resolve().parent)
        keys = root.table("keys")
        ingest = root.table("ingest")
        measures = root.table("measures")
        psap = root.table("psap")
        call_centre = root.table("call_centre")
        store = root.table("store")
        url = store.text("url")
        cardata = root.table("cardata")
        config = BackendConfig(
            database=root.path("database", REQUIRED),
            private_key=keys.path("private_key", REQUIRED),
            signing_key=keys.path("signing_key"),
            broker=parse_broker(root.table("broker"), env),
            max_payload_bytes=ingest.integer("max_payload_bytes", 64 * 1024),
            ingest_workers=ingest.integer("workers", 1),
            measure_retry_base_s=measures.number("retry_base_s", 30.0),
            measure_retry_cap_s=measures.number("retry_cap_s", 900.0),
            measure_attempt_timeout_s=measures.number("attempt_timeout_s", 900.0),
            psap_port=psap.integer("port"),
            psap_voice_s=psap.number("voice_s"),
            psap_sip_port=psap.integer("sip_port"),
            call_centre_port=call_centre.integer("port"),
            call_centre_answer_delay_s=call_centre.number("answer_delay_s", 0.0),
            call_centre_voice_s=call_centre.number("voice_s"),
            store_url=None if url is None else PostgresUrl(url),
            cardata_port=cardata.integer("port"),
            cardata_host=cardata.text("host", "127.0.0.1"),
            cardata_auto_approve_account=cardata.text("auto_approve_account"),
            cardata_max_body_bytes=cardata.integer("max_body_bytes", 64 * 1024),
            cardata_streaming=parse_broker(cardata.table("streaming"), {}) if "streaming" in cardata.raw() else None,
        )
        for section in (keys, ingest, measures, psap, call_centre, store, cardata, root):
            section.reject_unknown()
        refuse_exposed_password(path, config.broker)
        if config.cardata_streaming is not None:
            refuse_exposed_password(path, config.cardata_streaming)
        if config.store_url is not None and config.store_url.has_password:
            refuse_exposed(path, path.stat(), "the [store] url password in", ConfigError)
    except ConfigError as exc:
        raise BackendConfigError(str(exc)) from exc
    if config.ingest_workers < 1:
        raise BackendConfigError(f"{path}: ingest.workers must be at least 1, got {config.ingest_workers}")
    if config.cardata_port is not None and not 0 <= config.cardata_port <= 65535:
        raise BackendConfigError(f"{path}: cardata.port must be 0..65535, got {config.cardata_port}")
    if config.cardata_max_body_bytes < 1:
        got = config.cardata_max_body_bytes
        raise BackendConfigError(f"{path}: cardata.max_body_bytes must be at least 1, got {got}")
    return config
