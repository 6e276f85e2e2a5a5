"""The end-of-run report of a HIL scenario: `report.md`, `timeline.png` and `timeline.json`.

A failing CI run should say what went wrong without anyone opening the bench folder: the Markdown
carries the verdict, every expectation's detail and every event; the plot shows how speed, coverage,
the vehicle's queue and the backend's store moved against the faults and the eCall; the JSON is the
raw timeline for anyone who wants to look closer (or re-plot an old run with `load_timeline`).

All three are deterministic — no timestamps, fixed figure size and DPI, matplotlib's default style
whatever the user's matplotlibrc, no `Software` chunk in the PNG — so two runs that behaved the same
produce byte-identical reports and a change in behaviour shows up as a diff. matplotlib is imported
inside the plotting functions only, when a report is written: importing this module costs nothing.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.timeline import Event, EventKind, ExpectationResult, Sample, Timeline
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FORMAT = "tcu-hil-timeline"
VERSION = 1
FIG_SIZE_IN = (12.0, 10.0)
DPI = 100  # -> a 1200 x 1000 px PNG
_LEFT, _RIGHT = 0.08, 0.985  # fixed margins: label placement below relies on the axes' pixel width
_LANE = (EventKind.ACTION, EventKind.FAULT, EventKind.PROVISIONING, EventKind.MEASURE, EventKind.ECALL)
_MARKERS = {  # kind -> (marker, colour)
    EventKind.ACTION: ("o", "#455a64"),
    EventKind.FAULT: ("X", "#e65100"),
    EventKind.PROVISIONING: ("s", "#1565c0"),
    EventKind.MEASURE: ("D", "#6a1b9a"),
    EventKind.ECALL: ("*", "#c62828"),
}
_ECALL_COLOURS = {  # the eCall state machine's states, distinct at a glance; an unknown one gets the fallback
    "triggered": "#ffb74d",
    "dialling": "#ff8a65",
    "call_established": "#e57373",
    "msd_sent": "#e53935",
    "msd_acknowledged": "#b71c1c",
    "voice": "#8e24aa",
    "cleared": "#bdbdbd",
    "callback_window": "#90caf9",
}
_ECALL_FALLBACK = "#f48fb1"
_LINK_DOWN = "#ffcdd2"
_LABEL_LEVELS = (0.3, -0.3)  # event labels sit above or below their row, clear of markers and spans


# -- the JSON round trip (sans-I/O codec plus two thin file shells) -------------------------------


def timeline_to_json(timeline: Timeline) -> str:
    """One sample, event or result per line: long runs stay readable and diff line by line."""

    def items(rows: Iterable[dict[str, Any]]) -> str:
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        return "[\n    " + ",\n    ".join(lines) + "\n  ]" if lines else "[]"

    head = {"format": FORMAT, "version": VERSION, "scenario": timeline.scenario}
    head |= {"description": timeline.description, "passed": timeline.passed}
    parts = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in head.items()]
    events = ({"t": e.t, "kind": str(e.kind), "label": e.label, "detail": e.detail} for e in timeline.events)
    results = ({"name": r.name, "passed": r.passed, "detail": r.detail} for r in timeline.expectations)
    parts.append(f'  "samples": {items(_sample_dict(s) for s in timeline.samples)}')
    parts.append(f'  "events": {items(events)}')
    parts.append(f'  "expectations": {items(results)}')
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _sample_dict(sample: Sample) -> dict[str, Any]:
    return {
        "t": sample.t,
        "speed_kmh": sample.speed_kmh,
        "coverage": sample.coverage,
        "queue_depth": sample.queue_depth,
        "stored_at_backend": sample.stored_at_backend,
        "ecall_state": sample.ecall_state,
        "measure_state": sample.measure_state,
    }


def timeline_from_json(text: str, *, source: str = "timeline") -> Timeline:
    """The inverse of `timeline_to_json`; a malformed document is refused with the place."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f'{source}: not a timeline (expected "format": "{FORMAT}")')
    if doc.get("version") != VERSION:
        raise ConfigError(f"{source}: timeline version {doc.get('version')!r}, this tool reads {VERSION}")
    where = source
    try:
        samples = []
        for index, row in enumerate(doc["samples"]):
            where = f"{source}: samples[{index}]"
            samples.append(Sample(**row))
        events = []
        for index, row in enumerate(doc["events"]):
            where = f"{source}: events[{index}]"
            events.append(Event(t=row["t"], kind=EventKind(row["kind"]), label=row["label"], detail=row["detail"]))
        results = []
        for index, row in enumerate(doc["expectations"]):
            where = f"{source}: expectations[{index}]"
            results.append(ExpectationResult(**row))
        return Timeline(
            scenario=doc["scenario"],
            description=doc["description"],
            samples=samples,
            events=events,
            expectations=results,
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: missing {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def dump_timeline(timeline: Timeline, path: Path) -> None:
    path.write_text(timeline_to_json(timeline), encoding="utf-8")


def load_timeline(path: Path) -> Timeline:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the timeline {path}: {exc.strerror or exc}") from exc
    return timeline_from_json(text, source=str(path))


# -- the Markdown -----------------------------------------------------------------------------------


def duration_s(timeline: Timeline) -> float:
    """Scenario seconds from the start to the last sample or event."""
    return max([s.t for s in timeline.samples] + [e.t for e in timeline.events], default=0.0)


def spans(samples: Sequence[Sample], value: Callable[[Sample], object]) -> list[tuple[float, float, object]]:
    """Runs of equal `value`: (start, end, value); a sample holds until the next one (the last for 1 s)."""
    runs: list[tuple[float, float, object]] = []
    for index, sample in enumerate(samples):
        end = samples[index + 1].t if index + 1 < len(samples) else sample.t + 1.0
        current = value(sample)
        if runs and runs[-1][2] == current:
            runs[-1] = (runs[-1][0], end, current)
        else:
            runs.append((sample.t, end, current))
    return runs


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def render_markdown(timeline: Timeline, *, plot_name: str = "timeline.png", data_name: str = "timeline.json") -> str:
    results = timeline.expectations
    down = [(a, b) for a, b, up in spans(timeline.samples, lambda s: s.coverage) if not up]
    samples = timeline.samples
    lines = [f"# Scenario `{timeline.scenario}`: {_verdict(timeline.passed)}", ""]
    if timeline.description:
        lines += [timeline.description, ""]
    lines += [
        f"- **Result:** {_verdict(timeline.passed)} — {sum(r.passed for r in results)} of {len(results)} "
        f"expectations passed" + (" (none were checked)" if not results else ""),
        f"- **Duration:** {duration_s(timeline):.1f} s scenario time, {len(samples)} samples, "
        f"{len(timeline.events)} events",
        f"- **Link down:** {sum(b - a for a, b in down):.1f} s in {len(down)} span(s)",
        f"- **Queue depth:** max {max((s.queue_depth for s in samples), default=0)}, "
        f"at the end {samples[-1].queue_depth if samples else 0}",
        f"- **Stored at the backend:** {samples[-1].stored_at_backend if samples else 0} records",
        "",
        "## Expectations",
        "",
    ]
    if results:
        lines += ["| Expectation | Result | Detail |", "|---|---|---|"]
        lines += [f"| {_cell(r.name)} | {_verdict(r.passed)} | {_cell(r.detail)} |" for r in results]
    else:
        lines.append("No expectations were checked.")
    lines += ["", "## Timeline", "", f"![Timeline of {timeline.scenario}]({plot_name})", ""]
    lines += [f"Raw data: [{data_name}]({data_name})", "", "## Events", ""]
    if timeline.events:
        lines += ["| Time (s) | Kind | Label | Detail |", "|---:|---|---|---|"]
        lines += [f"| {e.t:.1f} | {e.kind} | {_cell(e.label)} | {_cell(e.detail)} |" for e in timeline.events]
    else:
        lines.append("No events.")
    return "\n".join(lines) + "\n"


def write_report(timeline: Timeline, directory: Path) -> Path:
    """Write `report.md`, `timeline.png` and `timeline.json` into `directory`; return the Markdown's path."""
    directory.mkdir(parents=True, exist_ok=True)
    dump_timeline(timeline, directory / "timeline.json")
    plot_timeline(timeline, directory / "timeline.png")
    report = directory / "report.md"
    report.write_text(render_markdown(timeline), encoding="utf-8")
    return report


# -- the plot ---------------------------------------------------------------------------------------


def plot_timeline(timeline: Timeline, path: Path) -> None:
    """Stacked panels on one time axis: speed, link, queue, backend, and the event lane."""
    import matplotlib.style  # noqa: PLC0415 - lazily: only report writers need matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    samples = timeline.samples
    end = max(duration_s(timeline), samples[-1].t + 1.0 if samples else 0.0, 1.0)
    times = [s.t for s in samples]
    down = [(a, b) for a, b, up in spans(samples, lambda s: s.coverage) if not up]
    with matplotlib.style.context("default"):  # the same PNG whatever the user's matplotlibrc says
        fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
        FigureCanvasAgg(fig)  # Agg, not pyplot: no display, no global figure registry
        speed_ax, link_ax, queue_ax, store_ax, lane_ax = fig.subplots(
            5, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 0.45, 1.4, 1.4, 3.2], "hspace": 0.12}
        )
        fig.subplots_adjust(left=_LEFT, right=_RIGHT, top=0.9, bottom=0.1)
        colour = "#2e7d32" if timeline.passed else "#c62828"
        fig.suptitle(
            f"{timeline.scenario}: {_verdict(timeline.passed)}",
            x=_LEFT,
            ha="left",
            va="top",
            y=0.985,
            fontsize=15,
            fontweight="bold",
            color=colour,
        )
        subtitle = "".join(
            f"{line}\n" for line in textwrap.wrap(timeline.description, 160, max_lines=2, placeholder=" …")
        )
        fig.text(
            _LEFT,
            0.952,
            f"{subtitle}duration {duration_s(timeline):.1f} s scenario time",
            ha="left",
            va="top",
            fontsize=9,
            color="#424242",
        )
        for ax in (speed_ax, queue_ax, store_ax, lane_ax):
            for a, b in down:
                ax.axvspan(a, b, color=_LINK_DOWN, alpha=0.45, lw=0, zorder=0)
            ax.grid(axis="x", color="#e0e0e0", lw=0.6)

        speed = [math.nan if s.speed_kmh is None else s.speed_kmh for s in samples]
        speed_ax.plot(times, speed, color="#1565c0", lw=1.6)
        speed_ax.set_ylabel("speed\n(km/h)")
        speed_ax.set_ylim(bottom=0, top=max([v for v in speed if not math.isnan(v)] + [10.0]) * 1.15)
        speed_ax.legend(
            handles=[Patch(color=_LINK_DOWN, alpha=0.6, label="link down")],
            loc="upper right",
            fontsize=8,
            framealpha=0.9,
        )

        for a, b, up in spans(samples, lambda s: s.coverage):
            link_ax.axvspan(a, b, color="#66bb6a" if up else "#e53935", lw=0)
            if (b - a) / end > 0.04:
                link_ax.text(
                    (a + b) / 2,
                    0.5,
                    "up" if up else "DOWN",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                    fontweight="bold",
                )
        link_ax.set_yticks([])
        link_ax.set_ylabel("link", rotation=0, ha="right", va="center")

        _steps(queue_ax, samples, [s.queue_depth for s in samples], "#ef6c00", "queue\n(records)")
        _steps(store_ax, samples, [s.stored_at_backend for s in samples], "#2e7d32", "stored at\nbackend")
        handles = _lane(lane_ax, timeline, end)
        lane_ax.set_xlim(0, end)
        lane_ax.set_xlabel("scenario time (s)")
        if handles:
            fig.legend(
                handles=handles,
                loc="lower center",
                ncol=min(len(handles), 9),
                fontsize=8,
                frameon=False,
                bbox_to_anchor=(0.5, 0.0),
                title="eCall state",
                title_fontsize=8,
            )
        fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def _steps(ax: Axes, samples: Sequence[Sample], values: list[int], colour: str, label: str) -> None:
    if samples:
        xs = [s.t for s in samples] + [samples[-1].t + 1.0]
        ax.stairs(values, xs, color=colour, alpha=0.12, fill=True, lw=0)
        ax.stairs(values, xs, color=colour, lw=1.6, baseline=None)
    ax.set_ylim(bottom=0, top=max([*values, 1]) * 1.18)
    ax.set_ylabel(label)


