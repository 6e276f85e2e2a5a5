"""One attempt of a remote measure, sans-I/O: preconditions, the per-attempt cap, interruptions.

An attempt may run at most ten minutes (other services may be impaired no longer than that per
attempt): at 9:59 it still runs, at 10:00 it is aborted and rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tcu.services.measure_order import MeasureOrder
from tcu.vehicle.drive_cycle import VehicleMode

ATTEMPT_CAP_S = 600.0


class Interruption(StrEnum):
    COVERAGE_LOST = "coverage_lost"
    LOCK_CHANGED = "lock_or_unlock"
    VEHICLE_STATE = "vehicle_state_not_allowed"
    ECALL = "ecall"
    TIME_CAP = "time_cap"
    AGENT_RESTART = "agent_restarted"
    VERIFICATION_FAILED = "verification_failed"
    STORAGE = "storage"  # the vehicle could not write a change or its record (full disk)


_DESCRIPTIONS = {
    Interruption.COVERAGE_LOST: "cellular coverage was lost",
    Interruption.LOCK_CHANGED: "the customer locked or unlocked the vehicle",
    Interruption.VEHICLE_STATE: "the vehicle left the states this measure may run in",
    Interruption.ECALL: "an eCall started",
    Interruption.TIME_CAP: "the attempt reached its 10-minute cap",
    Interruption.AGENT_RESTART: "the agent restarted during the attempt",
    Interruption.VERIFICATION_FAILED: "the result did not verify (configuration or personal settings differ)",
    Interruption.STORAGE: "the vehicle could not store a change or its record (disk full or failing)",
}


def describe(interruption: Interruption) -> str:
    return _DESCRIPTIONS[interruption]


def precondition_failure(
    order: MeasureOrder, *, mode: VehicleMode | None, ecall_active: bool, coverage: bool
) -> tuple[Interruption, str] | None:
    """Why the attempt may not start now (the same codes as interruptions), or None when it may."""
    if ecall_active:
        return Interruption.ECALL, "an eCall is in progress"
    if not coverage:
        return Interruption.COVERAGE_LOST, "no adequate cellular coverage"
    allowed = ", ".join(sorted(s.value for s in order.allowed_states))
    if mode is None:
        return Interruption.VEHICLE_STATE, f"the vehicle state is unknown; this measure runs only when {allowed}"
    if mode not in order.allowed_states:
        return Interruption.VEHICLE_STATE, f"the vehicle is {mode.value}; this measure runs only when {allowed}"
    return None


@dataclass(slots=True)
class MeasureAttempt:
    order: MeasureOrder
    started: float  # monotonic seconds
    cap_s: float = ATTEMPT_CAP_S
    applied: list[str] = field(default_factory=list)
    interruption: Interruption | None = None

    def remaining(self, now: float) -> float:
        return self.cap_s - (now - self.started)

    def over_cap(self, now: float) -> bool:
        return now - self.started >= self.cap_s

    def interrupt(self, reason: Interruption) -> None:
        if self.interruption is None:  # the first cause is the one reported
            self.interruption = reason

    def pending_changes(self) -> list[str]:
        return [key for key in self.order.changes if key not in self.applied]
