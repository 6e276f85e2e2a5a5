"""One attempt of a remote measure, sans-I/O: preconditions, the per-attempt cap, interruptions.

An attempt may run at most ten minutes: AGB 3.4 d) forbids impairing other services for *more* than
10 minutes per attempt, so an attempt whose last step lands at exactly 10:00 is within the cap, and
one that would run even a millisecond longer is aborted and rolled back. Elapsed time is measured in
whole milliseconds, the resolution in which a plan declares its steps, so that float noise in the
clock never decides the boundary.

Steps end on the attempt's schedule: step n is due at the start plus the declared times of steps 1 to
n, however late the loop noticed the end of step n-1 (`step_deadline`). A step's work is its declared
time (a simulated ECU step); an end noticed at most a scheduling tolerance late counts as ended on
schedule (`end_step`), for the cap and for the duration reported. Only a step that really ran longer
than that — an ECU overrun — moves the schedule on, and it is that end which the cap judges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from telematics_wire.measure_order import MeasureOrder
from telematics_wire.measure_plan import ATTEMPT_CAP_MS, MeasureStep
from telematics_wire.vehicle_mode import VehicleMode

ATTEMPT_CAP_S = ATTEMPT_CAP_MS / 1000


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
    Interruption.TIME_CAP: "the attempt would have run past its 10-minute cap",
    Interruption.AGENT_RESTART: "the agent restarted during the attempt",
    Interruption.VERIFICATION_FAILED: "the result did not verify (the ECU configuration differs from the plan's)",
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
    applied: list[str] = field(default_factory=list)  # keys, in the order they were set
    steps_done: int = 0
    interruption: Interruption | None = None
    ended_ms: int = 0  # when the steps done count as ended, in ms after `started` (see `end_step`)

    @property
    def cap_ms(self) -> int:
        return round(self.cap_s * 1000)

    def elapsed_ms(self, now: float) -> int:
        return round((now - self.started) * 1000)

    def over_cap(self, now: float) -> bool:
        """More than the cap has passed: exactly 10:00 is still within it."""
        return self.elapsed_ms(now) > self.cap_ms

    def fits(self, expected_ms: int) -> bool:
        """A next step of `expected_ms` would end within the cap, on schedule."""
        return self.ended_ms + expected_ms <= self.cap_ms

    def step_deadline(self, expected_ms: int) -> float:
        """The monotonic time a next step of `expected_ms` is due to end: counted from when the steps
        done count as ended, never from when the loop noticed it, so lateness does not add up."""
        return self.started + (self.ended_ms + expected_ms) / 1000

    def end_step(self, expected_ms: int, now: float, tolerance_s: float) -> int:
        """A step of `expected_ms` was noticed ended at `now`: it counts as ended on schedule if that is at
        most `tolerance_s` late (or early), else when it was noticed (an overrun, which moves the schedule
        on and which the cap judges). Returns how many ms late it was noticed."""
        scheduled = self.ended_ms + expected_ms
        late = self.elapsed_ms(now) - scheduled
        self.ended_ms = scheduled if late <= round(tolerance_s * 1000) else scheduled + late
        return late

    @property
    def ended_over_cap(self) -> bool:
        """The steps done ended more than the cap after the start: exactly 10:00 is still within it."""
        return self.ended_ms > self.cap_ms

    def interrupt(self, reason: Interruption) -> None:
        if self.interruption is None:  # the first cause is the one reported
            self.interruption = reason

    def pending_steps(self) -> tuple[MeasureStep, ...]:
        return self.order.steps[self.steps_done :]
