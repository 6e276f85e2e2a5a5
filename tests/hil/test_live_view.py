"""The live view: exact text for terminals and for CI logs, and in-place redraws with ANSI codes."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from hil.live_view import (
    CLEAR_BELOW,
    CLEAR_LINE,
    LiveView,
    render_line,
    render_progress,
    render_status,
    render_summary,
)
from hil.timeline import Event, EventKind, ExpectationResult, Sample, Timeline

ANSI = re.compile(r"\x1b\[\d*[A-Za-z]")


def _sample(t: float, **changes: object) -> Sample:
    values: dict[str, object] = {"speed_kmh": 42.25, "coverage": True, "queue_depth": 3, "stored_at_backend": 48}
    values.update(changes)
    return Sample(t=t, **values)  # type: ignore[arg-type]


TUNNEL = Event(t=30.0, kind=EventKind.ACTION, label="tunnel", detail="for_s=18")
LINK_DOWN = Event(t=33.4, kind=EventKind.LINK, label="link down", detail="keepalive timeout")
CRASH = Event(t=90.0, kind=EventKind.ACTION, label="crash")
TRIGGERED = Event(t=90.1, kind=EventKind.ECALL, label="triggered", detail="automatic")


@pytest.mark.parametrize(
    ("t", "duration", "width", "expected"),
    [
        (50, 120, 10, "[#####.....] 42% 50/120 s"),
        (0, 120, 10, "[..........] 0% 0/120 s"),
        (120, 120, 10, "[##########] 100% 120/120 s"),
        (130, 120, 4, "[####] 100% 130/120 s"),  # the drain after the last step runs past the duration
        (60, 120, 4, "[##..] 50% 60/120 s"),
        (3, 0, 4, "[####] 100% 3/0 s"),
    ],
)
def test_progress_bar(t: float, duration: float, width: int, expected: str) -> None:
    assert render_progress(t, duration, width=width) == expected


def test_status_block_shows_every_signal_and_the_last_events() -> None:
    sample = _sample(91.0, coverage=False, ecall_state="dialling", measure_state="m-7 #2")
    text = render_status("tunnel_crash", 120, sample, [TUNNEL, LINK_DOWN, CRASH, TRIGGERED], last=3)
    assert text.splitlines() == [
        "tunnel_crash  [#######################.......] 76% 91/120 s",
        "  speed     42.2 km/h",
        "  link      DOWN",
        "  queue     3 records",
        "  backend   48 stored",
        "  eCall     dialling",
        "  measure   m-7 #2",
        "  events      33.4 s  link         link down (keepalive timeout)",
        "              90.0 s  action       crash",
        "              90.1 s  ecall        triggered (automatic)",
    ]


def test_status_block_before_the_first_sample() -> None:
    lines = render_status("idle", 60, None, []).splitlines()
    assert lines[0] == "idle  [..............................] 0% 0/60 s"
    assert lines[1:] == [
        f"  {name:<10}-" for name in ("speed", "link", "queue", "backend", "eCall", "measure", "events")
    ]


def test_log_line_carries_the_events_since_the_last_sample() -> None:
    assert render_line(_sample(30.0, speed_kmh=None), 120) == (
        "30/120 s 25% | speed - | link up | queue 3 | backend 48 | eCall - | measure -"
    )
    line = render_line(_sample(34.0, coverage=False, measure_state="m-7 #1"), 120, [TUNNEL, LINK_DOWN])
    assert line == (
        "34/120 s 28% | speed 42.2 km/h | link DOWN | queue 3 | backend 48 | eCall - | measure m-7 #1 "
        "| 30.0 action tunnel; 33.4 link link down"
    )


def _timeline(*, passed: bool) -> Timeline:
    return Timeline(
        scenario="tunnel_crash",
        expectations=[
            ExpectationResult(name="records_without_gaps", passed=True, detail="90 of 90 stored"),
            ExpectationResult(name="msd_received", passed=passed, detail="PSAP decoded VIN WMWZZZ3CZ2E123456"),
        ],
    )


def test_summary() -> None:
    assert render_summary(_timeline(passed=False), Path("run/report.md")).splitlines() == [
        "tunnel_crash: FAIL (1/2 expectations)",
        "  PASS records_without_gaps: 90 of 90 stored",
        "  FAIL msd_received: PSAP decoded VIN WMWZZZ3CZ2E123456",
        "  report: run/report.md",
    ]


def test_not_a_tty_writes_one_line_per_sample_and_no_escape_codes() -> None:
    out = io.StringIO()  # StringIO.isatty() is False: the CI-log path is chosen by itself
    view = LiveView("tunnel_crash", 120, stream=out)
    assert not view.tty
    view.on_sample(_sample(29.0))
    view.on_event(TUNNEL)
    view.on_event(LINK_DOWN)
    view.on_sample(_sample(34.0, coverage=False))
    view.on_sample(_sample(35.0, coverage=False))
    view.on_event(CRASH)
    view.finish(_timeline(passed=True))
    text = out.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 3 + 1 + 3  # three samples, the trailing event, the summary
    assert lines[0].startswith("29/120 s 24% | ")
    assert lines[1].endswith("| 30.0 action tunnel; 33.4 link link down")
    assert lines[2].endswith("| measure -")  # events are not repeated
    assert lines[3] == "90.0 action crash"
    assert lines[4] == "tunnel_crash: PASS (2/2 expectations)"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tty_redraws_the_block_in_place() -> None:
    out = _Terminal()
    view = LiveView("tunnel_crash", 120, stream=out, columns=60)
    assert view.tty
    view.on_sample(_sample(29.0))
    first = out.getvalue()
    assert "\x1b[" not in first.split("\r", 1)[0]  # nothing to move up over on the first draw
    assert first.count(CLEAR_LINE) == 8  # progress, six signals, "events -"
    assert first.endswith(CLEAR_BELOW)
    view.on_event(TUNNEL)
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[8A")  # back over the eight lines drawn before
    assert "  events      30.0 s  action       tunnel (for_s=18)\n" in second
    view.on_event(LINK_DOWN)
    assert out.getvalue()[len(first) + len(second) :].startswith("\x1b[8A")
    view.on_sample(_sample(34.0, coverage=False))
    assert out.getvalue().rsplit("\x1b[9A", 1)[1].count(CLEAR_LINE) == 9  # the block grew by one event
    view.finish(_timeline(passed=True))
    summary = out.getvalue().rsplit(CLEAR_BELOW, 1)[1]
    assert summary.splitlines() == [
        "tunnel_crash: PASS (2/2 expectations)",
        "  PASS records_without_gaps: 90 of 90 stored",
        "  PASS msd_received: PSAP decoded VIN WMWZZZ3CZ2E123456",
    ]


def test_tty_lines_are_cut_to_the_terminal_width_so_the_cursor_count_holds() -> None:
    out = _Terminal()
    view = LiveView("x", 10, stream=out, columns=30)
    view.on_event(Event(t=1.0, kind=EventKind.FAULT, label="serial_garbage", detail="device=obd " * 10))
    screen = ANSI.sub("", out.getvalue()).replace("\r", "")
    assert max(len(line) for line in screen.splitlines()) == 29


def test_only_the_last_events_are_kept_on_screen() -> None:
    out = _Terminal()
    view = LiveView("x", 100, stream=out, last_events=2, columns=200)
    for t in range(5):
        view.on_event(Event(t=float(t), kind=EventKind.ACTION, label=f"step {t}"))
    last_block = ANSI.sub("", out.getvalue().rsplit("\x1b[9A", 1)[-1]).replace("\r", "")
    assert "step 4" in last_block
    assert "step 3" in last_block
    assert "step 2" not in last_block
