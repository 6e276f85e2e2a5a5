"""`timeline.png`: the run lane by lane on one time axis, with the position track and the eCall beside it.

Left, top to bottom: the bench (phase, agent, link — a down agent is drawn down, the bench's start-up
and drain as such), the injected faults as labelled spans, doors and locks, speed (and engine speed),
the vehicle's queue, the records stored at the backend, and the events with the eCall's states.
Right: the position track with start, end and crash point, and the eCall's milliseconds.

Every signal is drawn from its own readings: a value holds until the next reading of that signal, but
no longer than three of its usual intervals — a gap (the agent down) stays a gap.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from hil.report_lanes import draw_bench, draw_doors, draw_events, draw_faults, nothing_to_show
from hil.report_rows import ECALL_LABELS, ecall_rows, verdict
from hil.timeline import Phase, Point, SpanKind, Timeline, duration_s, link_down

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIG_SIZE_IN = (15.0, 12.0)
DPI = 100  # -> a 1500 x 1200 px PNG
LEFT, RIGHT, SPLIT = 0.085, 0.985, 0.735  # fixed margins: label placement relies on the axes' pixel width
LANE_PX = FIG_SIZE_IN[0] * DPI * (SPLIT - LEFT)
LINK_DOWN = "#ffcdd2"
AGENT_DOWN = "#9e9e9e"
PHASE_SHADE = "#eceff1"
_ECALL_SHORT = {"ll_ack": "LL-ACK from the PSAP's modem", "msd_at_psap": "MSD decoded at the PSAP"}
SPEED = "Vehicle.Speed"
RPM = "Vehicle.Powertrain.CombustionEngine.Speed"
LATITUDE, LONGITUDE = "Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocation.Longitude"


def hold_limit(points: Sequence[Point]) -> float:
    """How long a reading may stand for its signal: three of its usual intervals, at least a second."""
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(points) if b[0] > a[0]]
    return max(3 * median(gaps), 1.0) if gaps else 1.0


def numeric_line(points: Sequence[Point]) -> tuple[list[float], list[float]]:
    """x and y of a numeric signal, with a NaN wherever it went unread for longer than it holds."""
    limit = hold_limit(points)
    xs: list[float] = []
    ys: list[float] = []
    for index, (t, value) in enumerate(points):
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if index and t - points[index - 1][0] > limit:
            xs.append(t)
            ys.append(math.nan)
        xs.append(t)
        ys.append(float(value))
    return xs, ys


def plot_timeline(timeline: Timeline, path: Path) -> None:
    import matplotlib.style  # noqa: PLC0415 - lazily: only report writers need matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    end = max(duration_s(timeline), 1.0)
    start = min([0.0] + [s.start for s in timeline.spans] + [s.t for s in timeline.samples[:1]])
    # The lanes place labels by pixels per second: the axis is end - start seconds wide, not end.
    lane_px = LANE_PX * end / (end - start)
    with matplotlib.style.context("default"):  # the same PNG whatever the user's matplotlibrc says
        fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
        FigureCanvasAgg(fig)  # Agg, not pyplot: no display, no global figure registry
        _title(fig, timeline)
        ratios = [0.95, 0.9, 1.25, 1.5, 0.85, 0.85, 1.7]
        grid = fig.add_gridspec(
            len(ratios), 1, left=LEFT, right=SPLIT, top=0.9, bottom=0.09, hspace=0.14, height_ratios=ratios
        )
        bench_ax = fig.add_subplot(grid[0])
        axes = [bench_ax] + [fig.add_subplot(grid[i], sharex=bench_ax) for i in range(1, len(ratios))]
        bench_ax, fault_ax, door_ax, speed_ax, queue_ax, store_ax, event_ax = axes
        for ax in axes[1:]:
            _shade(ax, timeline)
        for ax in axes:
            ax.grid(axis="x", color="#e0e0e0", lw=0.6)
            ax.tick_params(labelbottom=ax is event_ax, labelsize=8)
        draw_bench(bench_ax, timeline, end, lane_px)
        draw_faults(fault_ax, timeline, end, lane_px)
        draw_doors(door_ax, timeline, end, hold_limit)
        _speed(speed_ax, timeline)
        _steps(queue_ax, [(s.t, s.queue_depth) for s in timeline.samples], end, "#ef6c00", "queue\n(records)")
        stored = timeline.stored or [(s.t, s.stored_at_backend) for s in timeline.samples]
        _steps(store_ax, stored, end, "#2e7d32", "stored at\nbackend")
        handles = draw_events(event_ax, timeline, end, lane_px)
        event_ax.set_xlim(start, end)
        event_ax.set_xlabel("scenario time (s)")
        _legend(fig, handles)
        _track(fig.add_axes((SPLIT + 0.085, 0.13, RIGHT - SPLIT - 0.09, 0.36)), timeline)
        _ecall_table(fig, timeline)
        fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def _title(fig: Figure, timeline: Timeline) -> None:
    fig.suptitle(
        f"{timeline.scenario}: {verdict(timeline.passed)}",
        x=LEFT,
        ha="left",
        va="top",
        y=0.985,
        fontsize=15,
        fontweight="bold",
        color="#2e7d32" if timeline.passed else "#c62828",
    )
    subtitle = "".join(f"{line}\n" for line in textwrap.wrap(timeline.description, 190, max_lines=2, placeholder=" …"))
    results = timeline.expectations
    counts = f"{sum(r.passed for r in results)} of {len(results)} expectations passed"
    fig.text(
        LEFT,
        0.955,
        f"{subtitle}duration {duration_s(timeline):.1f} s scenario time; {counts}",
        ha="left",
        va="top",
        fontsize=9,
        color="#424242",
    )


def _shade(ax: Axes, timeline: Timeline) -> None:
    """Behind every lane: the bench's own phases, the agent down (hatched), the link down (pink)."""
    for phase in (Phase.STARTUP, Phase.DRAIN):
        span = timeline.phase(phase)
        if span is not None and span.end > span.start:
            ax.axvspan(span.start, span.end, color=PHASE_SHADE, lw=0, zorder=0)
    for span in timeline.spans_of(SpanKind.AGENT_DOWN):
        ax.axvspan(span.start, span.end, facecolor="none", edgecolor=AGENT_DOWN, hatch="///", lw=0, zorder=0)
    for a, b in link_down(timeline):
        ax.axvspan(a, b, color=LINK_DOWN, alpha=0.5, lw=0, zorder=0)


