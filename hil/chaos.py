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
import itertools
import logging
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from backend_stub.store import BackendStore
from hil.agent_process import AgentProcess
from hil.audit import SeqAudit, audit_vehicle, count_seqs, format_ranges
from hil.broker import MosquittoBroker
from hil.layout import DEMO_VIN, BenchLayout
from hil.small_disk import fill, free, small_filesystem
from tcu.status import read_status
from tcu.uplink.envelope import seq_ranges

_LOGGER = logging.getLogger(__name__)

Action = Literal["kill_agent", "kill_broker", "kill_backend", "stop_broker", "fill_disk"]
ACTIONS: tuple[Action, ...] = ("kill_agent", "kill_broker", "kill_backend", "stop_broker", "fill_disk")

_TARGET: dict[Action, str] = {
    "kill_agent": "agent",
    "kill_broker": "broker",
    "stop_broker": "broker",
    "kill_backend": "backend",
    "fill_disk": "disk",
}
# Seconds until the fault is undone: restart after a kill, SIGCONT after a stop, ballast removed.
# A stop longer than the agent's 3 s keepalive makes it notice and reconnect; a shorter one must not lose.
_HOLD: dict[Action, tuple[float, float]] = {
    "kill_agent": (0.0, 2.0),
    "kill_broker": (0.0, 3.0),
    "kill_backend": (0.0, 2.0),
    "stop_broker": (1.0, 8.0),
    "fill_disk": (3.0, 12.0),
}
_UNDO = {"kill_agent": "restart", "kill_broker": "restart", "kill_backend": "restart", "stop_broker": "SIGCONT"}

# In the agent's log: each count is a finding worth a look even when the audit passes.
_LOG_FINDINGS = {
    "telematics restarts": "telematics failed; restarting",
    "records lost from memory on stop": "held only in memory",
    "acks that could not be applied": "cannot apply ack",
    "acks ignored (another queue epoch)": "ignored an ack for queue epoch",
    "queue writes refused": "keeping new records in memory",
    "rejected downlink messages": "rejected downlink",
    "tracebacks": "Traceback (most recent call last)",
}


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float  # seconds after the agent first started
    action: Action
    hold_s: float  # until restarted / resumed / freed

    def describe(self) -> str:
        undo = f"{_UNDO.get(self.action, 'freed')} after {self.hold_s:.2f} s"
        return f"t={self.at_s:7.2f} s  {self.action:<12}  {undo}"


