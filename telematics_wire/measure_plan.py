"""Planning a remote measure before an attempt: AGB 3.4 a) to d), judged in advance ("es ist zu erwarten").

One rule, two users: the backend judges a plan before it records a measure (`backend-stub measure
send` refuses it, nothing is published) and again before it signs each attempt; the vehicle judges it
on receipt (defence in depth). Both call `plan_problem` with the vehicle's key table
(tcu/services/ecu_config.toml), so they cannot disagree.

A plan is the fault the measure fixes (a reference and the service it concerns), its steps (each: the
ECU changes it makes and how long it is expected to take, in whole milliseconds so that sums are
exact) and the services it impairs while it runs. It is refused when

- the fault concerns a vehicle function (3.4 a: the fault must not touch operating safety) or names no
  service the key table knows (`vehicle_function`, `unknown_service`);
- a step changes an unknown key (`unknown_key`), a key of a vehicle function (`vehicle_function`, 3.4 a
  and d: not even a brief failure of a vehicle function), a key holding personal settings
  (`personal_data`, 3.4 d), a key of another service than the fault's (`outside_fault`, 3.4 c: changes
  limited to fixing the fault), or gives a key a value of another type than its default (`bad_value`);
- it impairs a vehicle function (`vehicle_function`, 3.4 d);
- its steps together are expected to take *more* than 10 minutes (`over_cap`, 3.4 d: "mehr als 10
  Minuten je Versuch"): a plan of exactly 10:00 is within the cap.

Condition b (the fault is expected to be fixed for good) is a judgement no table can make; the order
at least has to name the fault, so a person answers for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from telematics_wire.ecu_keys import VEHICLE_FUNCTIONS, ConfigValue, KeyClass, KeySpec, services_of
from telematics_wire.payload_fields import shown

ATTEMPT_CAP_MS = 600_000  # AGB 3.4 d: other services may be impaired no more than 10 minutes per attempt
MAX_STEPS = 64
MAX_IMPAIRS = 32
MAX_NAME_CHARS = 64  # a service or function name
MAX_FAULT_REF_CHARS = 128  # a ticket, CVE or regulation reference


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """What the measure fixes: `ref` names the fault (ticket, vulnerability, regulation; AGB 3.4/3.5),
    `service` the service (or operating software) it affects. Validated with the order it belongs to."""

    ref: str
    service: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasureStep:
    """One step of a plan: the changes it makes and the time it is expected to take. Validated with
    the order it belongs to (bounds: telematics_wire.measure_order)."""

    changes: Mapping[str, ConfigValue]
    expected_ms: int


@dataclass(frozen=True, slots=True)
class PlanProblem:
    code: str
    reason: str


def one_step_per_change(changes: Mapping[str, ConfigValue], *, expected_ms: int) -> tuple[MeasureStep, ...]:
    """A plan of one step per change, each expected to take `expected_ms`."""
    return tuple(MeasureStep(changes={key: value}, expected_ms=expected_ms) for key, value in changes.items())


def planned_ms(steps: Sequence[MeasureStep]) -> int:
    return sum(step.expected_ms for step in steps)


def seconds_text(ms: int) -> str:
    """Milliseconds as a person reads them, exactly: 600000 → "600 s", 600001 → "600.001 s"."""
    whole, part = divmod(ms, 1000)
    return f"{whole} s" if part == 0 else f"{whole}.{part:03d} s".rstrip("0")


def plan_problem(
    *, fault: Fault, steps: Sequence[MeasureStep], impairs: Sequence[str], specs: Mapping[str, KeySpec]
) -> PlanProblem | None:
    """The first reason the plan may not run (fault, then keys, impairments, duration), or None."""
    services = services_of(specs)
    if fault.service in VEHICLE_FUNCTIONS:
        return PlanProblem(
            "vehicle_function",
            f"fault {fault.ref!r} concerns the vehicle function {fault.service!r}: a remote measure fixes "
            "services only, never a fault that touches operating safety or a vehicle function (AGB 3.4 a)",
        )
    if fault.service not in services:
        return PlanProblem(
            "unknown_service",
            f"fault {fault.ref!r} names the service {shown(fault.service)}, which no ECU configuration key "
            f"configures; name one of {', '.join(sorted(services))}",
        )
    for number, step in enumerate(steps, start=1):
        for key, value in step.changes.items():
            problem = _key_problem(key, value, fault, specs)
            if problem is not None:
                return PlanProblem(problem.code, f"step {number}: {problem.reason}")
    for name in impairs:
        if name in VEHICLE_FUNCTIONS:
            return PlanProblem(
                "vehicle_function",
                f"the plan would impair the vehicle function {name!r}: a remote measure may not cause even a "
                "brief failure of a vehicle function, only of services (AGB 3.4 d)",
            )
    total = planned_ms(steps)
    if total > ATTEMPT_CAP_MS:
        return PlanProblem(
            "over_cap",
            f"the declared steps take {seconds_text(total)} in all, more than the {seconds_text(ATTEMPT_CAP_MS)} "
            "an attempt may impair other services (AGB 3.4 d): split the measure or shorten its steps",
        )
    return None


def _key_problem(key: str, value: ConfigValue, fault: Fault, specs: Mapping[str, KeySpec]) -> PlanProblem | None:
    spec = specs.get(key)
    if spec is None:
        return PlanProblem("unknown_key", f"unknown configuration key {shown(key)}")
    if spec.key_class is KeyClass.VEHICLE_FUNCTION:
        return PlanProblem(
            "vehicle_function",
            f"key {key!r} belongs to the vehicle function {spec.owner!r}: a remote measure may not touch "
            "operating safety (AGB 3.4 a) nor cause even a brief failure of a vehicle function (3.4 d)",
        )
    if spec.key_class is KeyClass.PERSONAL:
        return PlanProblem(
            "personal_data",
            f"key {key!r} holds the customer's personal settings, which a remote measure may not put at risk "
            "(AGB 3.4 d)",
        )
    if spec.owner != fault.service:
        return PlanProblem(
            "outside_fault",
            f"key {key!r} configures the service {spec.owner!r}, not {fault.service!r} whose fault "
            f"{fault.ref!r} the measure fixes: changes are limited to fixing the fault (AGB 3.4 c)",
        )
    if type(value) is not type(spec.default):
        return PlanProblem("bad_value", f"key {key!r} takes a {type(spec.default).__name__} value, not {shown(value)}")
    return None
