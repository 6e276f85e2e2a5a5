"""The bench tells the truth about a run: what it checks can fail, what it plots happened, what it
says about the agent and the clock is so, and watching a fast run does not load the machine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pynmeagps import NMEAReader

from backend_stub.store import BackendStore, StoredRecord
from hil.actions import ACTION_TABLE
from hil.backend_series import signal_series
from hil.devices.nmea_sim import NmeaSimulator
from hil.expectations import evaluate
from hil.fixtures.agents import AgentFactory
from hil.fixtures.link import BenchLink
from hil.fixtures.no_loss import check_no_loss
from hil.layout import BenchLayout
from hil.run_context import Bench, RunContext, ScenarioClock
from hil.runner import ScenarioRunner
from hil.sampler import (
    BACKEND_EVERY_REAL_S,
    BACKEND_EVERY_S,
    POLL_REAL_S,
    POLL_S,
    BenchSampler,
    StatusTracker,
    bench_spans,
    poll_intervals,
)
from hil.scenario import Scenario, Step, library, load_scenario, parse_scenario
from hil.scenario_agent_config import ScenarioAgentConfig
from hil.timeline import EventKind, ExpectationResult, SpanKind, Timeline
from tcu.errors import ConfigError
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.virtual_time import VirtualClock, VirtualTime, VirtualTimeLoop
from tests.conftest import VIN
from tests.hil.evidence_builder import START, bench_records

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
    step = parse_scenario(MINIMAL + '[[step]]\nat = 3\ndo = "park"\nfor_s = 2\n').steps[0]
    assert (step.at, step.args) == (3.0, {"for_s": 2})


# -- advance_calendar: an agent-down span, and a GNSS that follows the calendar -----------------------


class FakeTime:
    """Scenario time that moves only when a step holds or the agent stops; the calendar as an offset."""

    def __init__(self) -> None:
        self.t = 20.0
        self.calendar_s = 0.0
        self.wall = SimpleNamespace(now=lambda: WALL + timedelta(seconds=self.t + self.calendar_s))

    def now(self) -> float:
        return self.t

    async def hold(self, seconds: float) -> None:
        self.t += seconds

    def advance_calendar(self, seconds: float) -> None:
        self.calendar_s += seconds


class FakeAgent:
    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.calls: list[tuple[str, float, float]] = []  # (call, scenario s, calendar offset then)

    async def stop(self) -> None:
        self.time.t += 0.4  # an orderly stop takes a moment
        self.calls.append(("stop", self.time.t, self.time.calendar_s))

    async def start(self) -> None:
        self.calls.append(("start", self.time.t, self.time.calendar_s))
        self.time.t += 0.2


def test_advance_calendar_is_an_agent_down_span_the_report_names() -> None:
    time = FakeTime()
    agent = FakeAgent(time)
    run = RunContext(
        scenario=cast("Scenario", SimpleNamespace(vin=VIN)),
        bench=cast("Bench", SimpleNamespace(agent=agent)),
        time=cast("ScenarioClock", time),
        timeline=Timeline(scenario="x"),
        agent_config=cast("ScenarioAgentConfig", None),
    )
    step = Step(at=20, do="advance_calendar", args={"days": 50})
    asyncio.run(ACTION_TABLE["advance_calendar"](run, step))
    # The car slept through the move: stopped on the old date, woken on the new one.
    assert agent.calls == [("stop", 20.4, 0.0), ("start", 20.4, 50 * 86400.0)]
    [down] = run.timeline.spans_of(SpanKind.AGENT_DOWN)
    assert (down.label, down.start, down.end) == ("advance_calendar: asleep, calendar +50 d", 20.0, 20.6)
    assert [event.label for event in run.timeline.events if event.kind is EventKind.AGENT] == [
        "agent stopped",
        "agent restarted",
    ]
    # What the sampler saw (the process not running from 20.4 to 20.6) is that step's, not unexplained.
    tracker = StatusTracker()
    for t, running in ((19.0, True), (20.45, False), (20.55, False), (20.7, True)):
        tracker.observe(t, running=running, status=None, to_scenario=lambda _w: 0.0, stored=0, queue_on_disk=lambda: 0)
    spans = bench_spans(tracker, 30.0, 32.0, explicit=run.timeline.spans_of(SpanKind.AGENT_DOWN))
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
        runner.time = ScenarioClock(VirtualClock(loop.virtual_time))
        await asyncio.sleep(30)  # the agent's start-up: the bench's clock runs, scenario time does not yet
        runner.time.begin()
        gnss = runner.devices(DriveCycle())["gnss"]
        assert isinstance(gnss, NmeaSimulator)
        told = []
        for move_days in (0, 50):
            runner.time.advance_calendar(move_days * 86400.0)
            await asyncio.sleep(5)
            told.append((_rmc_utc(gnss.epoch(gnss.drive_s())), runner.time.wall.now()))
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


# -- assert_no_loss: nothing to check is no pass ----------------------------------------------------


def test_check_no_loss_fails_for_a_vin_the_backend_never_heard_of(tmp_path: Path) -> None:
    store = BackendStore(tmp_path / "backend.sqlite3")
    try:
        with pytest.raises(AssertionError, match=r"VIN NOSUCHVIN0000000X: nothing to check: the backend holds no"):
            check_no_loss(store, "NOSUCHVIN0000000X")
        with pytest.raises(AssertionError, match="the car issued none"):
            check_no_loss(store, "NOSUCHVIN0000000X", issued_through=0)
        assert check_no_loss(store, "NOSUCHVIN0000000X", allow_empty=True).highest == 0
        with pytest.raises(AssertionError, match=r"LOST 2 seq\(s\)"):  # issued, never stored: a loss, not empty
            check_no_loss(store, "NOSUCHVIN0000000X", issued_through=2, allow_empty=True)
    finally:
        store.close()


async def test_the_factorys_assert_no_loss_fails_for_a_vin_it_never_ran_or_a_car_that_issued_nothing(
    tmp_path: Path,
) -> None:
    with bench_records(tmp_path / "bench") as records:
        factory = AgentFactory(
            bench=BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:1"),
            backend=records.backend,
            link=cast("BenchLink", None),  # no agent is started: the link is never used
            folder=tmp_path / "vehicles",
        )
        with pytest.raises(
            AssertionError,
            match=r"nothing to check: no agent of this test ran VIN NOSUCHVIN0000000X \(VINs run: none\); "
            r"pass allow_empty=True",
        ):
            await factory.assert_no_loss("NOSUCHVIN0000000X", timeout=0.1)
        assert (await factory.assert_no_loss("NOSUCHVIN0000000X", timeout=0.1, allow_empty=True)).highest == 0
        # A car that ran and was stopped before it issued a record.
        factory._configured.add(VIN)
        factory._last_issued[VIN] = (0, b"epoch")
        with pytest.raises(AssertionError, match=rf"the agent for VIN {VIN} has issued no record yet"):
            await factory.assert_no_loss(VIN, timeout=0.1)
        # One that issued three: they were all stored, so it passes (the honest case is unchanged).
        for second in (1, 2, 3):
            records.telemetry(second, second + 0.1, {"Vehicle.Speed": 0.0})
        factory._last_issued[VIN] = (3, records.backend.store.current_epoch(VIN))
        assert (await factory.assert_no_loss(VIN, timeout=0.1)).stored == 3


# -- the sampler on a fast bench ---------------------------------------------------------------------


class CountingSampler(BenchSampler):
    """The sampler's pacing, with its looks counted instead of made."""

    def __init__(self, run: Any) -> None:
        super().__init__(run)
        self.polls = 0
        self.backend_looks = 0

    def poll(self) -> None:
        self.polls += 1

    async def _backend_events(self) -> None:
        self.backend_looks += 1


