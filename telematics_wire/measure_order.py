"""Remote-measure orders: signed by the backend like provisioning files (COSE_Sign1, Ed25519).

Payload, a CBOR map with exactly these fields:

    {"type": "measure", "vin": str, "measure_id": str, "attempt": uint >= 1,
     "category": "fault_fix" | "compliance" | "security",
     "fault": {"ref": str, "service": str},                  # what it fixes, and the service affected
     "allowed_states": ["parked", "living", "driving"],      # vehicle states it may run in
     "steps": [{"changes": {key: value, ...}, "expected_ms": uint}, ...],   # the plan, in order
     "impairs": ["6AP", ...],                                # services unavailable while it runs
     "issued": ms, "deadline": ms}

The vehicle refuses an order that is forged, for another VIN, past its deadline, a replay (an
attempt number not above the last one seen for that measure), or whose plan fails AGB 3.4 a) to d)
(telematics_wire.measure_plan: vehicle functions, personal settings, keys outside the fault's service,
more than 10 minutes of declared steps). The rules live here once: `MeasureOrder` validates its
fields when built (the vehicle builds it from the payload, the backend before it signs) and
`check_plan` applies the plan rule; the backend imports both, so it never signs an order the vehicle
would refuse. Bounds are those of telematics_wire.payload_fields; a field this vehicle does not know is
refused rather than ignored (it could change what the order means).

A refusal of an order whose signature verified is a `RejectedOrderError` carrying the order's
`measure_id` and `attempt` whenever they could be read, so the backend can match the answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import cbor2
from nacl.signing import SigningKey, VerifyKey

from telematics_wire import payload_fields as fields
from telematics_wire.cose import decode, sign1, verify1
from telematics_wire.ecu_keys import ConfigValue, KeySpec
from telematics_wire.errors import RejectedMessageError
from telematics_wire.measure_plan import (
    ATTEMPT_CAP_MS,
    MAX_FAULT_REF_CHARS,
    MAX_IMPAIRS,
    MAX_NAME_CHARS,
    MAX_STEPS,
    Fault,
    MeasureStep,
    plan_problem,
)
from telematics_wire.records import to_millis
from telematics_wire.vehicle_mode import VehicleMode

Malformed = Callable[[str], RejectedMessageError]
MAX_ORDER_BYTES = 16 * 1024
MAX_MEASURE_ID_CHARS = 128  # ids are names a person types; a longer one is a mistake or an attack
MAX_TEXT_VALUE_CHARS = 1024  # the longest text an ECU configuration value may have
ORDER_FIELDS = frozenset(
    {
        "type",
        "vin",
        "measure_id",
        "attempt",
        "category",
        "fault",
        "allowed_states",
        "steps",
        "impairs",
        "issued",
        "deadline",
    }
)
STEP_FIELDS = frozenset({"changes", "expected_ms"})
FAULT_FIELDS = frozenset({"ref", "service"})


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
    fault: Fault
    allowed_states: frozenset[VehicleMode]
    steps: tuple[MeasureStep, ...]
    impairs: tuple[str, ...]
    issued: datetime
    deadline: datetime

    @property
    def changes(self) -> dict[str, ConfigValue]:
        """Every change of every step (a key appears in one step only)."""
        return {key: value for step in self.steps for key, value in step.changes.items()}

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
        _check_fault(self.fault, malformed)
        _check_steps(self.steps, malformed)
        if (
            not isinstance(self.impairs, tuple)
            or len(self.impairs) > MAX_IMPAIRS
            or not all(_valid_name(s) for s in self.impairs)
        ):
            raise malformed(
                f"impairs must be an array of service codes: at most {MAX_IMPAIRS} text strings "
                f"of 1 to {MAX_NAME_CHARS} characters"
            )
        for name in ("issued", "deadline"):
            if not fields.in_time_range(getattr(self, name)):
                raise malformed(f"{name} must lie between 1970-01-01 and 9999-12-31 UTC")


def _valid_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS


def _check_fault(fault: object, malformed: Callable[[str], RejectedOrderError]) -> None:
    if not isinstance(fault, Fault):
        raise malformed("fault must name the fault the measure fixes: {ref, service}")
    if not isinstance(fault.ref, str) or not 0 < len(fault.ref) <= MAX_FAULT_REF_CHARS:
        raise malformed(f"fault.ref must be 1 to {MAX_FAULT_REF_CHARS} characters, got {fields.shown(fault.ref)}")
    if not _valid_name(fault.service):
        raise malformed(f"fault.service must be 1 to {MAX_NAME_CHARS} characters, got {fields.shown(fault.service)}")


def _check_steps(steps: object, malformed: Callable[[str], RejectedOrderError]) -> None:
    if not isinstance(steps, tuple) or not 0 < len(steps) <= MAX_STEPS:
        raise malformed(f"steps must be 1 to {MAX_STEPS} steps")
    seen: set[str] = set()
    for number, step in enumerate(steps, start=1):
        if not isinstance(step, MeasureStep):
            raise malformed(f"step {number} is not a step")
        expected = step.expected_ms
        if not fields.is_int(expected) or not 0 <= expected <= ATTEMPT_CAP_MS:
            raise malformed(
                f"step {number}: expected_ms must be an integer in 0..{ATTEMPT_CAP_MS}, got {fields.shown(expected)}"
            )
        if not isinstance(step.changes, Mapping) or not step.changes:
            raise malformed(f"step {number}: changes must be a non-empty map of key → value")
        for key, value in step.changes.items():
            if not isinstance(key, str):
                raise malformed(f"step {number}: a change key is {fields.shown(key)}, not a text string")
            if key in seen:
                raise malformed(f"step {number}: key {fields.shown(key)} is changed by an earlier step already")
            seen.add(key)
            problem = value_problem(value)
            if problem is not None:
                raise malformed(f"step {number}: the value for {fields.shown(key)} is {problem}")


def encode_order(order: MeasureOrder) -> bytes:
    return cbor2.dumps(
        {
            "type": "measure",
            "vin": order.vin,
            "measure_id": order.measure_id,
            "attempt": order.attempt,
            "category": order.category.value,
            "fault": {"ref": order.fault.ref, "service": order.fault.service},
            "allowed_states": sorted(s.value for s in order.allowed_states),
            "steps": [{"changes": dict(step.changes), "expected_ms": step.expected_ms} for step in order.steps],
            "impairs": list(order.impairs),
            "issued": to_millis(order.issued),
            "deadline": to_millis(order.deadline),
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

    unknown = [k for k in data if k not in ORDER_FIELDS]
    if unknown:
        raise malformed(
            f"unknown field {fields.shown(unknown[0])} (this vehicle reads {', '.join(sorted(ORDER_FIELDS))})"
        )
    category_text = fields.text(data, "category", malformed)
    states = data.get("allowed_states")
    impairs = data.get("impairs")
    if not isinstance(states, list | tuple):
        raise malformed(f"allowed_states must be an array, got {fields.shown(states)}")
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
        fault=_parse_fault(data.get("fault"), malformed),
        allowed_states=allowed,
        steps=_parse_steps(data.get("steps"), malformed),
        impairs=tuple(impairs),
        issued=fields.moment(data, "issued", malformed),
        deadline=fields.moment(data, "deadline", malformed),
    )


def _exact_map(value: object, names: frozenset[str], what: str, malformed: Malformed) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise malformed(f"{what} must be a map of {', '.join(sorted(names))}, got {fields.shown(value)}")
    if set(value) != names:
        odd = sorted(fields.shown(k) for k in set(value) ^ names)
        raise malformed(
            f"{what} must have exactly the fields {', '.join(sorted(names))} (differs in {', '.join(odd[:3])})"
        )
    return value


def _parse_fault(value: object, malformed: Malformed) -> Fault:
    data = _exact_map(value, FAULT_FIELDS, "fault", malformed)
    return Fault(ref=fields.text(data, "ref", malformed), service=fields.text(data, "service", malformed))


def _parse_steps(value: object, malformed: Malformed) -> tuple[MeasureStep, ...]:
    if not isinstance(value, list | tuple) or not 0 < len(value) <= MAX_STEPS:
        raise malformed(f"steps must be an array of 1 to {MAX_STEPS} steps, got {fields.shown(value)}")
    steps = []
    for number, item in enumerate(value, start=1):
        data = _exact_map(item, STEP_FIELDS, f"step {number}", malformed)
        changes = data["changes"]
        if not isinstance(changes, Mapping):
            raise malformed(f"step {number}: changes must be a map, got {fields.shown(changes)}")
        expected = fields.integer(data, "expected_ms", malformed, low=0, high=ATTEMPT_CAP_MS)
        steps.append(MeasureStep(changes=dict(changes), expected_ms=expected))
    return tuple(steps)


def check_plan(order: MeasureOrder, specs: Mapping[str, KeySpec]) -> None:
    """AGB 3.4 a) to d) on the order's plan (telematics_wire.measure_plan), on the vehicle and at the backend
    before signing. Raises RejectedOrderError with the problem's code (vehicle_function, personal_data,
    outside_fault, unknown_service, unknown_key, bad_value, over_cap) and reason."""
    problem = plan_problem(fault=order.fault, steps=order.steps, impairs=order.impairs, specs=specs)
    if problem is not None:
        raise RejectedOrderError(
            f"measure {order.measure_id}: {problem.reason}",
            code=problem.code,
            measure_id=order.measure_id,
            attempt=order.attempt,
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
    check_plan(order, specs)
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
