"""`tcu-hil run SCENARIO`: a whole bench for one scenario, run, watched, checked and reported.

In the runner's process: the virtual serial devices on ptys, the network between agent and broker
(hil.netem), the backend stub, the live view; in their own processes: Mosquitto (a local one when
installed, else the embedded broker in this process) and the agent, as on a Pi — so a step can
SIGKILL it. Steps run at their scenario time; after the last one the agent is stopped, a drain-only
agent (no sources) sends what was still queued, and the expectations are checked against the
backend. Every run writes its bench folder, the agent's log and the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from hil.actions import ACTION_TABLE, FAULTS, describe
from hil.agent_process import AgentProcess
from hil.broker import Broker, choose_broker, free_port
from hil.devices.elm327_sim import Elm327Simulator, Elm327Timing
from hil.devices.modem_sim import ModemSimulator
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.pty_device import PtyDevice
from hil.devices.replay import ReplayDevice
from hil.devices.slcan_sim import SlcanSimulator
from hil.expectations import Evidence, evaluate
from hil.layout import BenchLayout
from hil.netem import NetworkEmulator
from hil.sampler import BenchSampler, queue_on_disk
from hil.scenario import Scenario, Step, toml_lines
from hil.timeline import Event, EventKind, ExpectationResult, Sample, Timeline
from tcu.errors import ConfigError
from tcu.status import read_status
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.virtual_time import VirtualClock, VirtualTime, VirtualTimeLoop, loop_scale, real_seconds

_LOGGER = logging.getLogger(__name__)

MODEM = "modem"  # the eCall modem: a device of every legal-eCall scenario, not a telematics source
UPLINK = "\n[uplink]\nreconnect_base_s = 0.2\nreconnect_cap_s = 2.0\nack_timeout_s = 10\n"


@dataclass
class Bench:
    """Everything one run owns; built by `ScenarioRunner.run`."""

    layout: BenchLayout
    broker: Broker
    netem: NetworkEmulator
    backend: BackendStub
    agent: AgentProcess
    devices: dict[str, PtyDevice] = field(default_factory=dict)


class ScenarioRunner:
    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        *,
        broker_choice: Literal["auto", "mosquitto", "embedded"] = "auto",
        on_sample: Callable[[Sample], None] = lambda _s: None,
        on_event: Callable[[Event], None] = lambda _e: None,
        real_ports: Mapping[str, str] | None = None,
        can_dbc: Sequence[Path] = (),
        can_mapping: Path | None = None,
    ) -> None:
        self.scenario = scenario
        # `tcu-hil run --dbc/--mapping` win over the scenario's [vehicle] dbc/mapping.
        self.can_dbc = tuple(can_dbc) or scenario.can_dbc
        self.can_mapping = can_mapping or scenario.can_mapping
        # Bench mode: these devices are real adapters on these ports instead of virtual ones.
        self.real_ports = dict(real_ports or {})
        self.workdir = workdir
        self._broker_choice = broker_choice
        self.on_sample = on_sample
        self._on_event = on_event
        self.timeline = Timeline(scenario=scenario.name, description=scenario.description)
        self._start = math.inf  # scenario second 0 is when the agent is up: before, the drive stands at 0
        # The bench's one clock, shared with the agent process; set when the run starts (see `run`).
        self.clock = VirtualClock(VirtualTime.starting_now(1.0))
        self.start_wall = self.clock.now()  # the bench's wall time at scenario second 0
        self._calendar: list[tuple[float, float]] = [(0.0, 0.0)]  # (scenario s, calendar offset s) from then on
        self.failed_steps: list[str] = []  # steps that raised: a fault never injected fails the run
        self._cycle = DriveCycle()

    # -- time ------------------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds into the scenario, on the bench's virtual time (`run_scenario`); 0 during start-up."""
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
        self.clock.advance_calendar(seconds)
        self._calendar.append((self.now(), self._calendar[-1][1] + seconds))

    def event(self, kind: EventKind, label: str, detail: str = "") -> None:
        event = Event(t=round(self.now(), 2), kind=kind, label=label, detail=detail)
        self.timeline.events.append(event)
        self._on_event(event)

    # -- building the bench ----------------------------------------------------------------------

    def _devices(self, cycle: DriveCycle) -> dict[str, PtyDevice]:
        ttys = self.workdir / "tty"
        ttys.mkdir(parents=True, exist_ok=True)
        factories: dict[str, Callable[[], PtyDevice]] = {
            "obd": lambda: Elm327Simulator(  # the car's own VIN over mode 09, as the agent is configured
                cycle=cycle,
                elapsed=self.now,
                timing=Elm327Timing.instant(),
                link_path=str(ttys / "obd"),
                vin=self.scenario.vin,
            ),
            "can": lambda: self._can_device(cycle, str(ttys / "can")),
            # GNSS tells the time: the run's clock, read at each epoch (an advance_calendar moves it on),
            # or every position would be hours or weeks old to the agent (and untrusted).
            "gnss": lambda: NmeaSimulator(
                cycle=cycle, elapsed=self.now, utc=self.clock.now, link_path=str(ttys / "gnss")
            ),
        }
        return {name: factories[name]() for name in self.scenario.devices if name not in self.real_ports}

    def _can_device(self, cycle: DriveCycle, link_path: str) -> SlcanSimulator:
        drive = self.scenario.drive
        if drive is None:
            return SlcanSimulator(cycle=cycle, elapsed=self.now, link_path=link_path)
        # The recording is the drive; its timing is the loop's, so virtual time speeds it up too.
        return ReplayDevice(
            drive.recording, speed=drive.speed, loop=drive.loop, channel=drive.channel, link_path=link_path
        )

    def agent_config(
        self, layout: BenchLayout, devices: dict[str, PtyDevice], *, drain_only: bool = False, extra: str = ""
    ) -> Path:
        """The scenario's agent config; `drain_only`: no sources, it only sends what is queued."""
        scenario = self.scenario
        ports = {name: device.path for name, device in devices.items()} | self.real_ports
        sources = "".join(
            f'\n[sources.{name}]\nport = "{path}"\n' + (self._can_files() if name == "can" else "")
            for name, path in ports.items()
            if name != MODEM and not drain_only
        )
        ecall = (
            f'[ecall]\nlegal_ecall = true\nport = "{ports[MODEM]}"\n'
            if MODEM in ports
            else "[ecall]\nlegal_ecall = false\n"
        ) + toml_lines(scenario.ecall_settings)
        return layout.write_agent_config(
            scenario.vin,
            name=f"agent-{scenario.vin}-drain.toml" if drain_only else None,
            simulation=not scenario.devices and not drain_only,
            telemetry_interval_s=scenario.telemetry_interval_s,
            extra=UPLINK + sources + extra,
            # A tunnel black-holes the link: keepalive is how the agent notices. paho and Mosquitto keep
            # real time, so the keepalive is as short as MQTT allows on a fast bench.
            keepalive_s=max(1, round(3 / loop_scale())),
            ecall=ecall,
        )

    # -- running ---------------------------------------------------------------------------------

    def _can_files(self) -> str:
        """`dbc`/`mapping` lines of `[sources.can]` (absolute: the agent's config lives elsewhere)."""
        lines = ""
        if self.can_dbc:
            lines += "dbc = [" + ", ".join(json.dumps(str(p.resolve())) for p in self.can_dbc) + "]\n"
        if self.can_mapping is not None:
            lines += f"mapping = {json.dumps(str(self.can_mapping.resolve()))}\n"
        return lines

    async def run(self) -> Timeline:
        """Run on the running loop's time: virtual under `run_scenario`, real on an ordinary loop."""
        scenario = self.scenario
        loop = asyncio.get_running_loop()
        if isinstance(loop, VirtualTimeLoop):
            self.clock = VirtualClock(loop.virtual_time)
        elif scenario.time_scale != 1:
            _LOGGER.warning("%s: an ordinary event loop keeps real time; time_scale ignored", scenario.name)
        broker = choose_broker(self.workdir, self._broker_choice)
        await broker.start()
        try:
            async with NetworkEmulator(upstream_port=broker.port) as netem:
                layout = BenchLayout(root=self.workdir / "bench", broker_url=broker.url, protocol=broker.protocol)
                layout.create_backend()
                # A bench retries remote measures within seconds, not the field's minutes.
                psap_port = free_port()
                layout.backend_config.write_text(
                    layout.backend_config.read_text()
                    + "\n[measures]\nretry_base_s = 2\nretry_cap_s = 10\n"
                    + f"\n[psap]\nport = {psap_port}\n"
                    + toml_lines({"voice_s": 10} | scenario.psap_settings)
                )
                cycle = DriveCycle(parked=scenario.parked_windows())
                self._cycle = cycle
                devices = self._devices(cycle)
                if scenario.legal_ecall and MODEM not in self.real_ports:  # calls go to the backend's PSAP
                    devices[MODEM] = ModemSimulator(
                        psap_address=("127.0.0.1", psap_port), link_path=str(self.workdir / "tty" / "modem")
                    )
                async with contextlib.AsyncExitStack() as stack:
                    for device in devices.values():
                        await stack.enter_async_context(device)
                    layout.add_vehicle(scenario.vin)  # keys and enrolment; the config is the scenario's
                    registered = self.clock.now().date() - timedelta(days=scenario.first_registration_days_ago)
                    layout.set_legal_ecall(scenario.vin, scenario.legal_ecall, first_registration=registered)
                    config = self.agent_config(layout, devices)
                    env = {"TCU_BROKER_URL": netem.url}
                    agent = AgentProcess(config, env=env, log=self.workdir / "agent.log", clock=self.clock)
                    backend = BackendStub(load_backend_config(layout.backend_config, env={}), clock=self.clock)
                    bench = Bench(
                        layout=layout, broker=broker, netem=netem, backend=backend, agent=agent, devices=devices
                    )
                    await self._run_bench(bench)
        finally:
            await broker.stop()
        return self.timeline

    async def _run_bench(self, bench: Bench) -> None:
        scenario = self.scenario
        async with asyncio.TaskGroup() as tasks:
            backend_task = tasks.create_task(bench.backend.run(), name="backend")
            await asyncio.wait_for(bench.backend.service.connected.wait(), real_seconds(15))
            startup_s = await self._start_up(bench)
            self._start = asyncio.get_running_loop().time()
            self.start_wall = self.clock.now()
            self.event(EventKind.ACTION, "start", f"bench start-up took {startup_s:.1f} s: the agent is up")
            sampler = BenchSampler(self, bench, agent_started=-startup_s)
            sampling = tasks.create_task(sampler.run(), name="sampler")
            for step in scenario.steps:
                await self.until(step.at)
                self.event(EventKind.FAULT if step.do in FAULTS else EventKind.ACTION, step.do, describe(step))
                tasks.create_task(self._perform(bench, step), name=f"step-{step.do}@{step.at}")
            await self.until(scenario.duration_s)
            sampler.begin_drain()
            await bench.agent.stop()
            if isinstance(replay := bench.devices.get("can"), ReplayDevice):
                self.event(EventKind.ACTION, "replay", replay.summary())
            self.event(EventKind.ACTION, "end", "agent stopped; draining what it had queued")
            await self._drain(bench)
            sampling.cancel()
            sampler.finish()  # the phases, the agent's down times, every signal and the eCall from the backend
            self.timeline.expectations = evaluate(scenario, self._evidence(bench)) + self._steps_result()
            backend_task.cancel()

    async def _start_up(self, bench: Bench) -> float:
        """Start the agent and wait for its link: a Python process starts in real time, which on a fast
        bench is many scenario seconds, so the scenario's clock starts only once the agent is up."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        await bench.agent.start()
        status_path = bench.layout.data_dir(self.scenario.vin) / "status.json"
        try:
            async with asyncio.timeout(real_seconds(30)):
                while not _link_up(read_status(status_path)):  # noqa: ASYNC110 - another process writes it: no event
                    await asyncio.sleep(real_seconds(0.05))
        except TimeoutError:
            self.event(EventKind.FAULT, "start-up", "the agent had no link 30 real seconds after it was started")
        return loop.time() - began

    async def _drain(self, bench: Bench) -> None:
        """A drain-only agent (no sources) sends whatever the stopped one still had queued."""
        bench.netem.restore()
        config = self.agent_config(bench.layout, bench.devices, drain_only=True)
        drain = AgentProcess(
            config, env={"TCU_BROKER_URL": bench.netem.url}, log=self.workdir / "agent.log", clock=self.clock
        )
        await drain.start()
        status_path = bench.layout.data_dir(self.scenario.vin) / "status.json"
        outbox = bench.layout.data_dir(self.scenario.vin) / "outbox.sqlite3"
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(real_seconds(60)):
                empty_since: float | None = None
                # Empty for two seconds on end: the drain agent answers what the backend sends it at
                # connect (a retained order, a file) with records of its own, acknowledged a moment later.
                while empty_since is None or loop.time() - empty_since < real_seconds(_DRAIN_SETTLE_S):
                    await asyncio.sleep(real_seconds(0.5))
                    status = read_status(status_path)
                    if _link_up(status) and queue_on_disk(outbox) == 0:
                        empty_since = loop.time() if empty_since is None else empty_since
                    else:
                        empty_since = None
        await drain.stop()

    def _evidence(self, bench: Bench) -> Evidence:
        outbox = bench.layout.data_dir(self.scenario.vin) / "outbox.sqlite3"
        with contextlib.closing(sqlite3.connect(outbox)) as db:
            next_seq = int(db.execute("SELECT value FROM counters WHERE name='next_seq'").fetchone()[0])
            queued = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        cycle = self._cycle

        def position_at(scenario_s: float) -> tuple[float, float]:
            sample = cycle.at(scenario_s)
            return sample.latitude, sample.longitude

        # The drive cycle is where the car was when the virtual GNSS (or the agent's simulation) says so;
        # a real receiver on a bench reports where the bench is, which the runner cannot know.
        simulated = "gnss" not in self.real_ports and ("gnss" in self.scenario.devices or not self.scenario.devices)
        return Evidence(
            vin=self.scenario.vin,
            backend=bench.backend,
            next_seq=next_seq,
            queued=queued,
            events=self.timeline.events,
            steps=self.scenario.steps,
            scenario_seconds=self.scenario_seconds,
            position_at=position_at if simulated else None,
            personal_path=bench.layout.data_dir(self.scenario.vin) / "personal.cbor",
            time_scale=loop_scale(),  # the run's scale, whatever overrode the scenario's
        )

    # -- actions -----------------------------------------------------------------------------------

    async def _perform(self, bench: Bench, step: Step) -> None:
        refused = step.args.get("refused")  # the refusal this step expects, if any
        try:
            await ACTION_TABLE[step.do](self, bench, step)
        except ByHandError as exc:  # a bench with real adapters: the engineer does it, the run goes on
            self.event(EventKind.ACTION, f"{step.do}: by hand", str(exc))
        except Exception as exc:  # a failing action is a finding of the run, not a crash of the runner
            if refused is not None and str(refused) in str(exc):
                self.event(EventKind.ACTION, f"{step.do} refused, as expected", str(exc))
                return
            _LOGGER.exception("step %s at %s s failed", step.do, step.at)
            self._step_failed(step, f"{type(exc).__name__}: {exc}")
        else:
            if refused is not None:
                self._step_failed(step, f"expected a refusal containing {refused!r}, but it was accepted")

    def _step_failed(self, step: Step, why: str) -> None:
        self.event(EventKind.FAULT, f"{step.do} failed", why)
        self.failed_steps.append(f"{step.do} at {step.at:g} s: {why}")

    def _steps_result(self) -> list[ExpectationResult]:
        """A step that failed is a failed run, whatever the checks say: its fault was never injected."""
        if not self.failed_steps:
            return []
        detail = f"{len(self.failed_steps)} step(s) failed: " + "; ".join(self.failed_steps)
        return [ExpectationResult(name="every step performed", passed=False, detail=detail)]

    def can_bus(self, bench: Bench) -> SlcanSimulator:
        device = bench.devices.get("can")
        if "can" in self.real_ports:
            raise ByHandError(
                f"this step drives the virtual CAN bus, but the CAN adapter is real ({self.real_ports['can']}): "
                "do it on the bench"
            )
        if device is None:
            raise ConfigError(f'step needs the virtual CAN device: add "can" to {self.scenario.name}\'s devices')
        if isinstance(device, ReplayDevice):
            raise ConfigError(f"this step changes the CAN bus, but the bus replays {device.recording.name}")
        assert isinstance(device, SlcanSimulator)
        return device


class ByHandError(ConfigError):
    """A step the bench cannot do itself (its device is a real adapter): the engineer does it."""


_DRAIN_SETTLE_S = 2.0


def _link_up(status: dict[str, Any] | None) -> bool:
    return bool(status and isinstance(status.get("link"), dict) and status["link"].get("up"))


def run_scenario(runner: ScenarioRunner, *, time_scale: float | None = None) -> Timeline:
    """Run a scenario to its end on a loop of its own, on virtual time at the scenario's `time_scale`."""
    base = VirtualTime.starting_now(time_scale or runner.scenario.time_scale)
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(base)) as loop_runner:
        return loop_runner.run(runner.run())
