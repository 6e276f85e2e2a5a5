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
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from hil.actions import FAULTS, describe, perform, steps_result
from hil.agent_process import AgentProcess
from hil.broker import choose_broker, free_port
from hil.devices.elm327_sim import Elm327Simulator, Elm327Timing
from hil.devices.modem_sim import ModemSimulator, Network
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.pty_device import PtyDevice
from hil.devices.replay import ReplayDevice
from hil.devices.slcan_sim import SlcanSimulator
from hil.expectations import Evidence, evaluate
from hil.layout import BenchLayout
from hil.netem import NetworkEmulator
from hil.run_context import Bench, RunContext, ScenarioClock
from hil.sampler import BenchSampler, queue_on_disk
from hil.scenario import Scenario
from hil.scenario_agent_config import MODEM, ScenarioAgentConfig
from hil.sip_peers import free_udp_port
from hil.timeline import Event, EventKind, Sample, Timeline
from tcu.status import read_status
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.virtual_time import VirtualClock, VirtualTime, VirtualTimeLoop, loop_scale, real_seconds

_LOGGER = logging.getLogger(__name__)


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
        self.agent_config = ScenarioAgentConfig(
            scenario=scenario,
            can_dbc=tuple(can_dbc) or scenario.can_dbc,
            can_mapping=can_mapping or scenario.can_mapping,
        )
        # Bench mode: these devices are real adapters on these ports instead of virtual ones.
        self.real_ports = dict(real_ports or {})
        self.workdir = workdir
        self._broker_choice = broker_choice
        self._on_sample = on_sample
        self._on_event = on_event
        self.timeline = Timeline(scenario=scenario.name, description=scenario.description)
        # The bench's one clock, shared with the agent process; set again when the run starts (see `run`).
        self.time = ScenarioClock(VirtualClock(VirtualTime.starting_now(1.0)))
        self._cycle = DriveCycle()

    # -- building the bench ----------------------------------------------------------------------

    def devices(self, cycle: DriveCycle) -> dict[str, PtyDevice]:
        """The scenario's virtual devices (those not given as real ports), following `cycle`."""
        ttys = self.workdir / "tty"
        ttys.mkdir(parents=True, exist_ok=True)
        time = self.time
        factories: dict[str, Callable[[], PtyDevice]] = {
            "obd": lambda: Elm327Simulator(  # the car's own VIN over mode 09, as the agent is configured
                cycle=cycle,
                elapsed=time.now,
                timing=Elm327Timing.instant(),
                link_path=str(ttys / "obd"),
                vin=self.scenario.vin,
            ),
            "can": lambda: self.can_device(cycle, str(ttys / "can")),
            # GNSS tells the time: the run's clock, read at each epoch (an advance_calendar moves it on),
            # or every position would be hours or weeks old to the agent (and untrusted).
            "gnss": lambda: NmeaSimulator(
                cycle=cycle, elapsed=time.now, utc=time.wall.now, link_path=str(ttys / "gnss")
            ),
        }
        return {name: factories[name]() for name in self.scenario.devices if name not in self.real_ports}

    def can_device(self, cycle: DriveCycle, link_path: str) -> SlcanSimulator:
        drive = self.scenario.drive
        if drive is None:
            return SlcanSimulator(cycle=cycle, elapsed=self.time.now, link_path=link_path)
        # The recording is the drive; its timing is the loop's, so virtual time speeds it up too.
        return ReplayDevice(
            drive.recording, speed=drive.speed, loop=drive.loop, channel=drive.channel, link_path=link_path
        )

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> Timeline:
        """Run on the running loop's time: virtual under `run_scenario`, real on an ordinary loop."""
        scenario = self.scenario
        loop = asyncio.get_running_loop()
        if isinstance(loop, VirtualTimeLoop):
            self.time = ScenarioClock(VirtualClock(loop.virtual_time))
        elif scenario.time_scale != 1:
            _LOGGER.warning("%s: an ordinary event loop keeps real time; time_scale ignored", scenario.name)
        broker = choose_broker(self.workdir, self._broker_choice)
        await broker.start()
        try:
            async with NetworkEmulator(upstream_port=broker.port) as netem:
                layout = BenchLayout(root=self.workdir / "bench", broker_url=broker.url, protocol=broker.protocol)
                layout.create_backend()
                psap_port, sip_port = free_port(), free_udp_port()
                # The NG eCall's SIP goes straight to the backend's NG PSAP (no IMS core on this bench).
                self.agent_config = replace(self.agent_config, ng_proxy=f"127.0.0.1:{sip_port}")
                backend_config = replace(
                    layout.backend(),
                    # A bench retries remote measures within seconds, not the field's minutes.
                    measure_retry_base_s=2.0,
                    measure_retry_cap_s=10.0,
                    psap_port=psap_port,
                    psap_sip_port=sip_port,
                    psap_voice_s=10.0,
                )
                layout.write_backend_config(backend_config, more={"psap": scenario.psap_settings})
                cycle = DriveCycle(parked=scenario.parked_windows())
                self._cycle = cycle
                devices = self.devices(cycle)
                if scenario.legal_ecall and MODEM not in self.real_ports:  # calls go to the backend's PSAP
                    devices[MODEM] = ModemSimulator(
                        psap_address=("127.0.0.1", psap_port),
                        link_path=str(self.workdir / "tty" / "modem"),
                        network=Network(scenario.network),
                    )
                async with contextlib.AsyncExitStack() as stack:
                    for device in devices.values():
                        await stack.enter_async_context(device)
                    layout.add_vehicle(scenario.vin)  # keys and enrolment; the config is the scenario's
                    registered = self.time.wall.now().date() - timedelta(days=scenario.first_registration_days_ago)
                    layout.set_legal_ecall(scenario.vin, scenario.legal_ecall, first_registration=registered)
                    agent = AgentProcess(
                        layout.agent_config(scenario.vin),
                        env={"TCU_BROKER_URL": netem.url},
                        log=self.workdir / "agent.log",
                        clock=self.time.wall,
                    )
                    backend = BackendStub(load_backend_config(layout.backend_config, env={}), clock=self.time.wall)
                    bench = Bench(
                        layout=layout,
                        broker=broker,
                        netem=netem,
                        backend=backend,
                        agent=agent,
                        devices=devices,
                        real_ports=self.real_ports,
                    )
                    run = RunContext(
                        scenario=scenario,
                        bench=bench,
                        time=self.time,
                        timeline=self.timeline,
                        agent_config=self.agent_config,
                        on_event=self._on_event,
                        on_sample=self._on_sample,
                    )
                    run.write_agent_config()
                    await self._run_bench(run)
        finally:
            await broker.stop()
        return self.timeline

    async def _run_bench(self, run: RunContext) -> None:
        scenario, bench = self.scenario, run.bench
        async with asyncio.TaskGroup() as tasks:
            backend_task = tasks.create_task(bench.backend.run(), name="backend")
            await asyncio.wait_for(bench.backend.service.connected.wait(), real_seconds(15))
            startup_s = await self._start_up(run)
            run.time.begin()
            run.event(EventKind.ACTION, "start", f"bench start-up took {startup_s:.1f} s: the agent is up")
            sampler = BenchSampler(run, agent_started=-startup_s)
            sampling = tasks.create_task(sampler.run(), name="sampler")
            for step in scenario.steps:
                await run.time.until(step.at)
                run.event(EventKind.FAULT if step.do in FAULTS else EventKind.ACTION, step.do, describe(step))
                tasks.create_task(perform(run, step), name=f"step-{step.do}@{step.at}")
            await run.time.until(scenario.duration_s)
            sampler.begin_drain()
            await bench.agent.stop()
            if isinstance(replay := bench.devices.get("can"), ReplayDevice):
                run.event(EventKind.ACTION, "replay", replay.summary())
            run.event(EventKind.ACTION, "end", "agent stopped; draining what it had queued")
            await self._drain(run)
            sampling.cancel()
            await sampler.finish()  # the phases, the agent's down times, every signal and the eCall from the backend
            # On the backend's database thread: the checks read its stores, whose connections are that thread's.
            expectations = await bench.backend.operate(evaluate, scenario, self._evidence(run))
            self.timeline.expectations = expectations + steps_result(run)
            backend_task.cancel()

    async def _start_up(self, run: RunContext) -> float:
        """Start the agent and wait for its link: a Python process starts in real time, which on a fast
        bench is many scenario seconds, so the scenario's clock starts only once the agent is up."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        await run.bench.agent.start()
        try:
            async with asyncio.timeout(real_seconds(30)):
                while not _link_up(read_status(run.status_path)):  # noqa: ASYNC110 - another process writes it: no event
                    await asyncio.sleep(real_seconds(0.05))
        except TimeoutError:
            run.event(EventKind.FAULT, "start-up", "the agent had no link 30 real seconds after it was started")
        return loop.time() - began

    async def _drain(self, run: RunContext) -> None:
        """A drain-only agent (no sources) sends whatever the stopped one still had queued."""
        bench = run.bench
        bench.netem.restore()
        config = run.write_agent_config(drain_only=True)
        drain = AgentProcess(
            config, env={"TCU_BROKER_URL": bench.netem.url}, log=self.workdir / "agent.log", clock=run.time.wall
        )
        await drain.start()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(real_seconds(60)):
                empty_since: float | None = None
                # Empty for two seconds on end: the drain agent answers what the backend sends it at
                # connect (a retained order, a file) with records of its own, acknowledged a moment later.
                while empty_since is None or loop.time() - empty_since < real_seconds(_DRAIN_SETTLE_S):
                    await asyncio.sleep(real_seconds(0.5))
                    if _link_up(read_status(run.status_path)) and queue_on_disk(run.outbox) == 0:
                        empty_since = loop.time() if empty_since is None else empty_since
                    else:
                        empty_since = None
        await drain.stop()

    def _evidence(self, run: RunContext) -> Evidence:
        with contextlib.closing(sqlite3.connect(run.outbox)) as db:
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
            backend=run.bench.backend,
            next_seq=next_seq,
            queued=queued,
            events=self.timeline.events,
            steps=self.scenario.steps,
            scenario_seconds=run.time.scenario_seconds,
            position_at=position_at if simulated else None,
            personal_path=run.bench.layout.data_dir(self.scenario.vin) / "personal.cbor",
            time_scale=loop_scale(),  # the run's scale, whatever overrode the scenario's
        )


_DRAIN_SETTLE_S = 2.0


def _link_up(status: dict[str, Any] | None) -> bool:
    return bool(status and isinstance(status.get("link"), dict) and status["link"].get("up"))


def run_scenario(runner: ScenarioRunner, *, time_scale: float | None = None) -> Timeline:
    """Run a scenario to its end on a loop of its own, on virtual time at the scenario's `time_scale`."""
    base = VirtualTime.starting_now(time_scale or runner.scenario.time_scale)
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(base)) as loop_runner:
        return loop_runner.run(runner.run())
