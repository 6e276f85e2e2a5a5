"""The lanes of `timeline.png` that are drawn as bars and markers: the bench (phase, agent, link), the
faults, doors and locks, and the events with the eCall's states (`hil.report_plot` lays them out).

`lane_px` is the lanes' width in pixels: a label goes inside its bar only where it fits, and event
labels are staggered so none covers another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hil.backend_series import MSD_AT_PSAP
from hil.report_rows import ecall_rows
from hil.timeline import EventKind, Phase, Point, Sample, Span, SpanKind, Timeline, link_state, runs

if TYPE_CHECKING:
    from matplotlib.axes import Axes

BENCH_ROWS = ("link", "agent", "phase")  # bottom to top
_PHASE_COLOURS: dict[str, str] = {Phase.STARTUP: "#b0bec5", Phase.RUN: "#e3f2fd", Phase.DRAIN: "#78909c"}
_PHASE_NAMES: dict[str, str] = {Phase.STARTUP: "start-up", Phase.RUN: "run", Phase.DRAIN: "drain"}
_UP, _DOWN, _AGENT_DOWN, _NOT_YET, _STARTING = "#66bb6a", "#e53935", "#424242", "#cfd8dc", "#c8e6c9"
_STOPPED = "#90a4ae"  # the main agent stopped for the drain, on purpose
_FAULT_COLOURS = {
    "agent_kill": "#d84315",
    "disk_full": "#6d4c41",
    "tunnel": "#f9a825",
    "broker_outage": "#ad1457",
    "latency": "#00838f",
    "unplug": "#5e35b1",
    "serial_garbage": "#ef6c00",
}
_FAULT_FALLBACK = "#e65100"
ECALL_COLOURS = {  # the eCall state machine's states, distinct at a glance; an unknown one gets the fallback
    "triggered": "#ffb74d",
    "dialling": "#ff8a65",
    "call_established": "#e57373",
    "msd_sent": "#e53935",
    "msd_acknowledged": "#b71c1c",
    "voice": "#8e24aa",
    "cleared": "#bdbdbd",
    "callback_window": "#90caf9",
}
ECALL_FALLBACK = "#f48fb1"
_EVENT_ROWS = (EventKind.ACTION, EventKind.PROVISIONING, EventKind.MEASURE, EventKind.ECALL)
_MARKERS = {  # kind -> (marker, colour)
    EventKind.ACTION: ("o", "#455a64"),
    EventKind.FAULT: ("X", "#e65100"),
    EventKind.PROVISIONING: ("s", "#1565c0"),
    EventKind.MEASURE: ("D", "#6a1b9a"),
    EventKind.ECALL: ("*", "#c62828"),
}
_DOORS = (
    ("Vehicle.Cabin.Door.Row1.DriverSide", "row 1 driver"),
    ("Vehicle.Cabin.Door.Row1.PassengerSide", "row 1 passenger"),
    ("Vehicle.Cabin.Door.Row2.DriverSide", "row 2 driver"),
    ("Vehicle.Cabin.Door.Row2.PassengerSide", "row 2 passenger"),
    ("Vehicle.Body.Trunk.Rear", "trunk"),
    ("Vehicle.Body.Hood", "hood"),
)
CENTRAL_LOCK = "Vehicle.Body.CentralLock.State"
_LOCK_COLOURS = {"LOCKED": "#1e88e5", "DOUBLE_LOCKED": "#0d47a1", "UNLOCKED": "#e0e0e0"}
_CHAR_PX = 7 * 0.6 * 100 / 72  # a 7 pt character at 100 dpi
_LABEL_LEVELS = (0.3, -0.3)  # event labels sit above or below their row, clear of markers and spans


def nothing_to_show(ax: Axes, text: str, size: float = 8) -> None:
    """A grey note in the middle of an empty lane, saying what it would have shown."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#757575", fontsize=size)


def _fits(text: str, width_s: float, end: float, lane_px: float, size: float = 7.0) -> bool:
    return width_s / end * lane_px > len(text) * _CHAR_PX * size / 7 + 6


def _bar(ax: Axes, a: float, b: float, y: float, height: float, colour: str, end: float, lane_px: float) -> None:  # noqa: PLR0917
    """A bar at least 3 px wide: a sub-second restart still shows."""
    width = max(b - a, 3 * end / lane_px)
    ax.broken_barh([(a, width)], (y - height / 2, height), color=colour, lw=0, zorder=2)


def _in_bar(ax: Axes, a: float, b: float, y: float, text: str, colour: str, end: float, lane_px: float) -> None:  # noqa: PLR0917
    if _fits(text, b - a, end, lane_px):
        ax.text((a + b) / 2, y, text, ha="center", va="center", fontsize=7, color=colour, zorder=3, clip_on=True)


