"""What one scenario run shares between the runner (`hil.runner`), its steps (`hil.actions`, `hil.billing`,
`hil.ownership`) and its sampler (`hil.sampler`): the bench, the scenario's time, the timeline.

The runner builds a `RunContext` once the bench is up and hands it to each; none of them reaches into
another's members.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backend_stub.app import BackendStub
from hil.agent_process import AgentProcess
from hil.broker import Broker
from hil.devices.pty_device import PtyDevice
from hil.devices.replay import ReplayDevice
from hil.devices.slcan_sim import SlcanSimulator
from hil.layout import BenchLayout
from hil.netem import NetworkEmulator
from hil.scenario import Scenario
from hil.scenario_agent_config import ScenarioAgentConfig
from hil.timeline import Event, EventKind, Sample, Timeline
from tcu.config import QueueConfig
from tcu.errors import ConfigError
from tcu.virtual_time import VirtualClock


class ScenarioClock:
    """The scenario's time: seconds since scenario second 0 on the running loop (virtual under
    `hil.runner.run_scenario`), and the bench's wall clock, whose calendar a step may move on."""

    def __init__(self, wall: VirtualClock) -> None:
        self.wall = wall  # the bench's one clock, shared with the agent process and the backend
        self.start_wall = wall.now()  # the bench's wall time at scenario second 0
        self._start = math.inf  # before `begin`, the scenario stands at second 0 (the bench is starting)
        self._calendar: list[tuple[float, float]] = [(0.0, 0.0)]  # (scenario s, calendar offset s) from then on

    def begin(self) -> None:
        """Scenario second 0 is now (the agent is up)."""
        self._start = asyncio.get_running_loop().time()
        self.start_wall = self.wall.now()

    def now(self) -> float:
        """Seconds into the scenario; 0 during start-up."""
        return max(0.0, asyncio.get_running_loop().time() - self._start)

    async def until(self, scenario_s: float) -> None:
        delay = scenario_s - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def hold(self, scenario_s: float) -> None:
        await asyncio.sleep(scenario_s)

    def scenario_seconds(self, wall: datetime) -> float:
        """A wall time stamped by the agent or the backend (records, acks, MSDs) in scenario seconds.

        After an `advance_calendar` step the wall clock is ahead of scenario time by the calendar's move:
        a time is placed in the latest calendar period it fits in.
        """
        since_start = (wall - self.start_wall).total_seconds()
        for at_s, offset_s in reversed(self._calendar):
            if since_start - offset_s >= at_s:
                return since_start - offset_s
        return since_start

    def advance_calendar(self, seconds: float) -> None:
        """The calendar moves on by `seconds` now, without scenario time passing (a car parked for weeks)."""
        self.wall.advance_calendar(seconds)
        self._calendar.append((self.now(), self._calendar[-1][1] + seconds))


@dataclass
class Bench:
    """Everything one run owns; built by `ScenarioRunner.run`. `real_ports`: devices that are real
    adapters on these ports instead of virtual ones (bench mode)."""

    layout: BenchLayout
    broker: Broker
    netem: NetworkEmulator
    backend: BackendStub
    agent: AgentProcess
    devices: dict[str, PtyDevice] = field(default_factory=dict)
    real_ports: Mapping[str, str] = field(default_factory=dict)


class ByHandError(ConfigError):
    """A step the bench cannot do itself (its device is a real adapter): the engineer does it."""


@dataclass(eq=False, kw_only=True)
class RunContext:
    scenario: Scenario
    bench: Bench
    time: ScenarioClock
    timeline: Timeline
    agent_config: ScenarioAgentConfig
    on_event: Callable[[Event], None] = lambda _event: None
    on_sample: Callable[[Sample], None] = lambda _sample: None
    failed_steps: list[str] = field(default_factory=list)  # a fault never injected fails the run

    @property
    def outbox(self) -> Path:
        """The vehicle's queue file."""
        return self.bench.layout.data_dir(self.scenario.vin) / "outbox.sqlite3"

    @property
    def status_path(self) -> Path:
        return self.bench.layout.data_dir(self.scenario.vin) / "status.json"

    def event(self, kind: EventKind, label: str, detail: str = "") -> None:
        event = Event(t=round(self.time.now(), 2), kind=kind, label=label, detail=detail)
        self.timeline.events.append(event)
        self.on_event(event)

    def write_agent_config(self, *, drain_only: bool = False, queue: QueueConfig | None = None) -> Path:
        """(Re)write the scenario's agent config for the next start; see `ScenarioAgentConfig.write`."""
        return self.agent_config.write(self.bench, drain_only=drain_only, queue=queue)

    def can_bus(self) -> SlcanSimulator:
        """The virtual CAN device a body step drives."""
        device = self.bench.devices.get("can")
        if "can" in self.bench.real_ports:
            raise ByHandError(
                "this step drives the virtual CAN bus, but the CAN adapter is real "
                f"({self.bench.real_ports['can']}): do it on the bench"
            )
        if device is None:
            raise ConfigError(f'step needs the virtual CAN device: add "can" to {self.scenario.name}\'s devices')
        if isinstance(device, ReplayDevice):
            raise ConfigError(f"this step changes the CAN bus, but the bus replays {device.recording.name}")
        assert isinstance(device, SlcanSimulator)
        return device
