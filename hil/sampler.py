"""What the bench records while a scenario runs, and what it collects from the backend at the end.

While it runs: the agent as the bench sees it (`StatusTracker`): a sample per fresh `status.json`
(stamped with the agent's own `ts`, at the agent's own status rate) and one whenever the agent process
stops or starts. A status is fresh only when it was written after the agent was last seen down: a
SIGKILLed agent leaves its last status behind (link up, car moving), and the report must show the
agent down, not that. Also the backend's news (measure attempts, MSDs at the PSAP, provisioning file
states) as events, and the bench's phases (start-up until the first link-up, the run, the drain).

At the end (`BenchSampler.finish`), from the backend's records (`hil.backend_series`): every signal the
vehicle sent (telemetry at its interval, door/lock changes as they happened), the store's growth and
the eCall in milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend_stub.measure_store import Attempt
from backend_stub.provisioning_history import IssuedFile
from backend_stub.store import BackendStore
from hil.backend_series import ecall_marks, signal_series, stored_series
from hil.evidence_reads import vehicle_msds
from hil.timeline import EventKind, Phase, Sample, Span, SpanKind, runs
from tcu.status import read_status
from tcu.virtual_time import real_seconds

if TYPE_CHECKING:
    from hil.run_context import RunContext

_LOGGER = logging.getLogger(__name__)

POLL_S = 0.2  # scenario seconds between looks at the agent: how exactly a kill or a restart is placed
HEARTBEAT_S = 1.0  # a down agent still gets a sample this often (the live view, the queue on disk)
BACKEND_EVERY_S = 1.0  # scenario seconds between looks at the backend's news
# Each look parses status.json and queries SQLite, in real time: on a fast bench 0.2 scenario seconds
# would be 500 looks a real second at scale 100. So a look is never more often than this in real time,
# and a kill or restart is placed to within POLL_S or this much real time, whichever is longer.
POLL_REAL_S = 0.05
BACKEND_EVERY_REAL_S = 0.5


def poll_intervals() -> tuple[float, float]:
    """(between looks at the agent, between looks at the backend), in the running loop's seconds."""
    return max(POLL_S, real_seconds(POLL_REAL_S)), max(BACKEND_EVERY_S, real_seconds(BACKEND_EVERY_REAL_S))


@dataclass(frozen=True, slots=True, kw_only=True)
class Noted:
    """An event the tracker wants on the timeline (the runner stamps it with its own time)."""

    kind: EventKind
    label: str
    detail: str = ""