def _speed(ax: Axes, timeline: Timeline) -> None:
    handles = []
    points = timeline.series.get(SPEED)
    if points:
        xs, ys = numeric_line(points)
        handles += ax.plot(xs, ys, color="#1565c0", lw=1.4, marker="." if len(xs) < 120 else "", ms=3, label="speed")
        top = max([y for y in ys if not math.isnan(y)] + [10.0])
    else:  # an old timeline: the status file's speed
        status = [(s.t, s.speed_kmh) for s in timeline.samples if s.speed_kmh is not None]
        handles += ax.plot([t for t, _ in status], [v for _, v in status], color="#1565c0", lw=1.4)
        top = max([v for _, v in status] + [10.0])
    ax.set_ylim(bottom=0, top=top * 1.15)
    ax.set_ylabel("speed\n(km/h)", fontsize=9)
    rpm = timeline.series.get(RPM)
    if rpm:
        twin = ax.twinx()
        xs, ys = numeric_line(rpm)
        handles += twin.plot(xs, ys, color="#8d6e63", lw=0.9, alpha=0.8, label="engine speed (rpm, OBD)")
        twin.set_ylim(bottom=0, top=max([y for y in ys if not math.isnan(y)] + [1000.0]) * 1.15)
        twin.tick_params(labelsize=7, colors="#8d6e63")
    if not points and not timeline.samples:
        ax.text(0.5, 0.5, "no speed reported", transform=ax.transAxes, ha="center", va="center", color="#757575")
    elif handles and rpm:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.9)


def _steps(ax: Axes, points: Sequence[tuple[float, int]], end: float, colour: str, label: str) -> None:
    values = [v for _, v in points]
    if points:
        xs = [t for t, _ in points] + [max(end, points[-1][0])]
        ax.stairs(values, xs, color=colour, alpha=0.12, fill=True, lw=0)
        ax.stairs(values, xs, color=colour, lw=1.5, baseline=None)
    ax.set_ylim(bottom=0, top=max([*values, 1]) * 1.2)
    ax.set_ylabel(label, fontsize=9)