def _pieces(a: float, b: float, phases: Sequence[Span]) -> list[tuple[float, float, str]]:
    """[a, b) cut at the phase boundaries: (start, end, phase)."""
    cut = [(max(a, p.start), min(b, p.end), p.label) for p in phases if min(b, p.end) > max(a, p.start)]
    return cut or [(a, b, Phase.RUN)]


def draw_bench(ax: Axes, timeline: Timeline, end: float, lane_px: float) -> None:
    """Phase, agent and link rows. A link down in the start-up or the drain is the bench's own doing:
    drawn pale, not red; an agent that was not running has no link at all."""
    phases = timeline.spans_of(SpanKind.PHASE)
    link_y, agent_y, phase_y = 0, 1, 2
    for span in phases:
        _bar(ax, span.start, span.end, phase_y, 0.7, _PHASE_COLOURS.get(span.label, "#eeeeee"), end, lane_px)
        name = _PHASE_NAMES.get(span.label, span.label)
        _in_bar(
            ax, span.start, span.end, phase_y, name, "#263238" if span.label == Phase.RUN else "white", end, lane_px
        )
    samples = timeline.samples
    startup = timeline.phase(Phase.STARTUP)
    if startup is not None and samples and samples[0].t > startup.start:  # started by the runner, not yet seen
        for y in (agent_y, link_y):
            _bar(ax, startup.start, samples[0].t, y, 0.7, _STARTING if y == agent_y else _NOT_YET, end, lane_px)
            _in_bar(ax, startup.start, samples[0].t, y, "starting", "#263238", end, lane_px)
    for a, b, state in runs(samples, lambda s: s.t, _agent_state, end):
        for x0, x1, phase in _pieces(a, b, phases):
            colour, text = {"running": (_UP, "running"), "starting": (_STARTING, "starting")}.get(
                str(state), (_AGENT_DOWN, "DOWN") if phase != Phase.DRAIN else (_STOPPED, "stopped")
            )
            _bar(ax, x0, x1, agent_y, 0.7, colour, end, lane_px)
            _in_bar(ax, x0, x1, agent_y, text, "white" if colour == _AGENT_DOWN else "#263238", end, lane_px)
    labelled: dict[float, list[tuple[float, float]]] = {0.45: [], -0.45: []}  # above and below the row
    for span in timeline.spans_of(SpanKind.AGENT_DOWN):
        _bar(ax, span.start, span.end, agent_y, 0.7, _AGENT_DOWN, end, lane_px)
        label = span.label.split(": ", 1)[-1].split(" (", 1)[0]  # "disk_full: restart 1 of 2 (...)" -> "restart 1 of 2"
        x = span.end + 2 * end / lane_px
        extent = (x, x + (len(label) + 1) * _CHAR_PX * 6.5 / 7 * end / lane_px)
        level = next(
            (lv for lv in (0.45, -0.45) if not any(extent[0] < b and a < extent[1] for a, b in labelled[lv])), None
        )
        if level is None:
            continue  # no room: the Markdown lists every agent-down span
        labelled[level].append(extent)
        ax.text(
            x,
            agent_y + level,
            label,
            fontsize=6.5,
            va="center",
            ha="left",
            color=_AGENT_DOWN,
            zorder=4,
            clip_on=True,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 0.4},
        )
    for a, b, state in runs(samples, lambda s: s.t, link_state, end):
        for x0, x1, phase in _pieces(a, b, phases):
            if state == "agent down":
                colour, text = (_AGENT_DOWN, "no agent") if phase != Phase.DRAIN else (_STOPPED, "no agent")
            elif state == "starting":
                colour, text = _NOT_YET, "starting"
            elif state == "up":
                colour, text = _UP, "up"
            elif phase == Phase.RUN:
                colour, text = _DOWN, "DOWN"
            else:
                colour, text = _NOT_YET, _PHASE_NAMES.get(phase, phase)
            _bar(ax, x0, x1, link_y, 0.7, colour, end, lane_px)
            _in_bar(ax, x0, x1, link_y, text, "#263238" if colour == _NOT_YET else "white", end, lane_px)
    for span in timeline.spans_of(SpanKind.AGENT_DOWN):  # a restart between two samples: no agent, no link
        _bar(ax, span.start, span.end, link_y, 0.7, _AGENT_DOWN, end, lane_px)
    ax.set_yticks([link_y, agent_y, phase_y], ["link", "agent", "bench"], fontsize=9)
    ax.set_ylim(-0.6, 2.6)


def _agent_state(sample: Sample) -> str:
    return "DOWN" if not sample.agent_up else "starting" if sample.starting else "running"


def _fault_colour(label: str) -> str:
    return _FAULT_COLOURS.get(label.split(" ", 1)[0], _FAULT_FALLBACK)