class StatusTracker:
    """Turns (the agent process running?, its status file) into samples that never show a stale status.

    Pure: time, the queue on disk and the backend's count are handed in. `draining`: the main agent
    was stopped and a drain-only agent started in its place; the bench cannot see that process, so it
    counts as up from its first fresh status.
    """

    def __init__(self, started_at: float = 0.0) -> None:
        """`started_at`: when the bench started the agent, in scenario seconds (the scenario's clock
        starts once the agent has its link, so this is at or before 0)."""
        self.samples: list[Sample] = []
        self.noted: list[Noted] = []
        self.started_at = started_at
        self.first_link_up: float | None = None
        self.draining = False
        self._stale_before = started_at  # statuses stamped before this are a dead agent's (or an old run's)
        self._last_ts: object = None
        self._agent_up: bool | None = None
        self._drain_agent_up = False
        self._link: bool | None = None
        self._queue = 0

    def observe(
        self,
        now: float,
        *,
        running: bool,
        status: dict[str, Any] | None,
        to_scenario: Callable[[datetime], float],
        stored: int,
        queue_on_disk: Callable[[], int | None],
    ) -> None:
        fresh_t = self._fresh(status, to_scenario)
        if self.draining and not running and fresh_t is not None:
            self._drain_agent_up = True
        if not (running or self._drain_agent_up):
            if self._agent_up is not False:
                self._stale_before = now
                self._link = None
                why = "stopped for the drain" if self.draining else "process not running; its status.json is stale"
                self.noted.append(Noted(kind=EventKind.AGENT, label="agent down", detail=why))
                self._down_sample(now, stored, queue_on_disk)
            elif now - self.samples[-1].t >= HEARTBEAT_S:
                self._down_sample(now, stored, queue_on_disk)
            return
        if self._agent_up is not True:
            if self._agent_up is False:  # a restart (the first start is the runner's own event)
                label = "drain agent started" if self.draining and not running else "agent started"
                self.noted.append(Noted(kind=EventKind.AGENT, label=label))
            self._agent_up = True
            if fresh_t is None:  # no status of its own yet: up, without a link
                self._statusless_sample(now, stored, queue_on_disk, starting=True)
        if fresh_t is not None and status is not None:
            self._status_sample(fresh_t, status, stored)

    def end(self, now: float, *, stored: int, queue_on_disk: Callable[[], int | None]) -> None:
        """The run is over: whichever agent was running has been stopped."""
        if self._agent_up is not False:
            self._down_sample(now, stored, queue_on_disk)

    def _fresh(self, status: dict[str, Any] | None, to_scenario: Callable[[datetime], float]) -> float | None:
        """The scenario time of a status written since the agent was last seen down, else None."""
        if not status or status.get("ts") == self._last_ts:
            return None
        try:
            stamp = datetime.fromisoformat(str(status.get("ts")))
        except ValueError:
            return None
        t = to_scenario(stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC))
        return t if t >= self._stale_before and math.isfinite(t) else None

    def _status_sample(self, t: float, status: dict[str, Any], stored: int) -> None:
        self._last_ts = status.get("ts")
        link_info = _part(status, "link")
        link = bool(link_info.get("up"))
        if link != self._link:
            label = "link up" if link else "link down"
            self.noted.append(Noted(kind=EventKind.LINK, label=label, detail=str(link_info.get("error") or "")))
            self._link = link
        if link and self.first_link_up is None and not self.draining:
            self.first_link_up = round(t, 3)
        speed = _part(status, "signals").get("Vehicle.Speed")
        depth = _part(status, "queue").get("depth")
        self._queue = depth if isinstance(depth, int) and not isinstance(depth, bool) else self._queue
        measure = status.get("measure")
        self._append(
            Sample(
                t=t,
                speed_kmh=float(speed) if isinstance(speed, int | float) and not isinstance(speed, bool) else None,
                coverage=link,
                queue_depth=self._queue,
                stored_at_backend=stored,
                ecall_state=_ecall_state(status),
                measure_state=None
                if not isinstance(measure, dict)
                else f"{measure.get('id')} #{measure.get('attempt')}",
            )
        )

    def _down_sample(self, now: float, stored: int, queue_on_disk: Callable[[], int | None]) -> None:
        self._statusless_sample(now, stored, queue_on_disk, agent_up=False)
        self._agent_up = False

    def _statusless_sample(
        self,
        now: float,
        stored: int,
        queue_on_disk: Callable[[], int | None],
        *,
        agent_up: bool = True,
        starting: bool = False,
    ) -> None:
        """A sample without a status of the agent's (down, or starting): no speed, no link, the queue
        as its file says."""
        self._queue = _or(queue_on_disk(), self._queue)
        self._append(
            Sample(
                t=now,
                speed_kmh=None,
                coverage=False,
                queue_depth=self._queue,
                stored_at_backend=stored,
                agent_up=agent_up,
                starting=starting,
            )
        )

    def _append(self, sample: Sample) -> None:
        """Samples stay in time order: a status stamped before the last sample is placed at it."""
        last = self.samples[-1].t if self.samples else -math.inf
        t = round(max(sample.t, last), 3)
        self.samples.append(sample if t == sample.t else replace(sample, t=t))


