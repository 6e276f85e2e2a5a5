"""The CarData streaming listener of a bench's Mosquitto: TLS, and clients from the dynamic-security plugin.

Third parties connect here as BMW's streaming clients do: username = gcid, password = the id_token, over
TLS. Who may connect and what each may subscribe to is kept by Mosquitto's dynamic-security plugin
(`mosquitto_dynamic_security.so`): the backend adds and removes clients and roles at run time by
publishing to `$CONTROL/dynamic-security/v1`, without a reload (`backend_stub.cardata.streaming_credentials`
gives each gcid a role subscribing to `<gcid>/#` only; the 2.0 plugin has no `%u` in topic patterns,
so the role is per gcid). An auth plugin of our own would need a C build or a Python-in-Mosquitto shim;
the dynamic-security plugin ships with Mosquitto and is what users run.

The plugin is loaded on this listener only (`per_listener_settings true`): the vehicle and backend
listeners keep their own password files (or anonymous access) unchanged. It accepts MQTT 5 and MQTT
3.1.1 alike (BMW's own documents ask for 5; its broker is reported to speak 3.1.1 with QoS 0), and
delivers with QoS 0. The plugin's file starts with one client, the backend's (`admin_username`): it
manages the plugin and publishes the streams (`+/+`); everyone else is denied by default.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hil.broker import TlsFiles

DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
_ITERATIONS = 101  # what `mosquitto_ctrl dynsec` writes; the plugin reads it from the file
ADMIN_ROLE = "cardata-backend"


@dataclass(frozen=True, slots=True)
class StreamingListener:
    """Where and how the streaming listener runs; `port` is picked free unless given."""

    tls: TlsFiles
    port: int
    admin_username: str = "cardata-backend"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    plugin: Path = DYNSEC_PLUGIN

    def config_lines(self, workdir: Path) -> list[str]:
        """The listener's lines of mosquitto.conf (after `per_listener_settings true`)."""
        state = workdir / "dynamic-security.json"
        if not state.exists():  # the plugin keeps its clients there: a restart must not forget them
            state.write_text(json.dumps(dynsec_state(self.admin_username, self.admin_password), indent=1))
            state.chmod(0o600)
        return [
            f"listener {self.port} 127.0.0.1",
            f"cafile {self.tls.ca_file}",
            f"certfile {self.tls.cert_file}",
            f"keyfile {self.tls.key_file}",
            f"plugin {self.plugin}",
            f"plugin_opt_config_file {state}",
        ]


def dynsec_state(admin_username: str, admin_password: str) -> dict[str, Any]:
    """The plugin's starting file: the backend's client and role, every other client denied."""
    allow = [
        ("publishClientSend", CONTROL_TOPIC),
        ("publishClientReceive", "$CONTROL/dynamic-security/#"),
        ("subscribePattern", "$CONTROL/dynamic-security/#"),
        ("publishClientSend", "+/+"),  # the streams: <gcid>/<vin>
    ]
    return {
        "clients": [
            {**hashed_password(admin_password), "username": admin_username, "roles": [{"rolename": ADMIN_ROLE}]}
        ],
        "roles": [
            {
                "rolename": ADMIN_ROLE,
                "acls": [{"acltype": kind, "topic": topic, "allow": True} for kind, topic in allow],
            }
        ],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


def hashed_password(password: str) -> dict[str, Any]:
    """A password as the plugin stores it: PBKDF2-SHA512 over a random salt."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _ITERATIONS,
    }