def draw_faults(ax: Axes, timeline: Timeline, end: float, lane_px: float) -> None:
    """Each fault a bar from its start to its end, labelled; overlapping ones on rows of their own."""
    faults = timeline.spans_of(SpanKind.FAULT)
    rows: list[float] = []  # per row: where it is free again
    placed = []
    for span in faults:
        label = f"{span.label} ({span.duration:.1f} s)"
        inside = _fits(label, span.duration, end, lane_px)
        reach = span.end if inside else span.end + (len(label) + 2) * _CHAR_PX * end / lane_px
        row = next((i for i, free in enumerate(rows) if free <= span.start), len(rows))
        if row == len(rows):
            rows.append(reach)
        rows[row] = reach
        placed.append((span, row, label, inside))
    height = max(len(rows), 1)
    for span, row, label, inside in placed:
        y = height - 1 - row
        _bar(ax, span.start, span.end, y, 0.62, _fault_colour(span.label), end, lane_px)
        x, ha = ((span.start + span.end) / 2, "center") if inside else (span.end + 2 * end / lane_px, "left")
        ax.text(
            x,
            y,
            label,
            ha=ha,
            va="center",
            fontsize=7,
            zorder=3,
            clip_on=True,
            color="white" if inside else _fault_colour(span.label),
        )
    bounds = [t for s in faults for t in (s.start, s.end)]
    loose = [e for e in timeline.events if e.kind is EventKind.FAULT and all(abs(e.t - t) > 0.15 for t in bounds)]
    for event in loose:  # a fault without a span: a failed step, an old timeline's fault marker
        ax.plot([event.t], [height], marker="X", color=_FAULT_FALLBACK, ms=7, ls="", zorder=4)
        ax.text(
            event.t + 7 * end / lane_px,
            height,
            event.label[:28],
            fontsize=6.5,
            va="center",
            color=_FAULT_FALLBACK,
            zorder=4,
            clip_on=True,
        )
    if not faults and not loose:
        nothing_to_show(ax, "no faults injected")
    ax.set_yticks([])
    ax.set_ylim(-0.6, height - 0.4 + (1.0 if loose else 0))
    ax.set_ylabel("faults", fontsize=9)


def _held(
    points: Sequence[Point], hold: Callable[[Sequence[Point]], float], end: float
) -> list[tuple[float, float, object]]:
    """Runs of a signal's value, each reading standing until the next one but no longer than `hold`."""
    limit = hold(points)
    result: list[tuple[float, float, object]] = []
    for index, (t, value) in enumerate(points):
        nxt = points[index + 1][0] if index + 1 < len(points) else end
        stop = min(nxt, t + limit) if index + 1 < len(points) else max(min(end, t + limit), t)
        if result and result[-1][2] == value and result[-1][1] >= t:
            result[-1] = (result[-1][0], stop, value)
        else:
            result.append((t, stop, value))
    return result


def draw_doors(ax: Axes, timeline: Timeline, end: float, hold: Callable[[Sequence[Point]], float]) -> None:
    """A row per door or flap: open in the upper half (orange), locked in the lower (blue), a thin grey
    line where the state is known and neither; and the central lock's state."""
    series = timeline.series
    doors = [
        (prefix, name) for prefix, name in _DOORS if f"{prefix}.IsOpen" in series or f"{prefix}.IsLocked" in series
    ]
    lock = series.get(CENTRAL_LOCK)
    rows = len(doors) + (1 if lock else 0)
    if not rows:
        nothing_to_show(ax, "no door or lock signals reported")
        ax.set_yticks([])
        ax.set_ylabel("doors,\nlocks", fontsize=9)
        return
    names = []
    for index, (prefix, name) in enumerate(doors):
        y = rows - 1 - index
        names.append((y, name))
        for suffix, colour, offset in ((".IsOpen", "#fb8c00", 0.2), (".IsLocked", "#1e88e5", -0.2)):
            for a, b, value in _held(series.get(prefix + suffix, []), hold, end):
                if value is True:
                    ax.broken_barh([(a, b - a)], (y + offset - 0.18, 0.36), color=colour, lw=0, zorder=2)
                else:
                    ax.broken_barh([(a, b - a)], (y + offset - 0.03, 0.06), color="#cfd8dc", lw=0, zorder=1)
    if lock:
        names.append((0, "central lock"))
        for a, b, value in _held(lock, hold, end):
            ax.broken_barh([(a, b - a)], (-0.35, 0.7), color=_LOCK_COLOURS.get(str(value), "#b39ddb"), lw=0)
            if _fits(str(value), b - a, end, 1000.0, 6.5):
                colour = "#263238" if str(value) == "UNLOCKED" else "white"
                ax.text(
                    (a + b) / 2,
                    0,
                    str(value).lower(),
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color=colour,
                    clip_on=True,
                )
    ax.set_yticks([y for y, _ in names], [n for _, n in names], fontsize=7)
    for key_y, text, colour in ((0.72, "▀ open", "#fb8c00"), (0.5, "▄ locked", "#1e88e5")):  # right of the lane
        ax.text(1.006, key_y, text, transform=ax.transAxes, fontsize=7, color=colour, ha="left", va="center")
    ax.set_ylim(-0.6, rows - 0.4)
    ax.set_ylabel("doors,\nlocks", fontsize=9)