def _legend(fig: Figure, ecall_handles: list[Any]) -> None:
    from matplotlib.patches import Patch  # noqa: PLC0415

    shading = [
        Patch(color=PHASE_SHADE, label="bench start-up / drain"),
        Patch(facecolor="none", edgecolor=AGENT_DOWN, hatch="///", label="agent down"),
        Patch(color=LINK_DOWN, alpha=0.6, label="link down (agent running)"),
    ]
    fig.legend(
        handles=shading + ecall_handles,
        loc="lower left",
        ncol=min(len(shading + ecall_handles), 7),
        fontsize=7.5,
        frameon=False,
        bbox_to_anchor=(LEFT - 0.01, 0.0),
    )


def _track(ax: Axes, timeline: Timeline) -> None:
    """Latitude against longitude, metres true (x scaled by cos(latitude)): start, end, crash, MSD."""
    from matplotlib.ticker import ScalarFormatter  # noqa: PLC0415

    longitudes = dict(timeline.series.get(LONGITUDE, []))
    fixes = [
        (t, float(lat), float(lon))
        for t, lat in timeline.series.get(LATITUDE, [])
        if isinstance(lat, int | float) and isinstance(lon := longitudes.get(t), int | float)
    ]
    ax.set_title("position track", fontsize=10, loc="left")
    ax.tick_params(labelsize=7)
    if not fixes:
        nothing_to_show(ax, "no position reported", size=10)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    lats, lons = [f[1] for f in fixes], [f[2] for f in fixes]
    ax.plot(lons, lats, color="#1565c0", lw=1.3, zorder=2)
    ax.plot([lons[0]], [lats[0]], "o", color="#2e7d32", ms=7, zorder=3, label="start")
    ax.plot([lons[-1]], [lats[-1]], "s", color="#212121", ms=6, zorder=3, label="end")
    crash_t = _crash_time(timeline)
    if crash_t is not None:
        before = [f for f in fixes if f[0] <= crash_t] or fixes[:1]
        ax.plot([before[-1][2]], [before[-1][1]], "X", color="#c62828", ms=11, zorder=4, label="crash")
    msds = [(m.longitude, m.latitude) for m in timeline.ecall if m.latitude is not None and m.longitude is not None]
    if msds:
        ax.plot(
            [lon for lon, _ in msds],
            [lat for _, lat in msds],
            "o",
            mfc="none",
            mec="#6a1b9a",
            mew=1.6,
            ms=13,
            zorder=4,
            label="MSD position",
        )
    mid_lat = (min(lats) + max(lats)) / 2
    pad = 0.0008
    ax.set_xlim(min(lons) - pad, max(lons) + pad)
    ax.set_ylim(min(lats) - pad, max(lats) + pad)
    ax.set_aspect(1 / max(math.cos(math.radians(mid_lat)), 0.01), adjustable="box")
    for axis in (ax.xaxis, ax.yaxis):
        formatter = ScalarFormatter(useOffset=False)
        axis.set_major_formatter(formatter)
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_xlabel("longitude (°)", fontsize=8)
    ax.set_ylabel("latitude (°)", fontsize=8)
    ax.legend(loc="best", fontsize=7, framealpha=0.85)
    ax.grid(color="#eeeeee", lw=0.6)


def _crash_time(timeline: Timeline) -> float | None:
    trigger = next((m.t for m in timeline.ecall if m.label == "triggered"), None)
    if trigger is not None:
        return trigger
    return next((e.t for e in timeline.events if e.label in ("crash", "sos")), None)


def _ecall_table(fig: Figure, timeline: Timeline) -> None:
    """The eCall's milliseconds from its trigger, as text under the track."""
    x, y = SPLIT + 0.05, 0.9
    fig.text(x, y, "eCall, ms from the trigger", fontsize=10, ha="left", va="top")
    if not timeline.ecall:
        fig.text(x, y - 0.025, "no eCall in this run", fontsize=8.5, ha="left", va="top", color="#757575")
        return
    lines = []
    session = None
    for number, offset, mark in ecall_rows(timeline.ecall)[:24]:
        if number != session:
            lines.append(f"session {number}")
            session = number
        name = _ECALL_SHORT.get(mark.label, ECALL_LABELS.get(mark.label, mark.label))
        lines.append(f"{offset:>7} ms  {name[:32]}")
    if len(timeline.ecall) > 24:
        lines.append(f"… {len(timeline.ecall) - 24} more in report.md")
    fig.text(x, y - 0.025, "\n".join(lines), fontsize=8, family="monospace", ha="left", va="top", color="#212121")
