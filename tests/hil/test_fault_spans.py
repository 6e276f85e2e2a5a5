"""Injected faults become labelled spans with their end: the report draws and lists what they were."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hil.actions import ACTION_TABLE, fault_span
from hil.scenario import Step
from hil.timeline import EventKind, SpanKind, Timeline


class FakeRunner:
    """Scenario time that moves only when a step holds: spans get exact, checkable bounds."""

    def __init__(self, tmp_path: Path) -> None:
        self.t = 10.0
        self.timeline = Timeline(scenario="x")
        self.scenario = SimpleNamespace(vin="VIN1")
        self.events: list[tuple[EventKind, str, str]] = []
        self.configs: list[str] = []
        self.tmp_path = tmp_path

    def now(self) -> float:
        return self.t

    async def hold(self, seconds: float) -> None:
        self.t += seconds

    def event(self, kind: EventKind, label: str, detail: str = "") -> None:
        self.events.append((kind, label, detail))

    def agent_config(self, _layout: object, _devices: object, *, extra: str = "") -> None:
        self.configs.append(extra)


class FakeAgent:
    def __init__(self, runner: FakeRunner) -> None:
        self.runner = runner
        self.calls: list[tuple[str, float]] = []

    async def kill(self) -> None:
        self.calls.append(("kill", self.runner.t))

    async def stop(self) -> None:
        self.runner.t += 0.3  # an orderly stop takes a moment
        self.calls.append(("stop", self.runner.t))

    async def start(self) -> None:
        self.calls.append(("start", self.runner.t))


def _bench(runner: FakeRunner) -> Any:
    outbox = runner.tmp_path / "outbox.sqlite3"
    outbox.write_bytes(b"\0" * 100_000)
    return SimpleNamespace(
        agent=FakeAgent(runner), layout=SimpleNamespace(data_dir=lambda _vin: runner.tmp_path), devices={}
    )


def test_agent_kill_is_a_fault_span_and_an_agent_down_span(tmp_path: Path) -> None:
    runner = FakeRunner(tmp_path)
    asyncio.run(
        ACTION_TABLE["agent_kill"](runner, _bench(runner), Step(at=10, do="agent_kill", args={"restart_after_s": 3}))
    )
    [fault] = runner.timeline.spans_of(SpanKind.FAULT)
    assert (fault.label, fault.start, fault.end, fault.detail) == (
        "agent_kill",
        10.0,
        13.0,
        "SIGKILL, restarted after 3 s",
    )
    [down] = runner.timeline.spans_of(SpanKind.AGENT_DOWN)
    assert (down.label, down.start, down.end) == ("agent_kill: SIGKILL", 10.0, 13.0)


def test_disk_full_says_it_restarted_the_agent_twice(tmp_path: Path) -> None:
    runner = FakeRunner(tmp_path)
    bench = _bench(runner)
    asyncio.run(ACTION_TABLE["disk_full"](runner, bench, Step(at=10, do="disk_full", args={"for_s": 10})))
    [fault] = runner.timeline.spans_of(SpanKind.FAULT)
    assert (fault.label, fault.start, fault.end) == ("disk_full", 10.0, 20.6)
    assert "restarted twice" in fault.detail
    restarts = runner.timeline.spans_of(SpanKind.AGENT_DOWN)
    assert [(s.label, s.start, s.end) for s in restarts] == [
        ("disk_full: restart 1 of 2 (queue capped at 108192 bytes)", 10.0, 10.3),
        ("disk_full: restart 2 of 2 (queue uncapped)", 20.3, 20.6),
    ]
    assert [c for c, _ in bench.agent.calls] == ["stop", "start", "stop", "start"]
    assert [label for kind, label, _ in runner.events if kind is EventKind.AGENT] == [
        "agent stopped",
        "agent restarted",
        "agent stopped",
        "agent restarted",
    ]


def test_a_fault_cut_short_still_has_its_end_and_says_why(tmp_path: Path) -> None:
    runner = FakeRunner(tmp_path)

    def outage() -> None:
        with fault_span(runner, "broker_outage", "broker stopped"):
            runner.t += 4.0
            raise OSError("broker gone")

    with pytest.raises(OSError, match="broker gone"):
        outage()
    [span] = runner.timeline.spans
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
    runner = FakeRunner(tmp_path)
    netem = SimpleNamespace(cut=lambda: None, restore=lambda: None, latency_s=0.0, loss=0.0)
    bench = SimpleNamespace(netem=netem)
    asyncio.run(ACTION_TABLE[do](runner, bench, Step(at=10, do=do, args=args)))
    [span] = runner.timeline.spans_of(SpanKind.FAULT)
    assert (span.label, span.start, span.end) == (label, 10.0, end)
    assert (netem.latency_s, netem.loss) == (0.0, 0.0)  # restored