def draw_events(ax: Axes, timeline: Timeline, end: float, lane_px: float) -> list[Any]:
    """One row per event kind: markers with staggered labels; eCall and measure states as spans.
    Returns the legend handles of the eCall states drawn."""
    from matplotlib.patches import Patch  # noqa: PLC0415

    row = {kind: index for index, kind in enumerate(_EVENT_ROWS)}
    ax.set_yticks(range(len(_EVENT_ROWS)), [str(kind) for kind in _EVENT_ROWS], fontsize=9)
    ax.set_ylim(-0.6, len(_EVENT_ROWS) - 0.4)
    handles: list[Any] = []

    def state_bar(a: float, b: float, state: str) -> None:
        colour = ECALL_COLOURS.get(state, ECALL_FALLBACK)
        ax.broken_barh(
            [(a, max(b - a, 2 * end / lane_px))], (row[EventKind.ECALL] - 0.15, 0.3), color=colour, lw=0, zorder=1
        )
        if state not in [h.get_label() for h in handles]:
            handles.append(Patch(color=colour, label=f"eCall {state}"))

    marks: list[tuple[float, EventKind, str]] = []
    if timeline.ecall:  # the vehicle's own ms time stamps
        states = [m for m in timeline.ecall if m.source == "vehicle" and m.label in ECALL_COLOURS]
        for index, mark in enumerate(states):
            nxt = next((m.t for m in states[index + 1 :] if m.session == mark.session), end)
            if mark.label != "idle":
                state_bar(mark.t, nxt, mark.label)
        for _session, offset, mark in ecall_rows(timeline.ecall):
            if mark.label == MSD_AT_PSAP:
                marks.append((mark.t, EventKind.ECALL, f"MSD at the PSAP +{offset} ms"))
    else:
        for a, b, state in runs(timeline.samples, lambda s: s.t, lambda s: s.ecall_state, end):
            if state not in (None, "idle"):
                state_bar(a, b, str(state))
    for a, b, state in runs(timeline.samples, lambda s: s.t, lambda s: s.measure_state, end):
        if state is not None:
            ax.broken_barh([(a, b - a)], (row[EventKind.MEASURE] - 0.15, 0.3), color="#e1bee7", lw=0, zorder=1)
            _in_bar(ax, a, b, row[EventKind.MEASURE], str(state), "#4a148c", end, lane_px)
    for event in timeline.events:
        if event.kind in row and not (event.kind is EventKind.ECALL and timeline.ecall):
            marks.append((event.t, event.kind, event.label))
    _markers(ax, sorted(marks, key=lambda m: (m[0], str(m[1]), m[2])), row, end, lane_px)
    return handles


def _markers(
    ax: Axes, marks: Sequence[tuple[float, EventKind, str]], row: dict[EventKind, int], end: float, lane_px: float
) -> None:
    char_s = _CHAR_PX * end / lane_px  # a 7 pt label character, in seconds of x axis
    taken: dict[tuple[EventKind, float], list[tuple[float, float]]] = {}
    for t, kind, text in marks:
        marker, colour = _MARKERS[kind]
        y = row[kind]
        ax.plot([t], [y], marker=marker, color=colour, markersize=9 if marker == "*" else 6, ls="", zorder=4)
        label = text if len(text) <= 28 else text[:27] + "…"
        width = (len(label) + 1) * char_s
        left = t + 0.8 * char_s + width > end  # near the right edge: the label goes before the marker
        extent = (t - width - 0.8 * char_s, t) if left else (t, t + 0.8 * char_s + width)
        for level in _LABEL_LEVELS:  # above the row, else below it; if both are taken the table has it
            intervals = taken.setdefault((kind, level), [])
            if all(extent[1] <= a or b <= extent[0] for a, b in intervals):
                intervals.append(extent)
                ax.text(
                    t + (-0.8 if left else 0.8) * char_s,
                    y + level,
                    label,
                    fontsize=7,
                    va="center",
                    ha="right" if left else "left",
                    color=colour,
                    zorder=5,
                    clip_on=True,
                    bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 0.6},
                )
                break
