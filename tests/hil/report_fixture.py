"""A recorded run in miniature for the report tests: a drive with doors and locks, a tunnel, an agent
SIGKILL, a disk_full with its two restarts, a crash eCall, start-up and drain."""

from __future__ import annotations

from hil.timeline import (
    EcallMark,
    Event,
    EventKind,
    ExpectationResult,
    Phase,
    Point,
    Sample,
    Span,
    SpanKind,
    Timeline,
)

TRIGGER_MS = 1_795_985_862_889  # Unix ms of the crash trigger
TRIGGER_T = 90.0
RUN_START, DRAIN_START, END = 1.6, 120.0, 124.5
KILL = (58.0, 61.0)  # agent SIGKILLed, restarted
TUNNEL = (30.0, 48.0)


def _speed(t: float) -> float:
    return 0.0 if t >= TRIGGER_T else min(t * 2.5, 50.0) if t < 80 else 50.0 - (t - 80) * 1.5


def _samples() -> list[Sample]:
    samples = []
    stored = queued = 0
    t = 0.0
    while t <= DRAIN_START:
        agent_up = not KILL[0] <= t < KILL[1]
        link = agent_up and t >= RUN_START and not TUNNEL[0] + 3 <= t < TUNNEL[1] + 1
        queued += 1 if t < TRIGGER_T else 0
        if link:
            sent = min(queued, 4)
            queued, stored = queued - sent, stored + sent
        samples.append(
            Sample(
                t=round(t, 3),
                speed_kmh=_speed(t) if agent_up else None,
                coverage=link,
                queue_depth=queued,
                stored_at_backend=stored,
                ecall_state="voice" if 94 <= t < 104 else None,
                measure_state="m-7 #1" if 55 <= t < 58 else None,
                agent_up=agent_up,
            )
        )
        t += 1.0
    samples.append(
        Sample(t=END, speed_kmh=None, coverage=False, queue_depth=0, stored_at_backend=stored, agent_up=False)
    )
    return samples


def _series() -> dict[str, list[Point]]:
    down = KILL
    speed: list[Point] = [(round(t * 0.5, 3), _speed(t * 0.5)) for t in range(240) if not down[0] <= t * 0.5 < down[1]]
    lat: list[Point] = [(float(t), 48.137154 + t * 0.00004) for t in range(120) if not down[0] <= t < down[1]]
    lon: list[Point] = [(float(t), 11.576124 - t * 0.00011) for t in range(120) if not down[0] <= t < down[1]]
    door: list[Point] = [(float(t), 3 <= t < 6) for t in range(120) if not down[0] <= t < down[1]]
    locked: list[Point] = [(float(t), t < 2 or t >= 110) for t in range(120) if not down[0] <= t < down[1]]
    central: list[Point] = [(0.0, "LOCKED"), (2.0, "UNLOCKED"), (110.0, "LOCKED")]
    rpm: list[Point] = [(float(t), 800 + 30 * _speed(t)) for t in range(0, 120, 2) if not down[0] <= t < down[1]]
    return {
        "Vehicle.Body.CentralLock.State": central,
        "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": locked,
        "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": door,
        "Vehicle.CurrentLocation.Latitude": lat,
        "Vehicle.CurrentLocation.Longitude": lon,
        "Vehicle.Powertrain.CombustionEngine.Speed": rpm,
        "Vehicle.Speed": speed,
    }


def _ecall() -> list[EcallMark]:
    def mark(offset_ms: int, label: str, detail: str = "", source: str = "vehicle", **where: float) -> EcallMark:
        return EcallMark(
            t=round(TRIGGER_T + offset_ms / 1000, 3),
            at_ms=TRIGGER_MS + offset_ms,
            session=1,
            label=label,
            detail=detail,
            source=source,
            **where,  # type: ignore[arg-type]
        )

    return [
        mark(0, "triggered", "crash detected"),
        mark(0, "dialling", "dial attempt 1"),
        mark(2010, "call_established", "PSAP answered"),
        mark(2013, "msd_sent", "PSAP requested the MSD (SEND MSD)"),
        mark(3518, "msd_at_psap", "call 1 MSD #1", "psap", latitude=48.14077, longitude=11.56622),
        mark(3828, "ll_ack", "LL-ACK: the PSAP's modem received MSD 1"),
        mark(3833, "msd_acknowledged", "AL-ACK positive"),
        mark(3833, "voice", "voice after the AL-ACK for MSD 1"),
        mark(13834, "cleared", "PSAP cleared down"),
        mark(13834, "callback_window", "reachable for the PSAP's callback"),
    ]


