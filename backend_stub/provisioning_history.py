"""What the provisioning history holds: each issued file with its delivery state, each result a
vehicle sent, each vehicle's newest capability report (backend_stub.provisioning_store keeps them).

A file's states:

    pending ──published, PUBACK──► delivered ──vehicle's provisioning_result──► applied | rejected
       └─► superseded: a newer version was issued before this one was published,
           or (from delivered) a newer version was applied
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from telematics_wire.provisioning import ProvisioningFile


class FileState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    APPLIED = "applied"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


UNRESOLVED = frozenset({FileState.PENDING, FileState.DELIVERED})


class ResultStatus(StrEnum):
    """What the vehicle answered (inbound: anything unforeseen is UNKNOWN and only logged)."""

    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> ResultStatus:
        return cls.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedFile:
    vin: str
    version: int
    operation: str  # what a person asked for, e.g. "book 6AE unlimited from 2026-11-23"
    issued: datetime
    expires: datetime
    contents: ProvisioningFile  # what the signed payload says
    signed: bytes  # the COSE_Sign1 message exactly as published
    state: FileState
    changed: datetime
    code: str | None = None
    reason: str | None = None
    publications: int = 0
    published: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleResult:
    """One `provisioning_result` event as the vehicle sent it, and the file it was booked against."""

    vin: str
    seq: int
    created: datetime
    received: datetime
    version: int | None
    status: ResultStatus
    epoch: bytes = b""  # the vehicle's queue epoch: (epoch, seq) names the event
    code: str | None = None
    reason: str | None = None
    attributed: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CapabilityReport:
    vin: str
    seq: int
    created: datetime
    received: datetime
    report: dict[str, Any]  # the event body, as the vehicle sent it
    ordinal: int = 0  # of its queue epoch: within one epoch the higher seq is newer, across epochs the later received