@pytest.mark.parametrize("scale", [100.0, 1000.0])
def test_at_a_high_scale_the_sampler_looks_a_bounded_number_of_times_a_real_second(scale: float) -> None:
    """0.2 scenario seconds between looks would be 500 looks a real second at scale 100 (5000 at 1000),
    each parsing status.json and querying SQLite: the looks are at most 20 a real second, the backend's
    at most 2."""

    async def run() -> tuple[CountingSampler, float]:
        loop = asyncio.get_running_loop()
        run = SimpleNamespace(time=SimpleNamespace(hold=asyncio.sleep))
        sampler = CountingSampler(run)
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(scale * 0.6):  # 0.6 real seconds
                await sampler.run()
        assert loop.time() > 0
        return sampler, time.monotonic() - began

    base = VirtualTime.starting_now(scale, wall=WALL)
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(base)) as loop_runner:
        sampler, real_s = loop_runner.run(run())
    assert 0.5 < real_s < 3.0
    assert 2 <= sampler.polls <= real_s / POLL_REAL_S + 2, (sampler.polls, real_s)
    assert 1 <= sampler.backend_looks <= real_s / BACKEND_EVERY_REAL_S + 2, (sampler.backend_looks, real_s)


def test_at_real_time_the_sampler_keeps_its_scenario_intervals() -> None:
    async def intervals() -> tuple[float, float]:
        return poll_intervals()

    assert asyncio.run(intervals()) == (POLL_S, BACKEND_EVERY_S)


def test_the_store_counts_a_vehicles_records_in_sql(tmp_path: Path) -> None:
    with bench_records(tmp_path / "bench") as records:
        store = records.backend.store
        assert store.count(VIN) == 0
        for second in (1, 2, 3):
            records.telemetry(second, second + 0.1, {"Vehicle.Speed": 0.0})
        assert store.count(VIN) == len(store.seqs(VIN)) == 3
        assert store.count(VIN, epoch=b"another queue") == 0


# -- the doors/locks lane has what the door events say ------------------------------------------------

DOOR = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"
LOCK = "Vehicle.Body.CentralLock.State"