def recorded_run() -> Timeline:
    spans = [
        Span(kind=SpanKind.PHASE, label=Phase.STARTUP, start=0.0, end=RUN_START, detail="the agent starting"),
        Span(kind=SpanKind.PHASE, label=Phase.RUN, start=RUN_START, end=DRAIN_START),
        Span(kind=SpanKind.PHASE, label=Phase.DRAIN, start=DRAIN_START, end=END, detail="drain-only agent"),
        Span(kind=SpanKind.FAULT, label="tunnel", start=TUNNEL[0], end=TUNNEL[1], detail="no coverage"),
        Span(
            kind=SpanKind.FAULT, label="agent_kill", start=KILL[0], end=KILL[1], detail="SIGKILL, restarted after 3 s"
        ),
        Span(kind=SpanKind.AGENT_DOWN, label="agent_kill: SIGKILL", start=KILL[0], end=KILL[1], detail="SIGKILL"),
        Span(kind=SpanKind.FAULT, label="disk_full", start=64.0, end=75.4, detail="queue capped; restarted twice"),
        Span(kind=SpanKind.AGENT_DOWN, label="disk_full: restart 1 of 2 (queue capped)", start=64.0, end=64.3),
        Span(kind=SpanKind.AGENT_DOWN, label="disk_full: restart 2 of 2 (queue uncapped)", start=75.0, end=75.4),
    ]
    events = [
        Event(t=0.0, kind=EventKind.AGENT, label="agent started"),
        Event(t=1.6, kind=EventKind.LINK, label="link up"),
        Event(t=2.0, kind=EventKind.ACTION, label="unlock"),
        Event(t=3.0, kind=EventKind.ACTION, label="open_door", detail="door=FrontLeft"),
        Event(t=5.0, kind=EventKind.PROVISIONING, label="file issued", detail="version 3 | services: remote_measure"),
        Event(t=30.0, kind=EventKind.FAULT, label="tunnel", detail="for_s=18"),
        Event(t=33.4, kind=EventKind.LINK, label="link down", detail="keepalive timeout"),
        Event(t=48.0, kind=EventKind.FAULT, label="tunnel ends", detail="coverage back"),
        Event(t=55.0, kind=EventKind.MEASURE, label="m-7 #1 sent"),
        Event(t=58.0, kind=EventKind.FAULT, label="agent_kill", detail="restart_after_s=3"),
        Event(t=70.0, kind=EventKind.FAULT, label="lock failed", detail="ConfigError: the CAN adapter is real"),
        Event(t=90.0, kind=EventKind.ACTION, label="crash"),
        Event(t=93.6, kind=EventKind.ECALL, label="MSD at the PSAP", detail="call 1"),
        Event(t=120.0, kind=EventKind.ACTION, label="end", detail="agent stopped; draining what it had queued"),
    ]
    results = [
        ExpectationResult(name="records_without_gaps", passed=True, detail="vehicle produced 90, backend stored 90"),
        ExpectationResult(
            name="msd_received(within_m=200)",
            passed=True,
            detail="MSD #1 at 48.14077,11.56622: 3 m from the crash position",
            measured="3 m",
            limit="200 m",
        ),
        ExpectationResult(name="measure_succeeded", passed=True, detail="m-7 succeeded after 2 attempts"),
    ]
    stored = [(round(2.0 + i * 0.9, 3), i + 1) for i in range(100)]
    return Timeline(
        scenario="tunnel_kill_crash",
        description="A drive through a tunnel, an agent SIGKILL, a full disk, then a crash eCall.",
        samples=_samples(),
        events=events,
        expectations=results,
        spans=spans,
        series=_series(),
        stored=stored,
        ecall=_ecall(),
    )


def with_errored_check(timeline: Timeline) -> Timeline:
    """`timeline` with one more check, one that could not run (a broken scenario or check, not the car)."""
    timeline.expectations.append(
        ExpectationResult(
            name="signal_value", passed=False, detail="check failed to run: KeyError: 'Vehicle.Speed'", errored=True
        )
    )
    return timeline
