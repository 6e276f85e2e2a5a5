"""The terminal live view of a scenario run: what the bench is doing now, for runs long enough to wonder.

On a terminal one status block redraws in place with plain ANSI sequences (cursor up, erase line) —
no curses, so it needs nothing beyond a VT100-ish terminal. In a CI log (not a TTY) the redraw
would be noise, so the same signals come as one compact line per sample, with the events since the
previous sample on the same line: the log stays one line per scenario second and greps well.

The text is made by pure functions (`render_progress`, `render_status`, `render_line`,
`render_summary`) that tests pin exactly; `LiveView` only keeps the latest state and decides how to
write it to its injected stream. Its `on_sample`/`on_event` fit the runner's callbacks.
"""

from __future__ import annotations

import math
import shutil
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from hil.timeline import Event, Sample, Timeline, link_state

CURSOR_UP = "\x1b[{}A"  # CUU: up n lines (n >= 1; 0 means 1 on most terminals)
CLEAR_LINE = "\x1b[2K"  # EL 2: erase the whole line
CLEAR_BELOW = "\x1b[J"  # ED 0: erase from the cursor to the end of the screen (a shorter block's leftovers)
_LABEL_WIDTH = 10


def render_progress(t: float, duration_s: float, *, width: int = 30) -> str:
    """`[#####.....] 42% 50/120 s`: a cell fills as soon as it is started, so any progress shows."""
    fraction = min(max(t / duration_s, 0.0), 1.0) if duration_s > 0 else 1.0
    filled = min(math.ceil(fraction * width - 1e-9), width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction:.0%} {t:.0f}/{duration_s:.0f} s"


def _speed(sample: Sample | None) -> str:
    return "-" if sample is None or sample.speed_kmh is None else f"{sample.speed_kmh:.1f} km/h"


def _link(sample: Sample | None) -> str:
    """A down agent's link is no link at all, and a starting one has not tried yet: not "DOWN"."""
    if sample is None:
        return "-"
    state = link_state(sample)
    return "DOWN" if state == "down" else state


def _event(event: Event) -> str:
    detail = f" ({event.detail})" if event.detail else ""
    return f"{event.t:6.1f} s  {event.kind:<12} {event.label}{detail}"


def render_status(
    scenario: str, duration_s: float, sample: Sample | None, events: Sequence[Event], *, last: int = 5
) -> str:
    """The block a terminal shows: progress, every signal on its own line, the last few events."""
    t = sample.t if sample is not None else 0.0

    def row(label: str, value: object) -> str:
        return f"  {label:<{_LABEL_WIDTH}}{value}"

    lines = [
        f"{scenario}  {render_progress(t, duration_s)}",
        row("speed", _speed(sample)),
        row("link", _link(sample)),
        row("queue", "-" if sample is None else f"{sample.queue_depth} records"),
        row("backend", "-" if sample is None else f"{sample.stored_at_backend} stored"),
        row("eCall", (sample and sample.ecall_state) or "-"),
        row("measure", (sample and sample.measure_state) or "-"),
    ]
    recent = list(events)[-last:] if last > 0 else []
    lines.append(row("events", _event(recent[0]) if recent else "-"))
    lines += [row("", _event(event)) for event in recent[1:]]
    return "\n".join(lines)


def render_line(sample: Sample, duration_s: float, events: Sequence[Event] = ()) -> str:
    """One compact line per sample for logs; `events` are those since the previous sample."""
    fraction = min(max(sample.t / duration_s, 0.0), 1.0) if duration_s > 0 else 1.0
    parts = [
        f"{sample.t:.0f}/{duration_s:.0f} s {fraction:.0%}",
        f"speed {_speed(sample)}",
        f"link {_link(sample)}",
        f"queue {sample.queue_depth}",
        f"backend {sample.stored_at_backend}",
        f"eCall {sample.ecall_state or '-'}",
        f"measure {sample.measure_state or '-'}",
    ]
    if events:
        parts.append("; ".join(f"{e.t:.1f} {e.kind} {e.label}" for e in events))
    return " | ".join(parts)


def render_summary(timeline: Timeline, report: Path | None = None) -> str:
    """The verdict and every expectation, for the last lines of a run's output."""
    results = timeline.expectations
    passed = sum(r.passed for r in results)
    lines = [f"{timeline.scenario}: {'PASS' if timeline.passed else 'FAIL'} ({passed}/{len(results)} expectations)"]
    lines += [f"  {'PASS' if r.passed else 'FAIL'} {r.name}: {r.detail}" for r in results]
    if report is not None:
        lines.append(f"  report: {report}")
    return "\n".join(lines)


class LiveView:
    """Fed with the runner's samples and events; redraws in place on a TTY, one line per sample elsewhere."""

    def __init__(
        self,
        scenario: str,
        duration_s: float,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        last_events: int = 5,
        columns: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.duration_s = duration_s
        self._stream = stream if stream is not None else sys.stdout
        self.tty = self._stream.isatty() if tty is None else tty
        self._columns = columns  # None: ask the terminal at every redraw, so a resize is honoured
        self._last = last_events
        self._sample: Sample | None = None
        self._events: deque[Event] = deque(maxlen=max(last_events, 1))
        self._pending: list[Event] = []  # not a TTY: events since the last line
        self._drawn = 0  # lines of the block currently on screen

    def on_sample(self, sample: Sample) -> None:
        self._sample = sample
        if self.tty:
            self._redraw()
        else:
            self._write(render_line(sample, self.duration_s, self._pending) + "\n")
            self._pending.clear()

    def on_event(self, event: Event) -> None:
        self._events.append(event)
        if self.tty:
            self._redraw()
        else:
            self._pending.append(event)

    def finish(self, timeline: Timeline, report: Path | None = None) -> None:
        """The final state (and events no sample line carried yet), then the verdict."""
        if self.tty:
            self._redraw()
        elif self._pending:
            self._write("; ".join(f"{e.t:.1f} {e.kind} {e.label}" for e in self._pending) + "\n")
            self._pending.clear()
        self._write(render_summary(timeline, report) + "\n")
        self._drawn = 0  # the block is history now: never redraw over the summary

    def _redraw(self) -> None:
        block = render_status(self.scenario, self.duration_s, self._sample, self._events, last=self._last)
        columns = self._columns or shutil.get_terminal_size().columns
        width = max(columns - 1, 20)  # a wrapped line would break the cursor-up count
        parts = [CURSOR_UP.format(self._drawn)] if self._drawn else []
        lines = block.splitlines()
        parts += [f"\r{CLEAR_LINE}{line[:width]}\n" for line in lines]
        parts.append(CLEAR_BELOW)
        self._write("".join(parts))
        self._drawn = len(lines)

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
