"""What the bench records: a dead agent is down (never its stale status), the bench's phases, and every
signal's readings as the backend received them (telemetry at its interval, door and lock events as
they happened) and the eCall in milliseconds from the backend's records."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from backend_stub.store import StoredRecord
from hil.backend_series import MSD_AT_PSAP, ecall_marks, signal_series, stored_series, trigger_ms
from hil.live_view import render_line
from hil.sampler import StatusTracker, bench_spans
from hil.timeline import EventKind, Phase, Span, SpanKind, Timeline, link_down

START = datetime(2026, 11, 29, 20, 0, 0, tzinfo=UTC)  # scenario second 0
VIN = "WMWZZZ3CZ2E123456"


def to_scenario(wall: datetime) -> float:
    return (wall - START).total_seconds()


def status(t: float, *, link: bool = True, speed: float = 50.0, depth: int = 0) -> dict[str, Any]:
    """A status.json as the agent writes it, stamped at scenario second `t`."""
    return {
        "ts": (START + timedelta(seconds=t)).isoformat(),
        "link": {"up": link, "error": None if link else "keepalive timeout"},
        "queue": {"depth": depth},
        "signals": {"Vehicle.Speed": speed},
        "ecall": None,
        "measure": None,
    }


class Bench:
    """The tracker's inputs over time: the process running or not, the file on disk, the queue on disk."""

    def __init__(self, tracker: StatusTracker) -> None:
        self.tracker = tracker
        self.file: dict[str, Any] | None = None
        self.running = True
        self.disk_queue: int | None = 7

    def at(self, now: float) -> None:
        self.tracker.observe(
            now,
            running=self.running,
            status=self.file,
            to_scenario=to_scenario,
            stored=0,
            queue_on_disk=lambda: self.disk_queue,
        )

    def died_and_restarted(self, *, seen_down: float, seen_back: float) -> None:
        """An agent up since its status of 0.5 s, its process seen gone at `seen_down`, back at `seen_back`."""
        self.file = status(0.5)
        self.at(0.6)
        self.running = False
        self.at(seen_down)
        self.running = True
        self.at(seen_back)


def test_a_killed_agents_last_status_never_shows_as_its_state() -> None:
    bench = Bench(StatusTracker())
    for second in range(5):
        bench.file = status(second + 0.1, speed=80.0, depth=2)
        bench.at(second + 0.2)
    bench.running = False  # SIGKILL at 5: status.json still says link up, 80 km/h
    for tick in range(10):
        bench.at(5.0 + tick * 0.2)
    bench.running = True  # restarted at 7: the old file is still there for a while
    bench.at(7.2)
    bench.at(7.4)
    down = [s for s in bench.tracker.samples if 5.0 <= s.t < 7.0]
    assert down
    assert all(not s.agent_up and not s.coverage and s.speed_kmh is None for s in down)
    assert down[0].queue_depth == 7  # read from the queue file itself, not the stale status's 2
    restarted = [s for s in bench.tracker.samples if s.t >= 7.0]
    assert [(s.agent_up, s.starting, s.coverage, s.speed_kmh) for s in restarted] == [(True, True, False, None)]
    labels = [n.label for n in bench.tracker.noted if n.kind is EventKind.AGENT]
    assert labels == ["agent down", "agent started"]
    bench.file = status(7.9, speed=0.0)  # the new agent's first status
    bench.at(8.0)
    assert bench.tracker.samples[-1].t == 7.9
    assert (bench.tracker.samples[-1].coverage, bench.tracker.samples[-1].speed_kmh) == (True, 0.0)


def test_a_status_written_before_the_kill_but_first_read_after_it_is_stale() -> None:
    bench = Bench(StatusTracker())
    bench.file = status(1.0)
    bench.at(1.1)
    bench.file = status(2.0, speed=99.0)  # written just before the kill, never polled
    bench.running = False
    bench.at(2.3)
    bench.running = True
    bench.at(4.5)  # restarted; the file still holds the dead agent's 2.0 status
    assert not any(s.speed_kmh == 99.0 for s in bench.tracker.samples)
    assert bench.tracker.samples[-1].coverage is False


