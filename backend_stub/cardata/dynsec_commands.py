"""Mosquitto dynamic-security commands for CarData streaming, sans-I/O: JSON to send, answers to read.

The plugin (`mosquitto_dynamic_security.so`, Mosquitto >= 2.0) takes `{"commands": [...]}` published to
`$CONTROL/dynamic-security/v1` and answers `{"responses": [...]}` on `.../response`, one answer per
command, with our `correlationData` echoed and an `error` member only when the command failed.

A CarData account is one plugin client (username = gcid, password = its newest id_token) holding one
role of its own that allows subscribing to, and receiving from, `<gcid>/#` and nothing else (and denies
receiving anything else, should a broker's default allow it). Checked against Mosquitto 2.0.11:

- `setClientPassword` does not disconnect a client already connected; `disableClient` does
  ("Administrative action"). Issuing a token therefore disables and re-enables the client in the same
  message (the plugin runs one message's commands back to back): the connection made with the previous
  token ends, the newest token wins, as BMW allows one streaming connection per account.
- `addClientRole` for a role the client already holds answers "Internal error", so a role is only ever
  given inside `createClient`, and an existing client (which we created with its role) keeps it.
- "Role already exists", "Client already exists" and, for disabling, "Client not found" mean the broker
  is already where we want it (a backend restarted, a command repeated): they are not failures.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from backend_stub.cardata.errors import CardataError

__all__ = [
    "CONTROL_TOPIC",
    "RESPONSE_TOPIC",
    "DynsecError",
    "DynsecResult",
    "command_message",
    "disable_commands",
    "enable_commands",
    "failures",
    "forget_commands",
    "parse_responses",
    "role_name",
]

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = "$CONTROL/dynamic-security/v1/response"
_MAX_RESPONSE_BYTES = 1 << 20
# A gcid becomes a username, a role name and a topic level: no MQTT wildcard, separator or NUL can pass.
_GCID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOLERATED: Final[dict[str, frozenset[str]]] = {
    "createRole": frozenset({"Role already exists"}),
    "createClient": frozenset({"Client already exists"}),
    "disableClient": frozenset({"Client not found"}),
    "deleteClient": frozenset({"Client not found"}),
    "deleteRole": frozenset({"Role not found"}),
}


class DynsecError(CardataError):
    """The broker's dynamic-security plugin refused a command, answered nonsense, or did not answer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DynsecResult:
    command: str
    correlation: str | None
    error: str | None  # None: done

    @property
    def failed(self) -> bool:
        return self.error is not None and self.error not in _TOLERATED.get(self.command, frozenset())


def role_name(gcid: str) -> str:
    return f"cardata-stream-{_checked(gcid)}"


def _checked(gcid: str) -> str:
    if not _GCID.fullmatch(gcid):
        raise ValueError(f"{gcid[:70]!r} cannot be a streaming username: expected a gcid (a UUID)")
    return gcid


def _role_acls(gcid: str) -> list[dict[str, Any]]:
    own = f"{gcid}/#"
    return [
        {"acltype": "subscribePattern", "topic": own, "priority": 1, "allow": True},
        {"acltype": "publishClientReceive", "topic": own, "priority": 1, "allow": True},
        {"acltype": "publishClientReceive", "topic": "#", "priority": 0, "allow": False},
        {"acltype": "publishClientSend", "topic": "#", "priority": 0, "allow": False},
    ]


def enable_commands(gcid: str, password: str) -> list[dict[str, Any]]:
    """Let `gcid` connect with `password` (its newest id_token), confined to `<gcid>/#`; end older connections."""
    role = role_name(gcid)
    return [
        {"command": "createRole", "rolename": role, "textname": "CarData streaming", "acls": _role_acls(gcid)},
        {"command": "createClient", "username": gcid, "textname": "CarData account", "roles": [{"rolename": role}]},
        {"command": "setClientPassword", "username": gcid, "password": password},
        {"command": "disableClient", "username": gcid},  # kicks a connection made with an older token
        {"command": "enableClient", "username": gcid},
    ]


def disable_commands(gcid: str) -> list[dict[str, Any]]:
    """Refuse `gcid` from now on and end its connection (its token expired, or every consent ended)."""
    return [{"command": "disableClient", "username": _checked(gcid)}]


def forget_commands(gcid: str) -> list[dict[str, Any]]:
    """Remove `gcid`'s client and role from the broker altogether."""
    return [
        {"command": "deleteClient", "username": _checked(gcid)},
        {"command": "deleteRole", "rolename": role_name(gcid)},
    ]


def command_message(commands: list[dict[str, Any]], correlation_prefix: str) -> tuple[bytes, list[str]]:
    """The payload to publish and the correlation id given to each command, in order."""
    correlations = [f"{correlation_prefix}-{index}" for index in range(len(commands))]
    tagged = [{**command, "correlationData": tag} for command, tag in zip(commands, correlations, strict=True)]
    return json.dumps({"commands": tagged}, separators=(",", ":")).encode("utf-8"), correlations


def parse_responses(payload: object) -> list[DynsecResult]:
    """The answers in one response message (any payload); `DynsecError` for anything that is not one."""
    if not isinstance(payload, bytes | bytearray):
        raise DynsecError(f"a dynamic-security response of type {type(payload).__name__}")
    if len(payload) > _MAX_RESPONSE_BYTES:
        raise DynsecError(f"a dynamic-security response of {len(payload)} bytes is not one of ours")
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise DynsecError(f"a dynamic-security response is not JSON: {exc}") from exc
    responses = document.get("responses") if isinstance(document, dict) else None
    if not isinstance(responses, list):
        raise DynsecError("a dynamic-security response has no 'responses' list")
    results = []
    for entry in responses:
        if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
            raise DynsecError("a dynamic-security response entry names no command")
        correlation, error = entry.get("correlationData"), entry.get("error")
        results.append(
            DynsecResult(
                command=entry["command"],
                correlation=correlation if isinstance(correlation, str) else None,
                error=None if error is None else str(error)[:200],
            )
        )
    return results


def failures(results: list[DynsecResult]) -> list[DynsecResult]:
    """The results that leave the broker other than we asked."""
    return [result for result in results if result.failed]
