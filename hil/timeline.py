"""What a scenario run records, for its live view, its report and its expectations.

Times are seconds since the run started, in scenario time (`ScenarioRunner.now`; second 0 is the
moment the backend is connected and the agent process is being started).

- `samples`: the agent as the bench saw it, one per fresh `status.json` (the agent's own status rate)
  and one whenever the agent process stops or starts: an agent that is not running is shown as down,
  never with the last status it wrote before it died.
- `series`: every signal the vehicle sent, from the backend's records at the end of the run (each
  reading at the vehicle's own time stamp): telemetry at its interval, door/lock changes as they
  happened (`hil.backend_series`); `stored`: the backend's record count, one
  step per record at the moment the backend received it.
- `spans`: things with a start and an end: the bench's phases (start-up, run, drain), the injected
  faults (labelled, e.g. `agent_kill`, `disk_full`'s two agent restarts), the agent being down.
- `ecall`: every eCall transition and notice the vehicle reported and every MSD the PSAP received,
  with their millisecond time stamps.
- `events`: single moments from the scenario's actions and the system under test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

Scalar = bool | int | float | str
Point = tuple[float, Scalar]  # (scenario seconds, value)
T = TypeVar("T")


class EventKind(StrEnum):
    ACTION = "action"  # something the scenario did: ignition, tunnel, broker outage, booking, unlock, crash
    FAULT = "fault"  # an injected fault: serial garbage, unplug, agent SIGKILL, disk full, latency
    ECALL = "ecall"  # an eCall state change
    MEASURE = "measure"  # a remote-measure attempt started or ended
    PROVISIONING = "provisioning"  # a provisioning file issued, applied or rejected
    LINK = "link"  # the agent's MQTT link went up or down
    AGENT = "agent"  # the agent process stopped or started


class SpanKind(StrEnum):
    PHASE = "phase"  # the bench's own phases: startup, run, drain
    FAULT = "fault"  # an injected fault from its start to its end
    AGENT_DOWN = "agent_down"  # the agent process was not running


class Phase(StrEnum):
    STARTUP = "startup"  # second 0 until the agent's first link-up: the bench starting, not a fault
    RUN = "run"  # the scenario's steps
    DRAIN = "drain"  # the agent stopped, a drain-only agent sends what was still queued


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    t: float
    speed_kmh: float | None
    coverage: bool  # the agent has a link to the broker (False whenever the agent is down)
    queue_depth: int
    stored_at_backend: int
    ecall_state: str | None = None
    measure_state: str | None = None
    agent_up: bool = True  # the agent process is running (a down agent's status file is stale)
    starting: bool = False  # running, but it has not written a status of its own yet (no link yet)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    t: float
    kind: EventKind
    label: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    kind: SpanKind
    label: str
    start: float
    end: float
    detail: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True, kw_only=True)
class EcallMark:
    """One eCall moment: a transition or notice the vehicle reported, or an MSD the PSAP received."""

    t: float  # scenario seconds
    at_ms: int  # the time stamp itself (Unix ms): the millisecond table is computed from these
    session: int  # the vehicle's eCall session; the PSAP's MSDs get the session they arrived in
    label: str  # the state entered (a transition) or the notice (`ll_ack`, `msd_at_psap`)
    detail: str = ""
    source: str = "vehicle"  # "vehicle" or "psap"
    latitude: float | None = None  # an MSD's position, as the PSAP decoded it
    longitude: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectationResult:
    name: str
    passed: bool
    detail: str  # what was expected and what was found, precise enough to act on
    measured: str = ""  # a precise check's measured value, e.g. "p50 0.12 s, p99 0.48 s over 37 records"
    limit: str = ""  # the limit it was held to, e.g. "p50 <= 1 s, p99 <= 3 s"
    # The check could not run (bad arguments, a crash in the check): not a verdict on the car, so CI
    # lists it as an error, not a failure. Never together with passed.
    errored: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.errored, bool):  # a timeline.json's 1 or "no" is not a flag
            raise TypeError(f"errored must be true or false, got {self.errored!r}")
        if self.passed and self.errored:
            raise ValueError(f"expectation {self.name!r}: a check that could not run cannot have passed")


@dataclass(slots=True, kw_only=True)
class Timeline:
    scenario: str
    description: str = ""
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    expectations: list[ExpectationResult] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    series: dict[str, list[Point]] = field(default_factory=dict)
    stored: list[tuple[float, int]] = field(default_factory=list)
    ecall: list[EcallMark] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.expectations)

    def spans_of(self, kind: SpanKind) -> list[Span]:
        return sorted((s for s in self.spans if s.kind is kind), key=lambda s: (s.start, s.end, s.label))

    def phase(self, phase: Phase) -> Span | None:
        return next((s for s in self.spans_of(SpanKind.PHASE) if s.label == phase), None)


def runs(
    items: Sequence[T], t: Callable[[T], float], value: Callable[[T], object], end: float
) -> list[tuple[float, float, object]]:
    """Runs of equal `value`: (start, end, value); an item holds until the next one, the last until `end`."""
    result: list[tuple[float, float, object]] = []
    for index, item in enumerate(items):
        stop = t(items[index + 1]) if index + 1 < len(items) else max(end, t(item))
        current = value(item)
        if result and result[-1][2] == current:
            result[-1] = (result[-1][0], stop, current)
        else:
            result.append((t(item), stop, current))
    return result


def duration_s(timeline: Timeline) -> float:
    """Scenario seconds from the start to the last thing recorded (sample, event, span or eCall mark)."""
    ends = [s.t for s in timeline.samples] + [e.t for e in timeline.events] + [s.end for s in timeline.spans]
    ends += [m.t for m in timeline.ecall] + [t for t, _ in timeline.stored]
    return max(ends, default=0.0)


def link_state(sample: Sample) -> str:
    """`agent down`, `starting`, `up` or `down`: a down agent has no link, whatever its last status said,
    and one still starting (a Python process takes seconds) has not tried yet: neither is an outage."""
    if not sample.agent_up:
        return "agent down"
    if sample.starting:
        return "starting"
    return "up" if sample.coverage else "down"


def link_down(timeline: Timeline) -> list[tuple[float, float]]:
    """When the running agent had no link during the run: the start-up (before the first link-up),
    the drain and the agent being down are not link outages and are left out."""
    end = duration_s(timeline)
    down = [
        (a, b) for a, b, state in runs(timeline.samples, lambda s: s.t, link_state, end) if state == "down" and b > a
    ]
    run = timeline.phase(Phase.RUN)
    if run is not None:
        down = [(max(a, run.start), min(b, run.end)) for a, b in down if min(b, run.end) > max(a, run.start)]
    elif timeline.spans_of(SpanKind.PHASE):  # phases recorded, but no run phase: the link never came up
        down = []
    return _subtract(down, [(s.start, s.end) for s in timeline.spans_of(SpanKind.AGENT_DOWN)])


def _subtract(spans: list[tuple[float, float]], holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    result = []
    for a, b in spans:
        pieces = [(a, b)]
        for h0, h1 in holes:
            pieces = [p for x0, x1 in pieces for p in ((x0, min(x1, h0)), (max(x0, h1), x1)) if p[1] > p[0]]
        result += pieces
    return result
