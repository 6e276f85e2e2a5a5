"""Remote-measure orders: signed by the backend like provisioning files (COSE_Sign1, Ed25519).

Payload, a CBOR map:

    {"type": "measure", "vin": str, "measure_id": str, "attempt": uint >= 1,
     "category": "fault_fix" | "compliance" | "security",
     "allowed_states": ["parked", "living", "driving"],      # vehicle states it may run in
     "changes": {key: value, ...},                           # ECU configuration keys
     "impairs": ["6AP", ...],                                # services unavailable while it runs
     "issued": ms, "deadline": ms, "step_s": float}          # step_s: simulated time per change

The vehicle refuses an order that is forged, for another VIN, past its deadline, a replay (an
attempt number not above the last one seen for that measure), or that would change a key outside
the `normal` class (operating safety, eCall, personal settings) or an unknown key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import cbor2
from nacl.signing import SigningKey, VerifyKey

from tcu.errors import RejectedMessageError
from tcu.services.cose import sign1, verify1
from tcu.services.ecu_config import ConfigValue, KeyClass, KeySpec
from tcu.uplink.records import from_millis, to_millis
from tcu.vehicle.drive_cycle import VehicleMode

MAX_ORDER_BYTES = 16 * 1024


class MeasureCategory(StrEnum):
    FAULT_FIX = "fault_fix"
    COMPLIANCE = "compliance"
    SECURITY = "security"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasureOrder:
    vin: str
    measure_id: str
    attempt: int
    category: MeasureCategory
    allowed_states: frozenset[VehicleMode]
    changes: Mapping[str, ConfigValue]
    impairs: tuple[str, ...]
    issued: datetime
    deadline: datetime
    step_s: float = 1.0


def encode_order(order: MeasureOrder) -> bytes:
    return cbor2.dumps(
        {
            "type": "measure",
            "vin": order.vin,
            "measure_id": order.measure_id,
            "attempt": order.attempt,
            "category": order.category.value,
            "allowed_states": sorted(s.value for s in order.allowed_states),
            "changes": dict(order.changes),
            "impairs": list(order.impairs),
            "issued": to_millis(order.issued),
            "deadline": to_millis(order.deadline),
            "step_s": order.step_s,
        }
    )


def sign_order(order: MeasureOrder, key: SigningKey) -> bytes:
    return sign1(encode_order(order), key, kid=b"backend")


def _malformed(detail: str) -> RejectedMessageError:
    return RejectedMessageError(f"malformed measure order: {detail}", code="malformed")


def _get(data: Mapping[Any, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise _malformed(f"field {key!r} missing or of the wrong type")
    return value


def parse_order(payload: bytes) -> MeasureOrder:
    try:
        data = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise _malformed(f"payload is not CBOR ({exc})") from exc
    if not isinstance(data, dict) or data.get("type") != "measure":
        raise _malformed("payload is not a map of type 'measure'")
    try:
        category = MeasureCategory(_get(data, "category", str))
        states = frozenset(VehicleMode(s) for s in _get(data, "allowed_states", list))
    except ValueError as exc:
        raise _malformed(str(exc)) from exc
    changes = _get(data, "changes", dict)
    if not changes or not all(
        isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in changes.items()
    ):
        raise _malformed("changes must be a non-empty map of key → scalar value")
    attempt = _get(data, "attempt", int)
    step_s = float(_get(data, "step_s", (int, float)))
    if attempt < 1 or not states or not 0 <= step_s <= 600:
        raise _malformed("attempt >= 1, at least one allowed state and 0 <= step_s <= 600 are required")
    return MeasureOrder(
        vin=_get(data, "vin", str),
        measure_id=_get(data, "measure_id", str),
        attempt=attempt,
        category=category,
        allowed_states=states,
        changes=changes,
        impairs=tuple(str(s) for s in _get(data, "impairs", list)),
        issued=from_millis(_get(data, "issued", int)),
        deadline=from_millis(_get(data, "deadline", int)),
        step_s=step_s,
    )


def verify_order(
    message: bytes, key: VerifyKey, *, vin: str, now: datetime, specs: Mapping[str, KeySpec]
) -> MeasureOrder:
    """Signature, VIN, deadline and key checks, each refusal with its code and reason."""
    order = parse_order(verify1(message, key, max_bytes=MAX_ORDER_BYTES, what="measure order").payload)
    if order.vin != vin:
        raise RejectedMessageError(
            f"measure order is for vehicle {order.vin}, not this vehicle {vin}", code="other_vehicle"
        )
    if now >= order.deadline:
        raise RejectedMessageError(
            f"measure {order.measure_id} passed its deadline {order.deadline.isoformat()}", code="expired"
        )
    for change in order.changes:
        spec = specs.get(change)
        if spec is None:
            raise RejectedMessageError(
                f"measure {order.measure_id}: unknown configuration key {change!r}", code="unknown_key"
            )
        if spec.key_class is not KeyClass.NORMAL:
            raise RejectedMessageError(
                f"measure {order.measure_id} would change {spec.key_class.value} key {change!r}: "
                "remote measures may not touch operating safety or personal settings",
                code="forbidden_key",
            )
    return order


def check_not_replayed(order: MeasureOrder, last_attempt: int) -> None:
    """Attempt numbers of one measure only go up: an old or repeated attempt is a replay."""
    if order.attempt <= last_attempt:
        raise RejectedMessageError(
            f"measure {order.measure_id} attempt {order.attempt} is not newer than attempt {last_attempt} (replayed)",
            code="replayed",
        )