def test_a_door_opened_and_closed_between_two_snapshots_is_in_the_series_as_signal_edge_sees_it(
    tmp_path: Path,
) -> None:
    with bench_records(tmp_path / "bench") as records:
        for second in range(1, 7):  # snapshots once a second: the door reads closed in every one
            records.telemetry(second, second + 0.05, {DOOR: False, LOCK: "UNLOCKED"})
        records.door_event(DOOR, True, changed_s=3.3, received_s=4.4)  # open 0.4 s, between 3 and 4
        records.door_event(DOOR, False, changed_s=3.7, received_s=4.8)
        series = signal_series(records.backend.store.records(VIN), lambda moment: (moment - START).total_seconds())
        scenario = parse_scenario(
            MINIMAL + f'[[expect]]\ncheck = "signal_edge"\npath = "{DOOR}"\nfrom = false\nto = true\nnear = 3.3\n'
        )
        (edge,) = evaluate(scenario, records.evidence())
    assert series[DOOR] == [
        (1.0, False),
        (2.0, False),
        (3.0, False),
        (3.299, False),  # what the open event says it was until then
        (3.3, True),
        (3.699, True),
        (3.7, False),
        (4.0, False),
        (5.0, False),
        (6.0, False),
    ]
    assert [t for t, _ in series[LOCK]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # telemetry alone: at its interval
    assert edge.passed, edge
    opened = [t for (t, v), (_, before) in zip(series[DOOR][1:], series[DOOR], strict=False) if v and not before]
    assert opened == [3.3]  # the plot shows the edge the check measured


def test_door_events_that_cannot_be_plotted_are_left_out() -> None:
    def event(body: dict[str, Any]) -> StoredRecord:
        return StoredRecord(vin=VIN, seq=1, kind="event", created=START, received=START, body=body)

    bad = [
        {"type": "door", "path": DOOR, "value": True, "changed_at": True},  # a bool is no time stamp
        {"type": "door", "path": DOOR, "value": [1], "changed_at": 5},  # a list is no door state
        {"type": "lock", "path": 7, "value": "LOCKED", "changed_at": 5},
    ]
    assert signal_series([event(body) for body in bad], lambda _m: 0.0) == {}
    good = event({"type": "lock", "path": LOCK, "value": "LOCKED", "changed_at": 5000})  # no `previous`
    assert signal_series([good], lambda m: m.timestamp()) == {LOCK: [(5.0, "LOCKED")]}


# -- msd_received, as each library scenario configures it, catches a stale MSD position ---------------


def _crash_scenarios() -> list[str]:
    return sorted(
        name
        for name, path in library().items()
        if any(e.check == "msd_received" for e in load_scenario(path).expectations)
    )


def _msd_check(name: str, tmp_path: Path, msd_from_s: float) -> ExpectationResult:
    """The scenario's own msd_received on a PSAP that decoded an MSD carrying the drive's position at
    scenario second `msd_from_s` (the drive as the scenario's bench runs it, parked windows and all)."""
    scenario = load_scenario(library()[name])
    only = replace(scenario, expectations=tuple(e for e in scenario.expectations if e.check == "msd_received"))
    cycle = DriveCycle(parked=scenario.parked_windows())

    def position_at(scenario_s: float) -> tuple[float, float]:
        sample = cycle.at(scenario_s)
        return sample.latitude, sample.longitude

    crash = next(s for s in scenario.steps if s.do in ("crash", "sos"))
    with bench_records(tmp_path / f"bench-{msd_from_s}") as records:
        records.msd(crash.at + 4.0, position_at(msd_from_s))
        evidence = replace(records.evidence(steps=scenario.steps), position_at=position_at)
        (result,) = evaluate(only, evidence)
    return result


def test_the_library_has_crash_scenarios_to_check() -> None:
    assert {"crash_ecall", "ecall_t2", "measure_crash", "payment_default"} <= set(_crash_scenarios())


@pytest.mark.parametrize("name", _crash_scenarios())
def test_an_msd_carrying_the_position_of_10_s_before_the_crash_fails_msd_received(name: str, tmp_path: Path) -> None:
    """At 12-20 s the drive had gone at most 69 m and the limit was 200 m: a stale MSD passed. Each crash
    now comes while the car moves fast enough that 10 s of staleness is more than twice the limit."""
    crash = next(s for s in load_scenario(library()[name]).steps if s.do in ("crash", "sos"))
    stale = _msd_check(name, tmp_path, crash.at - 10.0)
    assert not stale.passed, stale
    off_m, limit_m = float(stale.measured.removesuffix(" m")), float(stale.limit.removeprefix("<= ").removesuffix(" m"))
    assert off_m > 2 * limit_m, (stale.measured, stale.limit)
    assert limit_m <= 50
    # What an honest bench gives passes: the MSD's position is the last 1 Hz fix before the trigger.
    for fix_s in (crash.at - 1.0, crash.at):
        honest = _msd_check(name, tmp_path, fix_s)
        assert honest.passed, honest