class BenchSampler:
    def __init__(self, run: RunContext, *, agent_started: float = 0.0) -> None:
        """`agent_started`: scenario seconds at which the runner started the agent (0 or before)."""
        self._run = run
        self.tracker = StatusTracker(agent_started)
        self._drain_start: float | None = None
        self._seen: set[tuple[str, ...]] = set()  # backend facts already turned into events
        self._committed: BackendStore | None = None  # opened at the first look, closed by `finish`

    def _records(self) -> BackendStore:
        """The backend's records as committed, on a connection of the sampler's own (`BackendStub.reader`):
        the backend's own belongs to its database thread while it runs."""
        if self._committed is None:
            self._committed = self._run.bench.backend.reader()
        return self._committed

    async def run(self) -> None:
        poll_s, backend_s = poll_intervals()
        since_backend = math.inf
        while True:
            self.poll()
            if since_backend >= backend_s:
                await self._backend_events()
                since_backend = 0.0
            await self._run.time.hold(poll_s)
            since_backend += poll_s

    def poll(self) -> None:
        run, tracker = self._run, self.tracker
        before = len(tracker.samples)
        tracker.observe(
            run.time.now(),
            running=run.bench.agent.running,
            status=read_status(run.status_path),
            to_scenario=run.time.scenario_seconds,
            stored=self._records().count(run.scenario.vin),
            queue_on_disk=lambda: queue_on_disk(run.outbox),
        )
        for noted in tracker.noted:
            run.event(noted.kind, noted.label, noted.detail)
        tracker.noted.clear()
        for sample in tracker.samples[before:]:
            run.timeline.samples.append(sample)
            run.on_sample(sample)

    def begin_drain(self) -> None:
        """The last step is done: the runner stops the agent and drains its queue from here on."""
        self.poll()
        self._drain_start = round(self._run.time.now(), 3)
        self.tracker.draining = True

    async def finish(self) -> None:
        """The drain is over: close the phases, mark when the agent was down, collect the backend's data."""
        try:
            self.poll()
            await self._backend_events()
            self._collect()
        finally:
            if self._committed is not None:
                self._committed.close()
                self._committed = None

    def _collect(self) -> None:
        run, backend = self._run, self._run.bench.backend
        end = round(run.time.now(), 3)
        drain_start = end if self._drain_start is None else self._drain_start
        before = len(self.tracker.samples)
        vin = run.scenario.vin
        stored = self._records().count(vin)
        self.tracker.end(end, stored=stored, queue_on_disk=lambda: queue_on_disk(run.outbox))
        timeline = run.timeline
        timeline.samples += self.tracker.samples[before:]
        timeline.spans += bench_spans(self.tracker, drain_start, end, explicit=timeline.spans_of(SpanKind.AGENT_DOWN))
        records = self._records().records(vin)
        timeline.series = signal_series(records, run.time.scenario_seconds)
        timeline.stored = stored_series(records, run.time.scenario_seconds)
        psap_rows: list[dict[str, Any]] = []
        if backend.psap is not None:
            try:
                psap_rows = vehicle_msds(backend, vin)
            except sqlite3.Error as exc:
                _LOGGER.warning("report: cannot read the PSAP's MSDs (%s); the eCall table lacks them", exc)
        timeline.ecall = ecall_marks(records, psap_rows, run.time.scenario_seconds)

    async def _backend_events(self) -> None:
        """What the backend learnt since the last look: measure attempts, MSDs, provisioning file states."""
        run, backend = self._run, self._run.bench.backend
        vin = run.scenario.vin

        def news() -> tuple[list[tuple[str, Attempt]], list[IssuedFile]]:
            attempts = [
                (measure.measure_id, attempt)
                for measure in backend.measure_store.all(vin)
                for attempt in backend.measure_store.history(measure.measure_id)
            ]
            return attempts, backend.provisioning_store.files(vin)

        attempts, files = await backend.operate(news)  # on the backend's database thread, which owns its stores
        for measure_id, attempt in attempts:
            key: tuple[str, ...] = ("measure", measure_id, str(attempt.attempt), attempt.status)
            if key not in self._seen:
                self._seen.add(key)
                detail = f"{attempt.code or ''} {attempt.reason or ''}".strip()
                run.event(EventKind.MEASURE, f"{measure_id} #{attempt.attempt} {attempt.status}", detail)
        psap = backend.psap
        for received in [] if psap is None else psap.msds:
            key = ("msd", str(received.call_id), str(received.mono))
            if key not in self._seen:
                self._seen.add(key)
                msd = received.msd
                where = "" if msd is None else f" at {msd.latitude_deg:.5f},{msd.longitude_deg:.5f}"
                detail = f"call {received.call_id}{where} {received.error or ''}".strip()
                run.event(EventKind.ECALL, "MSD at the PSAP", detail)
        for issued in files:
            file_key: tuple[str, ...] = ("file", str(issued.version), issued.state.value)
            if file_key not in self._seen:
                self._seen.add(file_key)
                run.event(EventKind.PROVISIONING, f"file v{issued.version} {issued.state.value}", issued.operation)


def bench_spans(tracker: StatusTracker, drain_start: float, end: float, *, explicit: Sequence[Span] = ()) -> list[Span]:
    """The phases, and every stretch the agent was seen down before the drain (the drain stops it on
    purpose) that the actions did not already record exactly (`explicit`): a kill, a restart."""
    startup_end = drain_start if tracker.first_link_up is None else min(tracker.first_link_up, drain_start)
    startup_end = max(startup_end, tracker.started_at)
    never = " (the link never came up)" if tracker.first_link_up is None else ""
    result = [
        Span(
            kind=SpanKind.PHASE,
            label=Phase.STARTUP,
            start=round(tracker.started_at, 3),
            end=round(startup_end, 3),
            detail=f"the agent starting, until its first link-up{never}",
        )
    ]
    if drain_start > startup_end:
        result.append(Span(kind=SpanKind.PHASE, label=Phase.RUN, start=startup_end, end=drain_start))
    result.append(
        Span(
            kind=SpanKind.PHASE,
            label=Phase.DRAIN,
            start=drain_start,
            end=end,
            detail="agent stopped; a drain-only agent sends what it had queued",
        )
    )
    for start, until, up in runs(tracker.samples, lambda s: s.t, lambda s: s.agent_up, end):
        stop = min(until, drain_start)
        if not up and stop > start and not any(start < s.end and s.start < stop for s in explicit):
            result.append(
                Span(
                    kind=SpanKind.AGENT_DOWN,
                    label="agent down",
                    start=start,
                    end=stop,
                    detail="the process was not running, and no step of the scenario had stopped it",
                )
            )
    return result


def queue_on_disk(outbox: Path) -> int | None:
    """Records in the vehicle's queue, from the file itself (what a down agent has queued; the status
    file lags by its interval); None while the file cannot be read."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=1)) as db:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.Error:
        return None


def _part(status: dict[str, Any], key: str) -> dict[str, Any]:
    """A section of the status file; a missing or malformed one reads as empty."""
    part = status.get(key)
    return part if isinstance(part, dict) else {}


def _or(value: int | None, fallback: int) -> int:
    return fallback if value is None else value


def _ecall_state(status: dict[str, Any]) -> str | None:
    ecall = status.get("ecall")
    return str(ecall.get("state")) if isinstance(ecall, dict) and ecall.get("state") else None
