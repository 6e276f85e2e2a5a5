"""A seeded chaos run: Mosquitto, the backend and the agent as separate processes, the agent's data
directory on a real 2 MB filesystem, and faults at moments drawn from `random.Random(seed)`.

Faults: the agent, the broker and the backend SIGKILLed (and restarted after a drawn pause, the broker
on the same port with its persistence), the broker SIGSTOPped for seconds (sockets open, nothing
answered: only keepalive tells), and the filesystem filled with ballast, freed later. Faults on
different processes overlap; two on the same one never do.

At the end the disk is free and every process up; the producing agent is stopped cleanly and a
drain-only agent (same data directory, no signal source) sends what is left. Then the backend is
audited (`hil.audit`): every sequence number stored once or named by a `queue_overflow` event. Records
that never got a sequence number (held in memory on a full disk, then discarded) are invisible to that
audit, so telemetry — one snapshot every `telemetry_interval_s` — is also checked for holes in time.
The same seed draws the same schedule: a failure is reproduced with `tcu-hil chaos --seed N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from backend_stub.store import BackendStore
from hil.agent_process import AgentProcess
from hil.audit import audit_vehicle
from hil.backend_process import BackendProcess
from hil.broker import MosquittoBroker
from hil.chaos_report import ChaosReport, log_findings
from hil.chaos_schedule import ChaosConfig, Fault, chaos_schedule
from hil.layout import BenchLayout
from hil.small_disk import fill, free, small_filesystem
from hil.telemetry_holes import Lifetime, telemetry_holes
from tcu.config import QueueConfig, UplinkConfig
from tcu.status import read_status
from telematics_wire.envelope import seq_ranges

_LOGGER = logging.getLogger(__name__)

KEEPALIVE_S = 3  # agent and backend: a SIGSTOPped broker is noticed within 1.5 x this
FAST_UPLINK = UplinkConfig(reconnect_base_s=0.05, reconnect_cap_s=0.5, ack_timeout_s=5)


@dataclass
class ChaosRun:
    settings: ChaosConfig
    workdir: Path
    on_line: Callable[[str], None] = field(default=lambda line: _LOGGER.info("%s", line))
    _actions: list[str] = field(default_factory=list, init=False)
    _lifetimes: list[Lifetime] = field(default_factory=list, init=False)
    _disk_full: list[tuple[float, float]] = field(default_factory=list, init=False)
    _started: float = field(default=0.0, init=False)
    _agent_since: float | None = field(default=None, init=False)
    _crashes: list[str] = field(default_factory=list, init=False)

    def _say(self, text: str) -> None:
        line = f"t={time.monotonic() - self._started:7.2f} s  {text}"
        self._actions.append(line)
        self.on_line(line)

    async def run(self) -> ChaosReport:
        """Raises `SmallDiskUnavailableError` when no tmpfs can be mounted here."""
        s = self.settings
        self.workdir.mkdir(parents=True, exist_ok=True)
        broker = MosquittoBroker(self.workdir / "mosquitto")
        layout = BenchLayout(root=self.workdir / "bench", broker_url=broker.url)
        data_dir = layout.data_dir(s.vin)
        with small_filesystem(data_dir, s.disk_bytes):
            backend = BackendProcess(layout.backend_config, self.workdir / "backend.log")
            agent: AgentProcess | None = None
            try:
                await broker.start()
                layout.create_backend(keepalive_s=KEEPALIVE_S)  # a paused broker is noticed
                config = layout.add_vehicle(
                    s.vin,
                    telemetry_interval_s=s.telemetry_interval_s,
                    keepalive_s=KEEPALIVE_S,
                    uplink=FAST_UPLINK,
                    queue=QueueConfig(max_records=s.max_records),
                )
                await backend.start()
                agent = AgentProcess(config, log=self.workdir / "agent.log")
                await self._chaos(agent, broker, backend, data_dir)
                self._check(backend, "after the fault window")
                issued, left, drained = await self._drain(agent, layout, data_dir)
                self._check(backend, "after the drain")
            finally:
                broker.resume()
                if agent is not None:
                    await agent.kill()
                await backend.stop()
                await broker.kill()
                free(data_dir)
        return self._report(layout, issued, left, drained)

    def _check(self, backend: BackendProcess, when: str) -> None:
        if backend.exited is not None:
            crash = f"the backend exited on its own (code {backend.exited}); see backend.log"
            if crash not in self._crashes:
                self._crashes.append(crash)
                self._say(f"{crash} (found {when})")

    async def _chaos(
        self, agent: AgentProcess, broker: MosquittoBroker, backend: BackendProcess, data_dir: Path
    ) -> None:
        schedule = chaos_schedule(self.settings.seed, self.settings.seconds)
        self._started = time.monotonic()
        await self._start_agent(agent)
        async with asyncio.TaskGroup() as tasks:
            for fault in schedule:
                await asyncio.sleep(max(self._started + fault.at_s - time.monotonic(), 0.0))
                tasks.create_task(self._perform(fault, agent, broker, backend, data_dir), name=fault.action)
            await asyncio.sleep(max(self._started + self.settings.seconds - time.monotonic(), 0.0))
        self._say("fault window over: disk free, every process up")

    async def _start_agent(self, agent: AgentProcess) -> None:
        self._agent_since = time.time()
        await agent.start()

    def _agent_ended(self, ended_by: Literal["SIGKILL", "stop"]) -> None:
        if self._agent_since is not None:
            self._lifetimes.append(Lifetime(start=self._agent_since, end=time.time(), ended_by=ended_by))
            self._agent_since = None

    async def _perform(
        self, fault: Fault, agent: AgentProcess, broker: MosquittoBroker, backend: BackendProcess, data_dir: Path
    ) -> None:
        self._say(f"{fault.action} (undone after {fault.hold_s:.2f} s)")
        match fault.action:
            case "kill_agent":
                await agent.kill()
                self._agent_ended("SIGKILL")
                await asyncio.sleep(fault.hold_s)
                await self._start_agent(agent)
            case "kill_broker":
                await broker.kill()
                await asyncio.sleep(fault.hold_s)
                await broker.start()
            case "kill_backend":
                await backend.kill()
                await asyncio.sleep(fault.hold_s)
                await backend.start()
            case "stop_broker":
                broker.pause()
                await asyncio.sleep(fault.hold_s)
                broker.resume()
            case "fill_disk":
                full_since = time.time()
                ballast = await asyncio.to_thread(fill, data_dir)
                self._say(f"disk full: {ballast} bytes of ballast")
                await asyncio.sleep(fault.hold_s)
                free(data_dir)
                self._disk_full.append((full_since, time.time()))
        self._say(f"{fault.action} undone")

    async def _drain(
        self, agent: AgentProcess, layout: BenchLayout, data_dir: Path
    ) -> tuple[int | None, list[list[int]] | None, bool]:
        """Stop producing, let a drain-only agent send the rest; the agent's last seq and what is left."""
        s = self.settings
        await asyncio.sleep(2.0)  # a moment of calm production after the last fault
        await agent.stop()
        self._agent_ended("stop")
        self._say("producing agent stopped (SIGTERM); a drain-only agent sends what is queued")
        drain_config = layout.write_agent_config(
            s.vin,
            name="agent-drain.toml",
            simulation=False,
            telemetry_interval_s=s.telemetry_interval_s,
            keepalive_s=KEEPALIVE_S,
            uplink=FAST_UPLINK,
            queue=QueueConfig(max_records=s.max_records),
        )
        drainer = AgentProcess(drain_config, log=self.workdir / "agent.log")
        since = time.time()
        await drainer.start()
        drained = False
        try:
            async with asyncio.timeout(s.drain_timeout_s):
                while not drained:
                    await asyncio.sleep(0.5)
                    drained = _drained(read_status(data_dir / "status.json"), since)
        except TimeoutError:
            pass
        if drained:
            await asyncio.sleep(1.0)  # the last acks reach the agent; the backend committed before acking
        await drainer.stop()
        issued, left = _queue_counters(layout.data_dir(s.vin) / "outbox.sqlite3")
        self._say(f"drain {'complete' if drained else f'NOT complete after {s.drain_timeout_s:.0f} s'}")
        return issued, left, drained

    def _report(
        self, layout: BenchLayout, issued: int | None, left: list[list[int]] | None, drained: bool
    ) -> ChaosReport:
        s = self.settings
        store = BackendStore(layout.root / "backend.sqlite3")
        try:
            audit = audit_vehicle(store, s.vin, issued_through=issued)
            telemetry = store.records(s.vin, kind="telemetry")
        finally:
            store.close()
        holes = telemetry_holes(
            [(record.created.timestamp(), record.seq) for record in telemetry],
            self._lifetimes,
            dropped={seq for low, high in audit.dropped for seq in range(low, high + 1)},
            disk_full=self._disk_full,
            hole_s=s.hole_s,
            startup_grace_s=s.startup_grace_s,
            unnumbered=[(first / 1000, last / 1000) for first, last in audit.unnumbered_spans_ms],
        )
        return ChaosReport(
            settings=s,
            schedule=chaos_schedule(s.seed, s.seconds),
            actions=self._actions,
            audit=audit,
            issued_through=issued,
            left_queued=left,
            drained=drained,
            holes=holes,
            log_findings={
                **log_findings(self.workdir / "agent.log"),
                "backend tracebacks": log_findings(self.workdir / "backend.log").get("tracebacks", 0),
            },
            crashes=self._crashes,
        )


def _drained(status: dict[str, object] | None, since: float) -> bool:
    """The drain-only agent (not a stale file of the producing one) is online with an empty queue."""
    if status is None:
        return False
    link, queue = status.get("link"), status.get("queue")
    try:
        fresh = datetime.fromisoformat(str(status.get("ts"))).timestamp() >= since - 1
    except ValueError:
        return False
    return bool(
        fresh and isinstance(link, dict) and link.get("up") and isinstance(queue, dict) and queue.get("depth") == 0
    )


def _queue_counters(outbox: Path) -> tuple[int | None, list[list[int]] | None]:
    """(last sequence number issued, seqs still queued), read from the stopped agent's queue file."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)) as db:
            next_seq = int(db.execute("SELECT value FROM counters WHERE name='next_seq'").fetchone()[0])
            left = seq_ranges(int(row[0]) for row in db.execute("SELECT seq FROM outbox"))
    except (sqlite3.Error, TypeError) as exc:
        _LOGGER.error("cannot read the agent's queue %s: %s", outbox, exc)
        return None, None
    return next_seq - 1, left