def chaos_schedule(seed: int, seconds: float, *, mean_gap_s: float = 3.0) -> tuple[Fault, ...]:
    """The faults of one run: every kind once first (in a drawn order), then drawn freely.

    A fault waits until the previous fault on the same process is undone, so the schedule does what
    it says; faults on different processes overlap freely.
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    first: list[Action] = list(ACTIONS)
    rng.shuffle(first)
    busy_until = dict.fromkeys(_TARGET.values(), 0.0)
    faults: list[Fault] = []
    at = rng.uniform(2.0, 4.0)  # records flowing first
    while at < seconds:
        free_now = [a for a in ACTIONS if busy_until[_TARGET[a]] <= at]
        wanted = next((a for a in first if a in free_now), None)
        action = wanted if wanted is not None else rng.choice(free_now) if free_now else None
        if action is not None:
            if action in first:
                first.remove(action)
            hold = round(rng.uniform(*_HOLD[action]), 2)
            faults.append(Fault(round(at, 2), action, hold))
            busy_until[_TARGET[action]] = at + hold + 0.5
        at += rng.expovariate(1.0 / mean_gap_s)
    return tuple(faults)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosSettings:
    seed: int
    seconds: float = 40.0  # the fault window; the drain comes after
    telemetry_interval_s: float = 0.02  # 50 records/s: a few seconds of outage fill the queue bound
    max_records: int = 300  # small, so a few seconds of outage make the drop policy (and its notices) work
    disk_bytes: int = 2 * 1024 * 1024
    drain_timeout_s: float = 60.0
    hole_s: float = 3.0  # telemetry missing this long, with the agent up, is a hole
    startup_grace_s: float = 6.0  # from process start to the first snapshot, on a loaded machine
    vin: str = DEMO_VIN


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifetime:
    """One run of the producing agent, wall-clock seconds."""

    start: float
    end: float
    ended_by: Literal["SIGKILL", "stop"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hole:
    start: float  # wall-clock seconds
    end: float
    where: Literal["after start", "between snapshots", "before SIGKILL", "before stop"]
    explained: str | None  # why it is not a loss, or None

    @property
    def seconds(self) -> float:
        return self.end - self.start


def telemetry_holes(
    snapshots: Sequence[tuple[float, int]],
    lifetimes: Sequence[Lifetime],
    *,
    dropped: set[int],
    disk_full: Sequence[tuple[float, float]],
    hole_s: float,
    startup_grace_s: float,
    unnumbered: Sequence[tuple[float, float]] = (),
) -> list[Hole]:
    """Stretches of an agent's life with no stored snapshot.

    `snapshots` are (creation time, seq) of the stored telemetry. A hole is explained when the seqs
    on either side of it enclose one named as dropped by policy, when an overflow notice names records
    dropped before numbering (`unnumbered`: their first and last creation time) within it, or when it
    ends in a SIGKILL while the disk was full (records held in memory die with the process, as in a
    power cut).
    """
    ordered = sorted(snapshots)
    holes: list[Hole] = []

    def explain(start: float, end: float, low: int, high: int) -> str | None:
        if any(low < seq < high for seq in dropped):
            return "dropped by policy"
        if any(first < end and last > start for first, last in unnumbered):
            return "dropped before numbering, counted in an overflow notice"
        return None

    for life in lifetimes:
        inside = [(t, seq) for t, seq in ordered if life.start <= t <= life.end + 0.5]
        if not inside:
            if life.end - life.start > startup_grace_s:
                reason = explain(life.start, life.end, 0, 0)
                holes.append(Hole(start=life.start, end=life.end, where="after start", explained=reason))
            continue
        if inside[0][0] - life.start > startup_grace_s:
            reason = explain(life.start, inside[0][0], 0, 0)
            holes.append(Hole(start=life.start, end=inside[0][0], where="after start", explained=reason))
        for (t1, s1), (t2, s2) in itertools.pairwise(inside):
            if t2 - t1 > hole_s:
                reason = explain(t1, t2, min(s1, s2), max(s1, s2))
                holes.append(Hole(start=t1, end=t2, where="between snapshots", explained=reason))
        last, last_seq = inside[-1]
        if life.end - last > hole_s:
            later = [seq for t, seq in ordered if t > life.end]
            reason = explain(last, life.end, last_seq, min(later, default=last_seq + 10**9))
            full = any(low < life.end and high > last for low, high in disk_full)
            if reason is None and life.ended_by == "SIGKILL" and full:
                reason = "held in memory on a full disk at the SIGKILL"
            where: Literal["before SIGKILL", "before stop"] = (
                "before SIGKILL" if life.ended_by == "SIGKILL" else "before stop"
            )
            holes.append(Hole(start=last, end=life.end, where=where, explained=reason))
    return holes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosReport:
    settings: ChaosSettings
    schedule: tuple[Fault, ...]
    actions: list[str]
    audit: SeqAudit
    issued_through: int | None  # the agent's last sequence number, read from its queue at the end
    left_queued: list[list[int]] | None  # seqs still in the agent's queue after the drain (not delivered)
    drained: bool
    holes: list[Hole]
    log_findings: dict[str, int]
    crashes: list[str]  # a process that ended on its own

    @property
    def unexplained_holes(self) -> list[Hole]:
        return [hole for hole in self.holes if hole.explained is None]

    @property
    def ok(self) -> bool:
        return self.audit.ok and self.drained and not self.unexplained_holes and not self.crashes

    def describe(self) -> str:
        s = self.settings
        lines = [
            f"chaos seed {s.seed}: {s.seconds:.0f} s of faults, telemetry every {s.telemetry_interval_s} s, "
            f"queue bound {s.max_records} records, data dir on a {s.disk_bytes // 1024} KiB tmpfs",
            f"reproduce: tcu-hil chaos --seed {s.seed} --seconds {s.seconds:g}",
            "schedule:",
            *(f"  {fault.describe()}" for fault in self.schedule),
            "what happened:",
            *(f"  {line}" for line in self.actions),
            f"agent issued seq 1..{self.issued_through}; drained: {'yes' if self.drained else 'NO'}; "
            + (
                "its queue unreadable"
                if self.left_queued is None
                else f"left in its queue: {count_seqs(self.left_queued)} {format_ranges(self.left_queued)}"
            ),
            self.audit.describe(),
        ]
        if self.holes:
            lines.append("telemetry holes:")
            for hole in self.holes:
                verdict = hole.explained or "UNEXPLAINED"
                lines.append(f"  {hole.seconds:6.1f} s {hole.where} at {_clock(hole.start)}: {verdict}")
        lines.extend(f"CRASH: {crash}" for crash in self.crashes)
        findings = ", ".join(f"{name}: {count}" for name, count in self.log_findings.items() if count)
        lines.append(f"logs: {findings or 'nothing remarkable'}")
        lines.append("PASSED" if self.ok else "FAILED")
        return "\n".join(lines)


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"


class _Backend:
    """`backend-stub run` as a process, so it can be SIGKILLed in the middle of a transaction."""

    def __init__(self, config: Path, log: Path) -> None:
        self._config = config
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as output:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "backend_stub.cli",
                "--log-level",
                "info",
                "run",
                "--config",
                str(self._config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )

    @property
    def exited(self) -> int | None:
        """The exit code of a backend that ended on its own; None while it runs (or was never started)."""
        return None if self._process is None else self._process.returncode

    async def kill(self) -> None:
        await self._end(kill=True)

    async def stop(self) -> None:
        await self._end(kill=False)

    async def _end(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill() if kill else process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


@dataclass
class ChaosRun:
    settings: ChaosSettings
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
            backend = _Backend(layout.backend_config, self.workdir / "backend.log")
            agent: AgentProcess | None = None
            try:
                await broker.start()
                layout.create_backend()
                # Appended to [broker], the backend config's last section: a paused broker is noticed.
                layout.backend_config.write_text(layout.backend_config.read_text() + "keepalive_s = 3\n")
                config = layout.add_vehicle(
                    s.vin,
                    telemetry_interval_s=s.telemetry_interval_s,
                    keepalive_s=3,
                    extra=_agent_extra(s),
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

    def _check(self, backend: _Backend, when: str) -> None:
        if backend.exited is not None:
            crash = f"the backend exited on its own (code {backend.exited}); see backend.log"
            if crash not in self._crashes:
                self._crashes.append(crash)
                self._say(f"{crash} (found {when})")

    async def _chaos(self, agent: AgentProcess, broker: MosquittoBroker, backend: _Backend, data_dir: Path) -> None:
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
        self, fault: Fault, agent: AgentProcess, broker: MosquittoBroker, backend: _Backend, data_dir: Path
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
            keepalive_s=3,
            extra=_agent_extra(s),
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
                **_log_findings(self.workdir / "agent.log"),
                "backend tracebacks": _log_findings(self.workdir / "backend.log").get("tracebacks", 0),
            },
            crashes=self._crashes,
        )


def _agent_extra(settings: ChaosSettings) -> str:
    return (
        "\n[uplink]\nreconnect_base_s = 0.05\nreconnect_cap_s = 0.5\nack_timeout_s = 5\n"
        f"\n[queue]\nmax_records = {settings.max_records}\n"
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


def _log_findings(log: Path) -> dict[str, int]:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    return {name: text.count(needle) for name, needle in _LOG_FINDINGS.items()}
