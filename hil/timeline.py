"""What a scenario run records, for its live view, its report and its expectations.

Samples are taken once per (scenario) second; events are whatever happened in between, from the
scenario's own actions (a tunnel starts) and from the system under test (an eCall changed state, a
measure attempt ended). Times are seconds since the run started, in scenario time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class EventKind(StrEnum):
    ACTION = "action"  # something the scenario did: ignition, tunnel, broker outage, booking, unlock, crash
    FAULT = "fault"  # an injected fault: serial garbage, unplug, agent SIGKILL, disk full, latency
    ECALL = "ecall"  # an eCall state change
    MEASURE = "measure"  # a remote-measure attempt started or ended
    PROVISIONING = "provisioning"  # a provisioning file issued, applied or rejected
    LINK = "link"  # the agent's MQTT link went up or down


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    t: float
    speed_kmh: float | None
    coverage: bool  # the agent has a link to the broker
    queue_depth: int
    stored_at_backend: int
    ecall_state: str | None = None
    measure_state: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    t: float
    kind: EventKind
    label: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectationResult:
    name: str
    passed: bool
    detail: str  # what was expected and what was found, precise enough to act on


@dataclass(slots=True, kw_only=True)
class Timeline:
    scenario: str
    description: str = ""
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    expectations: list[ExpectationResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.expectations)
