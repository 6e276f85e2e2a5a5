"""CarData's value types (a client, a container, a transfer) and the checks of what a caller names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from backend_stub.cardata.errors import BadRequest, quoted

__all__ = [
    "CHANNELS",
    "MAX_CLIENT_NAME_CHARS",
    "MAX_CONTAINERS",
    "MAX_CONTAINER_NAME_CHARS",
    "MAX_PURPOSE_CHARS",
    "Channel",
    "Client",
    "Container",
    "Transfer",
    "VehicleMapping",
    "check_text",
    "check_uuid",
]

Channel = Literal["rest", "stream", "push"]
CHANNELS: frozenset[str] = frozenset({"rest", "stream", "push"})
MAX_CLIENT_NAME_CHARS = 64
MAX_CONTAINER_NAME_CHARS = 64
MAX_PURPOSE_CHARS = 256
MAX_CONTAINERS = 10  # per account and client: a client needs a few, never thousands


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    """A third party registered with the backend: an OAuth client_id (UUID) and its name."""

    client_id: str
    name: str
    created: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """The set of keys a client asked for on behalf of an account (BMW's container)."""

    container_id: str
    gcid: str
    client_id: str
    name: str
    purpose: str
    keys: frozenset[str]
    created: datetime
    deleted: datetime | None = None

    @property
    def state(self) -> str:
        return "ACTIVE" if self.deleted is None else "DELETED"


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleMapping:
    """One of a customer's vehicles (BMW's VehicleMappingDto): the owner is always the primary user."""

    vin: str
    mapped_since: datetime
    mapping_type: str = "PRIMARY"


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """One transfer of data to a client: the transaction report's line."""

    gcid: str
    client_id: str
    vin: str
    channel: str
    keys: frozenset[str]
    at: datetime


def check_text(value: object, *, what: str, limit: int) -> str:
    """A name or purpose: 1..`limit` printable characters, trimmed."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be text, got {type(value).__name__}")
    text = value.strip()
    if not 0 < len(text) <= limit or not text.isprintable():
        raise BadRequest(f"{what} {quoted(value)} must be 1..{limit} printable characters")
    return text


def check_uuid(value: object, *, what: str) -> str:
    """A client_id or gcid as issued: a UUID in its canonical text."""
    if not isinstance(value, str) or len(value) != 36:
        raise BadRequest(f"{what} {quoted(value)} is not a UUID")
    try:
        canonical = str(uuid.UUID(value))
    except ValueError as exc:
        raise BadRequest(f"{what} {quoted(value)} is not a UUID") from exc
    if canonical != value.lower():
        raise BadRequest(f"{what} {quoted(value)} is not a UUID")
    return canonical