def _lane(ax: Axes, timeline: Timeline, end: float) -> list[Any]:
    """One row per event kind: markers with staggered labels; eCall and measure states as spans."""
    from matplotlib.patches import Patch  # noqa: PLC0415

    axes_px = FIG_SIZE_IN[0] * DPI * (_RIGHT - _LEFT)
    row = {kind: index for index, kind in enumerate(_LANE)}
    ax.set_yticks(range(len(_LANE)), [str(kind) for kind in _LANE], fontsize=9)
    ax.set_ylim(-0.6, len(_LANE) - 0.4)
    handles: list[Any] = []
    for a, b, state in spans(timeline.samples, lambda s: s.ecall_state):
        if state not in (None, "idle"):
            colour = _ECALL_COLOURS.get(str(state), _ECALL_FALLBACK)
            ax.broken_barh([(a, b - a)], (row[EventKind.ECALL] - 0.15, 0.3), color=colour, lw=0, zorder=1)
            if str(state) not in [h.get_label() for h in handles]:
                handles.append(Patch(color=colour, label=str(state)))
    for a, b, state in spans(timeline.samples, lambda s: s.measure_state):
        if state is not None:
            ax.broken_barh([(a, b - a)], (row[EventKind.MEASURE] - 0.15, 0.3), color="#e1bee7", lw=0, zorder=1)
            if (b - a) / end * axes_px > len(str(state)) * 6.5 * 0.6 * DPI / 72 + 16:  # only when it fits
                ax.text(
                    (a + b) / 2,
                    row[EventKind.MEASURE],
                    str(state),
                    fontsize=6.5,
                    color="#4a148c",
                    ha="center",
                    va="center",
                    zorder=3,
                )
    char_s = 7 * 0.6 * DPI / 72 * end / axes_px  # a 7 pt label character, in seconds of x axis
    taken: dict[tuple[EventKind, float], list[tuple[float, float]]] = {}
    for event in timeline.events:
        if event.kind not in row:
            continue  # link events: the link panel shows them
        marker, colour = _MARKERS[event.kind]
        y = row[event.kind]
        ax.plot([event.t], [y], marker=marker, color=colour, markersize=9 if marker == "*" else 6, ls="", zorder=4)
        label = event.label if len(event.label) <= 28 else event.label[:27] + "…"
        width = (len(label) + 1) * char_s
        left = event.t + 0.8 * char_s + width > end  # near the right edge: the label goes before the marker
        extent = (event.t - width - 0.8 * char_s, event.t) if left else (event.t, event.t + 0.8 * char_s + width)
        for level in _LABEL_LEVELS:  # above the row, else below it; if both are taken the table has it
            intervals = taken.setdefault((event.kind, level), [])
            if all(extent[1] <= a or b <= extent[0] for a, b in intervals):
                intervals.append(extent)
                ax.text(
                    event.t + (-0.8 if left else 0.8) * char_s,
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
    return handles
