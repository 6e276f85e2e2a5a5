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
the `normal` class (operating safety, eCall, personal settings), an unknown key, or give a key a
value of another type than its default. The rules live here once: `MeasureOrder` validates its
fields when built (the vehicle builds it from the payload, the backend before it signs) and
`check_changes` holds the key rule; the backend imports both, so it never signs an order the
vehicle would refuse. Bounds are those of tcu.services.payload_fields.

A refusal of an order whose signature verified is a `RejectedOrderError` carrying the order's
`measure_id` and `attempt` whenever they could be read, so the backend can match the answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import cbor2
from nacl.signing import SigningKey, VerifyKey

from tcu.errors import RejectedMessageError
from tcu.services import payload_fields as fields
from tcu.services.cose import decode, sign1, verify1
from tcu.services.ecu_config import ConfigValue, KeyClass, KeySpec
from tcu.uplink.records import to_millis
from tcu.vehicle.drive_cycle import VehicleMode

MAX_ORDER_BYTES = 16 * 1024
MAX_MEASURE_ID_CHARS = 128  # ids are names a person types; a longer one is a mistake or an attack
MAX_TEXT_VALUE_CHARS = 1024  # the longest text an ECU configuration value may have
MAX_STEP_S = 600.0  # one change may not take longer than the whole 10-minute attempt


