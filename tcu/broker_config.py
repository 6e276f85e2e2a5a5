"""How to reach the MQTT broker: the `[broker]` table both the agent and the backend read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from tcu.errors import ConfigError
from tcu.toml_config import TomlSection
from telematics_wire.private_files import refuse_exposed

MqttProtocol = Literal["5", "3.1.1"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: MqttProtocol = "5"
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str, *, where: str = "broker.url") -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} is not a broker URL; expected mqtt://host:port or mqtts://host:port")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigError(f"{where}: {url!r} has an invalid port") from exc
    return parts.hostname, port, tls


def parse_broker(section: TomlSection, env: Mapping[str, str]) -> BrokerConfig:
    url = section.text("url", "mqtt://127.0.0.1:1883")
    url = env.get("TCU_BROKER_URL") or url
    host, port, tls = parse_broker_url(url)
    config = BrokerConfig(
        host=host,
        port=port,
        tls=tls,
        username=section.text("username"),
        password=section.text("password"),
        ca_file=section.path("ca_file"),
        cert_file=section.path("cert_file"),
        key_file=section.path("key_file"),
        protocol=section.choice("protocol", ("5", "3.1.1"), "5"),
        keepalive_s=section.integer("keepalive_s", 30),
        session_expiry_s=section.integer("session_expiry_s", 7 * 24 * 3600),
    )
    section.reject_unknown()
    return config


def refuse_exposed_password(path: Path, broker: BrokerConfig) -> None:
    """A config file holding the broker password is a secret, like a key file: owner-only, or refused."""
    if broker.password is None:
        return
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    refuse_exposed(path, info, "the [broker] password in", ConfigError)