def test_a_status_file_left_by_an_earlier_run_is_stale_from_the_start() -> None:
    bench = Bench(StatusTracker(started_at=-3.0))
    bench.file = status(-3600.0)  # yesterday's run in the same workdir: link up, 50 km/h
    bench.at(0.0)
    assert [(s.coverage, s.speed_kmh) for s in bench.tracker.samples] == [(False, None)]
    bench.file = status(-0.4)  # the agent the runner started 3 s before second 0
    bench.at(0.2)
    assert bench.tracker.first_link_up == -0.4


def test_samples_come_at_the_status_rate_not_the_poll_rate() -> None:
    bench = Bench(StatusTracker())
    for tick in range(50):  # polled every 0.2 s for 10 s; the agent writes its status every second
        now = tick * 0.2
        bench.file = status(math.floor(now) + 0.05)
        bench.at(now)
    assert [s.t for s in bench.tracker.samples] == [second + 0.05 for second in range(10)]


def _phases(spans: list[Span]) -> dict[str, tuple[float, float]]:
    return {s.label: (s.start, s.end) for s in spans if s.kind is SpanKind.PHASE}


def test_start_up_run_and_drain_are_marked_and_are_not_link_outages() -> None:
    tracker = StatusTracker(started_at=-2.0)
    bench = Bench(tracker)
    bench.file = status(-1.5, link=False)
    bench.at(-1.4)
    bench.file = status(-0.5, link=True)
    bench.at(0.0)
    bench.file = status(10.0, link=False)
    bench.at(10.1)
    bench.file = status(12.0, link=True)
    bench.at(12.1)
    tracker.draining = True
    bench.running = False  # stopped for the drain at 20
    bench.at(20.0)
    bench.file = status(21.5, link=False)  # the drain agent, connecting
    bench.at(21.6)
    bench.file = status(22.5, link=True)
    bench.at(22.6)
    tracker.end(25.0, stored=0, queue_on_disk=lambda: 0)
    spans = bench_spans(tracker, 20.0, 25.0)
    assert _phases(spans) == {Phase.STARTUP: (-2.0, -0.5), Phase.RUN: (-0.5, 20.0), Phase.DRAIN: (20.0, 25.0)}
    assert not [s for s in spans if s.kind is SpanKind.AGENT_DOWN]  # the drain's stop is no outage
    timeline = Timeline(scenario="x", samples=tracker.samples, spans=spans)
    assert link_down(timeline) == [(10.0, 12.0)]  # not the start-up's, not the drain agent's connecting
    assert tracker.samples[-1].agent_up is False  # the drain agent stopped at the end


def test_an_agent_that_died_on_its_own_is_a_down_span() -> None:
    tracker = StatusTracker()
    Bench(tracker).died_and_restarted(seen_down=8.0, seen_back=9.0)
    explicit = [Span(kind=SpanKind.AGENT_DOWN, label="agent_kill: SIGKILL", start=30.0, end=33.0)]
    spans = bench_spans(tracker, 40.0, 45.0, explicit=explicit)
    down = [s for s in spans if s.kind is SpanKind.AGENT_DOWN]
    assert [(s.start, s.end, s.label) for s in down] == [(8.0, 9.0, "agent down")]
    assert "no step of the scenario had stopped it" in down[0].detail


def _record(seq: int, kind: str, body: dict[str, Any], received_s: float) -> StoredRecord:
    moment = START + timedelta(seconds=received_s)
    return StoredRecord(vin=VIN, seq=seq, kind=kind, created=moment, received=moment, body=body)


def _ms(t: float) -> int:
    return round((START + timedelta(seconds=t)).timestamp() * 1000)