class RejectedOrderError(RejectedMessageError):
    """A refused measure order; `measure_id` and `attempt` are set once the signature verified and they
    could be read (a refusal before that cannot be trusted to name anything)."""

    def __init__(
        self, message: str, *, code: str = "malformed", measure_id: str | None = None, attempt: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.measure_id = measure_id
        self.attempt = attempt


class MeasureCategory(StrEnum):
    FAULT_FIX = "fault_fix"
    COMPLIANCE = "compliance"
    SECURITY = "security"


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_MEASURE_ID_CHARS


def _valid_attempt(value: object) -> bool:
    return fields.is_int(value) and 1 <= value <= fields.INT64_MAX


def value_problem(value: object) -> str | None:
    """Why `value` cannot be an ECU configuration value, or None when it can."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -fields.INT64_MAX - 1 <= value <= fields.INT64_MAX else "an integer outside 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "not a finite number"
    if isinstance(value, str):
        return None if len(value) <= MAX_TEXT_VALUE_CHARS else f"text longer than {MAX_TEXT_VALUE_CHARS} characters"
    return f"{fields.shown(value)}, not a text, number or bool"


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

    def __post_init__(self) -> None:
        """Raises RejectedOrderError("malformed ..."): the same rule refuses a payload and an order to sign."""
        ids = {
            "measure_id": self.measure_id if _valid_id(self.measure_id) else None,
            "attempt": self.attempt if _valid_attempt(self.attempt) else None,
        }

        def malformed(detail: str) -> RejectedOrderError:
            return RejectedOrderError(f"malformed measure order: {detail}", **ids)  # type: ignore[arg-type]

        if not isinstance(self.vin, str):
            raise malformed(f"vin must be a text string, got {fields.shown(self.vin)}")
        if ids["measure_id"] is None:
            raise malformed(
                f"measure_id must be 1 to {MAX_MEASURE_ID_CHARS} characters, got {fields.shown(self.measure_id)}"
            )
        if ids["attempt"] is None:
            raise malformed(f"attempt must be an integer in 1..{fields.INT64_MAX}, got {fields.shown(self.attempt)}")
        if not isinstance(self.category, MeasureCategory):
            raise malformed(f"unknown category {fields.shown(self.category)}")
        if not self.allowed_states or not all(isinstance(s, VehicleMode) for s in self.allowed_states):
            raise malformed("allowed_states must name at least one of parked, living, driving")
        if not isinstance(self.changes, Mapping) or not self.changes:
            raise malformed("changes must be a non-empty map of key → value")
        for key, value in self.changes.items():
            if not isinstance(key, str):
                raise malformed(f"a change key is {fields.shown(key)}, not a text string")
            problem = value_problem(value)
            if problem is not None:
                raise malformed(f"the value for {fields.shown(key)} is {problem}")
        if not all(isinstance(s, str) for s in self.impairs):
            raise malformed("impairs must be an array of service codes (text strings)")
        for name in ("issued", "deadline"):
            if not fields.in_time_range(getattr(self, name)):
                raise malformed(f"{name} must lie between 1970-01-01 and 9999-12-31 UTC")
        step = self.step_s
        if isinstance(step, bool) or not isinstance(step, int | float) or not 0 <= step <= MAX_STEP_S:
            raise malformed(f"step_s must be a number in 0..{MAX_STEP_S:g}, got {fields.shown(step)}")


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


def parse_order(payload: bytes) -> MeasureOrder:
    """Read a verified payload; any bytes give an order or RejectedOrderError (with the ids it could read)."""
    data = decode(payload, what="measure order payload")
    if not isinstance(data, Mapping) or data.get("type") != "measure":
        raise RejectedOrderError("malformed measure order: payload is not a map of type 'measure'")
    measure_id, attempt = data.get("measure_id"), data.get("attempt")
    ids = {
        "measure_id": measure_id if _valid_id(measure_id) else None,
        "attempt": attempt if _valid_attempt(attempt) else None,
    }

    def malformed(detail: str) -> RejectedOrderError:
        return RejectedOrderError(f"malformed measure order: {detail}", **ids)  # type: ignore[arg-type]

    category_text = fields.text(data, "category", malformed)
    states = data.get("allowed_states")
    changes = data.get("changes")
    impairs = data.get("impairs")
    if not isinstance(states, list | tuple):
        raise malformed(f"allowed_states must be an array, got {fields.shown(states)}")
    if not isinstance(changes, Mapping):
        raise malformed(f"changes must be a map, got {fields.shown(changes)}")
    if not isinstance(impairs, list | tuple):
        raise malformed(f"impairs must be an array, got {fields.shown(impairs)}")
    try:
        category = MeasureCategory(category_text)
        allowed = frozenset(VehicleMode(s) for s in states)
    except ValueError as exc:
        raise malformed(f"unknown category or vehicle state ({exc})") from exc
    return MeasureOrder(
        vin=fields.text(data, "vin", malformed),
        measure_id=fields.text(data, "measure_id", malformed),
        attempt=fields.integer(data, "attempt", malformed, low=1),
        category=category,
        allowed_states=allowed,
        changes=dict(changes),
        impairs=tuple(impairs),
        issued=fields.moment(data, "issued", malformed),
        deadline=fields.moment(data, "deadline", malformed),
        step_s=fields.number(data, "step_s", malformed, low=0, high=MAX_STEP_S),
    )


def check_changes(order: MeasureOrder, specs: Mapping[str, KeySpec]) -> None:
    """The key rule, on the vehicle and at the backend before signing: only known keys of class
    `normal`, each given a value of its default's type. Raises RejectedOrderError
    (unknown_key, forbidden_key, bad_value)."""
    for key, value in order.changes.items():

        def refuse(detail: str, code: str) -> RejectedOrderError:
            return RejectedOrderError(
                f"measure {order.measure_id}: {detail}", code=code, measure_id=order.measure_id, attempt=order.attempt
            )

        spec = specs.get(key)
        if spec is None:
            raise refuse(f"unknown configuration key {fields.shown(key)}", "unknown_key")
        if spec.key_class is not KeyClass.NORMAL:
            raise refuse(
                f"would change {spec.key_class.value} key {key!r}: "
                "remote measures may not touch operating safety or personal settings",
                "forbidden_key",
            )
        if type(value) is not type(spec.default):
            raise refuse(
                f"key {key!r} takes a {type(spec.default).__name__} value, not {fields.shown(value)}", "bad_value"
            )


def verify_order(
    message: bytes, key: VerifyKey, *, vin: str, now: datetime, specs: Mapping[str, KeySpec]
) -> MeasureOrder:
    """Signature, VIN, deadline and key checks, each refusal with its code and reason."""
    order = parse_order(verify1(message, key, max_bytes=MAX_ORDER_BYTES, what="measure order").payload)
    if order.vin != vin:
        # Another vehicle's ids would match nothing of ours, or the wrong thing: do not name them.
        raise RejectedOrderError(
            f"measure order is for vehicle {fields.shown(order.vin)}, not this vehicle {vin}", code="other_vehicle"
        )
    if now >= order.deadline:
        raise RejectedOrderError(
            f"measure {order.measure_id} passed its deadline {order.deadline.isoformat()}",
            code="expired",
            measure_id=order.measure_id,
            attempt=order.attempt,
        )
    check_changes(order, specs)
    return order


def check_not_replayed(order: MeasureOrder, last_attempt: int) -> None:
    """Attempt numbers of one measure only go up: an old or repeated attempt is a replay."""
    if order.attempt <= last_attempt:
        raise RejectedOrderError(
            f"measure {order.measure_id} attempt {order.attempt} is not newer than attempt {last_attempt} (replayed)",
            code="replayed",
            measure_id=order.measure_id,
            attempt=order.attempt,
        )
