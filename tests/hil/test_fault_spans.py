"""Injected faults become labelled spans with their end: the report draws and lists what they were."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from hil.actions import ACTION_TABLE, fault_span
from hil.run_context import Bench, RunContext, ScenarioClock
from hil.scenario import Scenario, Step
from hil.scenario_agent_config import ScenarioAgentConfig
from hil.timeline import EventKind, SpanKind, Timeline
from tcu.config import QueueConfig


class FakeTime:
    """Scenario time that moves only when a step holds: spans get exact, checkable bounds."""

    def __init__(self) -> None:
        self.t = 10.0

    def now(self) -> float:
        return self.t

    async def hold(self, seconds: float) -> None:
        self.t += seconds


class FakeConfig:
    """The scenario's agent config: each write remembered with its [queue] table."""

    def __init__(self) -> None:
        self.queues: list[QueueConfig | None] = []

    def write(self, _bench: object, *, drain_only: bool = False, queue: QueueConfig | None = None) -> None:
        self.queues.append(queue)


class FakeAgent:
    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.calls: list[tuple[str, float]] = []

    async def kill(self) -> None:
        self.calls.append(("kill", self.time.t))

    async def stop(self) -> None:
        self.time.t += 0.3  # an orderly stop takes a moment
        self.calls.append(("stop", self.time.t))

    async def start(self) -> None:
        self.calls.append(("start", self.time.t))


def fake_run(tmp_path: Path, **bench: Any) -> RunContext:
    """A run on a fake bench: `bench` holds the parts a step uses (default: an agent and a queue file)."""
    time = FakeTime()
    if not bench:
        outbox = tmp_path / "outbox.sqlite3"
        outbox.write_bytes(b"\0" * 100_000)
        bench = {"agent": FakeAgent(time), "layout": SimpleNamespace(data_dir=lambda _vin: tmp_path), "devices": {}}
    return RunContext(
        scenario=cast("Scenario", SimpleNamespace(vin="VIN1")),
        bench=cast("Bench", SimpleNamespace(**bench)),
        time=cast("ScenarioClock", time),
        timeline=Timeline(scenario="x"),
        agent_config=cast("ScenarioAgentConfig", FakeConfig()),
    )


def agent_events(run: RunContext) -> list[str]:
    return [event.label for event in run.timeline.events if event.kind is EventKind.AGENT]


def test_agent_kill_is_a_fault_span_and_an_agent_down_span(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    asyncio.run(ACTION_TABLE["agent_kill"](run, Step(at=10, do="agent_kill", args={"restart_after_s": 3})))
    [fault] = run.timeline.spans_of(SpanKind.FAULT)
    assert (fault.label, fault.start, fault.end, fault.detail) == (
        "agent_kill",
        10.0,
        13.0,
        "SIGKILL, restarted after 3 s",
    )
    [down] = run.timeline.spans_of(SpanKind.AGENT_DOWN)
    assert (down.label, down.start, down.end) == ("agent_kill: SIGKILL", 10.0, 13.0)


def test_disk_full_says_it_restarted_the_agent_twice(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    asyncio.run(ACTION_TABLE["disk_full"](run, Step(at=10, do="disk_full", args={"for_s": 10})))
    [fault] = run.timeline.spans_of(SpanKind.FAULT)
    assert (fault.label, fault.start, fault.end) == ("disk_full", 10.0, 20.6)
    assert "restarted twice" in fault.detail
    restarts = run.timeline.spans_of(SpanKind.AGENT_DOWN)
    assert [(s.label, s.start, s.end) for s in restarts] == [
        ("disk_full: restart 1 of 2 (queue capped at 108192 bytes)", 10.0, 10.3),
        ("disk_full: restart 2 of 2 (queue uncapped)", 20.3, 20.6),
    ]
    assert [c for c, _ in run.bench.agent.calls] == ["stop", "start", "stop", "start"]
    # The first start with the queue capped at that size, the second uncapped.
    assert cast("FakeConfig", run.agent_config).queues == [QueueConfig(max_bytes=108192), None]
    assert agent_events(run) == [
        "agent stopped",
        "agent restarted",
        "agent stopped",
        "agent restarted",
    ]


def test_a_fault_cut_short_still_has_its_end_and_says_why(tmp_path: Path) -> None:
    run = fake_run(tmp_path)

    def outage() -> None:
        with fault_span(run, "broker_outage", "broker stopped"):
            cast("FakeTime", run.time).t += 4.0
            raise OSError("broker gone")

    with pytest.raises(OSError, match="broker gone"):
        outage()
    [span] = run.timeline.spans
    assert (span.label, span.start, span.end) == ("broker_outage", 10.0, 14.0)
    assert span.detail == "broker stopped; cut short: OSError: broker gone"


@pytest.mark.parametrize(
    ("do", "args", "label", "end"),
    [
        ("tunnel", {"for_s": 18}, "tunnel", 28.0),
        ("latency", {"for_s": 5, "latency_s": 0.25, "loss": 0.1}, "latency", 15.0),
    ],
)
def test_network_faults_are_spans(tmp_path: Path, do: str, args: dict[str, Any], label: str, end: float) -> None:
    netem = SimpleNamespace(cut=lambda: None, restore=lambda: None, latency_s=0.0, loss=0.0)
    run = fake_run(tmp_path, netem=netem)
    asyncio.run(ACTION_TABLE[do](run, Step(at=10, do=do, args=args)))
    [span] = run.timeline.spans_of(SpanKind.FAULT)
    assert (span.label, span.start, span.end) == (label, 10.0, end)
    assert (netem.latency_s, netem.loss) == (0.0, 0.0)  # restored
