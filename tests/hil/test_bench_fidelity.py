"""The bench tells the truth about a run: what it checks can fail, what it plots happened, what it
says about the agent and the clock is so, and watching a fast run does not load the machine."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pynmeagps import NMEAReader

from hil.actions import ACTION_TABLE
from hil.devices.nmea_sim import NmeaSimulator
from hil.runner import ScenarioRunner
from hil.sampler import StatusTracker, bench_spans
from hil.scenario import Step, parse_scenario
from hil.timeline import EventKind, SpanKind, Timeline
from tcu.errors import ConfigError
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.virtual_time import VirtualClock, VirtualTime, VirtualTimeLoop

WALL = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

MINIMAL = 'name = "x"\nduration_s = 10\n'

# -- `at` only where a check reads it --------------------------------------------------------------


def test_at_on_a_check_that_does_not_read_it_is_refused() -> None:
    """signal_range takes a window, not a moment: an `at` there would be silently ignored."""
    text = MINIMAL + '[[expect]]\ncheck = "signal_range"\npath = "Vehicle.Speed"\nmin = 0\nmax = 60\nat = 5\n'
    with pytest.raises(ConfigError, match=r"expect\[0\] \(signal_range\): unknown key\(s\) at; it takes max, "):
        parse_scenario(text)


def test_at_is_taken_where_the_check_reads_it() -> None:
    value = parse_scenario(
        MINIMAL + '[[expect]]\ncheck = "signal_value"\npath = "Vehicle.Speed"\nequals = 0\nat = 5\n'
        '[[expect]]\ncheck = "service_at"\nservice = "6AM"\nat = 5\nstate = "running"\n'
    )
    assert [e.args["at"] for e in value.expectations] == [5, 5]
    step = parse_scenario(MINIMAL + '[[step]]\nat = 3\ndo = "lock"\n').steps[0]
    assert (step.at, step.args) == (3.0, {})


# -- advance_calendar: an agent-down span, and a GNSS that follows the calendar -----------------------


class FakeRunner:
    """Scenario time that moves only when a step holds or the agent stops; the calendar as an offset."""

    def __init__(self) -> None:
        self.t = 20.0
        self.calendar_s = 0.0
        self.timeline = Timeline(scenario="x")
        self.events: list[tuple[EventKind, str, str]] = []
        self.clock = SimpleNamespace(now=lambda: WALL + timedelta(seconds=self.t + self.calendar_s))

    def now(self) -> float:
        return self.t

    async def hold(self, seconds: float) -> None:
        self.t += seconds

    def event(self, kind: EventKind, label: str, detail: str = "") -> None:
        self.events.append((kind, label, detail))

    def advance_calendar(self, seconds: float) -> None:
        self.calendar_s += seconds


class FakeAgent:
    def __init__(self, runner: FakeRunner) -> None:
        self.runner = runner
        self.calls: list[tuple[str, float, float]] = []  # (call, scenario s, calendar offset then)

    async def stop(self) -> None:
        self.runner.t += 0.4  # an orderly stop takes a moment
        self.calls.append(("stop", self.runner.t, self.runner.calendar_s))

    async def start(self) -> None:
        self.calls.append(("start", self.runner.t, self.runner.calendar_s))
        self.runner.t += 0.2


def test_advance_calendar_is_an_agent_down_span_the_report_names() -> None:
    runner = FakeRunner()
    agent = FakeAgent(runner)
    step = Step(at=20, do="advance_calendar", args={"days": 50})
    asyncio.run(ACTION_TABLE["advance_calendar"](runner, SimpleNamespace(agent=agent), step))
    # The car slept through the move: stopped on the old date, woken on the new one.
    assert agent.calls == [("stop", 20.4, 0.0), ("start", 20.4, 50 * 86400.0)]
    [down] = runner.timeline.spans_of(SpanKind.AGENT_DOWN)
    assert (down.label, down.start, down.end) == ("advance_calendar: asleep, calendar +50 d", 20.0, 20.6)
    assert [label for kind, label, _ in runner.events if kind is EventKind.AGENT] == [
        "agent stopped",
        "agent restarted",
    ]
    # What the sampler saw (the process not running from 20.4 to 20.6) is that step's, not unexplained.
    tracker = StatusTracker()
    for t, running in ((19.0, True), (20.45, False), (20.55, False), (20.7, True)):
        tracker.observe(t, running=running, status=None, to_scenario=lambda _w: 0.0, stored=0, queue_on_disk=lambda: 0)
    spans = bench_spans(tracker, 30.0, 32.0, explicit=runner.timeline.spans_of(SpanKind.AGENT_DOWN))
    assert [s for s in spans if s.kind is SpanKind.AGENT_DOWN] == []


def _rmc_utc(data: bytes) -> datetime:
    rmc = next(NMEAReader.parse(line + b"\n") for line in data.split(b"\n") if b"RMC" in line)
    return datetime.combine(rmc.date, rmc.time, tzinfo=UTC)


def test_the_virtual_gnss_tells_the_benchs_time_across_a_calendar_move(tmp_path: Path) -> None:
    """GNSS + advance_calendar: the fixes are dated like the agent's clock, not weeks behind it."""
    scenario = parse_scenario(MINIMAL + 'time_scale = 50\ndevices = ["gnss"]\n')
    runner = ScenarioRunner(scenario, tmp_path)

    async def run() -> list[tuple[datetime, datetime]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        runner.clock = VirtualClock(loop.virtual_time)
        await asyncio.sleep(30)  # the agent's start-up: the bench's clock runs, scenario time does not yet
        runner._start, runner.start_wall = loop.time(), runner.clock.now()
        gnss = runner._devices(DriveCycle())["gnss"]
        assert isinstance(gnss, NmeaSimulator)
        told = []
        for move_days in (0, 50):
            runner.advance_calendar(move_days * 86400.0)
            await asyncio.sleep(5)
            told.append((_rmc_utc(gnss.epoch(gnss.drive_s())), runner.clock.now()))
        return told

    base = VirtualTime.starting_now(50.0, wall=WALL)
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(base)) as loop_runner:
        told = loop_runner.run(run())
    for gnss_utc, bench_utc in told:
        assert abs((bench_utc - gnss_utc).total_seconds()) < 1.5, (gnss_utc, bench_utc)  # NMEA has 1/100 s
    assert told[1][0] - told[0][0] > timedelta(days=50)


def test_a_gnss_clock_source_must_tell_aware_times() -> None:
    sim = NmeaSimulator(utc=lambda: datetime(2030, 1, 1))  # naive: the mistake under test
    with pytest.raises(ValueError, match="timezone-aware"):
        sim.epoch(0.0)