def test_every_signal_at_its_own_rate_from_the_backends_records() -> None:
    records = []
    for second in range(10):  # a snapshot a second; speed read every 0.5 s, coolant every 4 s
        signals = {
            "Vehicle.Speed": {"v": float(second), "t": _ms(second - 0.5)},
            "Vehicle.Powertrain.CombustionEngine.ECT": {"v": 90, "t": _ms(4 * (second // 4))},
            "Vehicle.OBD.DTCList": {"v": ["P0301"], "t": _ms(second)},  # a list: not plottable
            "Vehicle.Bad": {"v": math.nan, "t": _ms(second)},
            "Vehicle.Flag": {"v": True, "t": True},  # a bool is no time stamp
        }
        records.append(_record(second + 1, "telemetry", {"signals": signals}, second + 0.1))
    records.append(_record(11, "event", {"type": "door", "signals": {"Vehicle.Speed": {"v": 1.0, "t": 5}}}, 10.0))
    series = signal_series(records, to_scenario)
    assert set(series) == {"Vehicle.Speed", "Vehicle.Powertrain.CombustionEngine.ECT"}
    assert series["Vehicle.Powertrain.CombustionEngine.ECT"] == [(0.0, 90), (4.0, 90), (8.0, 90)]
    assert [t for t, _ in series["Vehicle.Speed"]] == [second - 0.5 for second in range(10)]
    assert stored_series(records, to_scenario)[:2] == [(0.1, 1), (1.1, 2)]
    assert stored_series(records, to_scenario)[-1] == (10.0, 11)


def _ecall(seq: int, at: float, to: str, *, session: int = 1, event: str = "transition") -> StoredRecord:
    body = {"event": event, "session": session, "from": "x", "to": to, "reason": f"to {to}", "at_ms": _ms(at)}
    return _record(seq, "ecall", body, at + 2.0)  # received late: the link was off the radio


def test_ecall_marks_carry_the_milliseconds_of_the_vehicle_and_the_psap() -> None:
    records = [
        _ecall(1, 15.0, "triggered"),
        _ecall(2, 15.0, "dialling"),
        _ecall(3, 17.01, "call_established"),
        _ecall(4, 17.013, "msd_sent"),
        _ecall(5, 18.828, "msd_sent", event="ll_ack"),
        _ecall(6, 18.833, "msd_acknowledged"),
        _ecall(7, 40.0, "triggered", session=2),
    ]
    psap = [
        {
            "received_ms": _ms(18.518),
            "call_id": 1,
            "message_identifier": 1,
            "latitude_deg": 48.1,
            "longitude_deg": 11.5,
        },
        {"received_ms": _ms(41.0), "call_id": 2, "message_identifier": 1, "error": None},
    ]
    marks = ecall_marks(records, psap, to_scenario)
    assert [(m.label, m.at_ms - _ms(15.0)) for m in marks if m.session == 1] == [
        ("triggered", 0),
        ("dialling", 0),
        ("call_established", 2010),
        ("msd_sent", 2013),
        (MSD_AT_PSAP, 3518),
        ("ll_ack", 3828),
        ("msd_acknowledged", 3833),
    ]
    at_psap = [m for m in marks if m.label == MSD_AT_PSAP]
    assert [(m.session, m.source, m.latitude) for m in at_psap] == [(1, "psap", 48.1), (2, "psap", None)]
    assert marks[0].t == 15.0  # the vehicle's time, not when the backend received the record
    assert trigger_ms(marks, 2) == _ms(40.0)


def test_the_live_view_says_agent_down_and_starting_not_link_down() -> None:
    bench = Bench(StatusTracker())
    bench.died_and_restarted(seen_down=1.0, seen_back=3.0)
    lines = [render_line(sample, 10.0) for sample in bench.tracker.samples]
    assert [line.split(" | ")[2] for line in lines] == ["link up", "link agent down", "link starting"]
    assert lines[1].split(" | ")[1] == "speed -"  # not the dead agent's last 50 km/h
