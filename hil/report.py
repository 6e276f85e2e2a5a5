"""The end-of-run report of a HIL scenario: `report.md`, `timeline.png`, `timeline.json` and `junit.xml`.

A failing CI run should say what went wrong without anyone opening the bench folder: the Markdown
carries the verdict, every expectation with its measured value and limit, every fault span, the
eCall in milliseconds and every event (`hil.report_markdown`); the plot shows the run lane by lane
(`hil.report_plot`); the JSON is the raw timeline for anyone who wants to look closer (or re-plot an
old run with `load_timeline`); `junit.xml` shows each expectation as a test in a CI system
(`hil.junit`).

All four are deterministic — no timestamps, fixed figure size and DPI, matplotlib's default style
whatever the user's matplotlibrc, no `Software` chunk in the PNG — so two runs that behaved the same
produce byte-identical reports and a change in behaviour shows up as a diff. matplotlib is imported
inside the plotting functions only, when a report is written: importing this module costs nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hil.junit import write_junit
from hil.report_markdown import render_markdown
from hil.report_plot import DPI, FIG_SIZE_IN, plot_timeline
from hil.timeline import (
    EcallMark,
    Event,
    EventKind,
    ExpectationResult,
    Point,
    Sample,
    Span,
    SpanKind,
    Timeline,
    duration_s,
    runs,
)
from tcu.errors import ConfigError

__all__ = [
    "DPI",
    "FIG_SIZE_IN",
    "dump_timeline",
    "duration_s",
    "load_timeline",
    "plot_timeline",
    "render_markdown",
    "runs",
    "timeline_from_json",
    "timeline_to_json",
    "write_report",
]

FORMAT = "tcu-hil-timeline"
VERSION = 2  # 2: spans, series, stored, ecall, Sample.agent_up; version 1 files still load
READS = (1, 2)


# -- the JSON round trip (sans-I/O codec plus two thin file shells) -------------------------------


def _items(rows: Iterable[Any]) -> str:
    """One item per line: long runs stay readable and diff line by line."""
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    return "[\n    " + ",\n    ".join(lines) + "\n  ]" if lines else "[]"


def timeline_to_json(timeline: Timeline) -> str:
    head = {"format": FORMAT, "version": VERSION, "scenario": timeline.scenario}
    head |= {"description": timeline.description, "passed": timeline.passed}
    parts = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in head.items()]
    events = ({"t": e.t, "kind": str(e.kind), "label": e.label, "detail": e.detail} for e in timeline.events)
    spans = (
        {"kind": str(s.kind), "label": s.label, "start": s.start, "end": s.end, "detail": s.detail}
        for s in timeline.spans
    )
    parts.append(f'  "samples": {_items(dataclasses.asdict(s) for s in timeline.samples)}')
    parts.append(f'  "events": {_items(events)}')
    parts.append(f'  "spans": {_items(spans)}')
    parts.append(f'  "ecall": {_items(dataclasses.asdict(m) for m in timeline.ecall)}')
    parts.append(f'  "stored": {json.dumps([list(step) for step in timeline.stored])}')
    series = [
        f"    {json.dumps(path)}: {json.dumps([list(p) for p in points])}" for path, points in timeline.series.items()
    ]
    parts.append('  "series": {\n' + ",\n".join(series) + "\n  }" if series else '  "series": {}')
    parts.append(f'  "expectations": {_items(dataclasses.asdict(r) for r in timeline.expectations)}')
    return "{\n" + ",\n".join(parts) + "\n}\n"


def timeline_from_json(text: str, *, source: str = "timeline") -> Timeline:
    """The inverse of `timeline_to_json`; a malformed document is refused with the place."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f'{source}: not a timeline (expected "format": "{FORMAT}")')
    if doc.get("version") not in READS:
        raise ConfigError(f"{source}: timeline version {doc.get('version')!r}, this tool reads {READS}")
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
        spans = []
        for index, row in enumerate(doc.get("spans", [])):
            where = f"{source}: spans[{index}]"
            spans.append(Span(**(row | {"kind": SpanKind(row["kind"])})))
        marks = []
        for index, row in enumerate(doc.get("ecall", [])):
            where = f"{source}: ecall[{index}]"
            marks.append(EcallMark(**row))
        where = f"{source}: stored"
        stored = [(float(t), int(count)) for t, count in doc.get("stored", [])]
        series: dict[str, list[Point]] = {}
        for path, points in doc.get("series", {}).items():
            where = f"{source}: series[{path!r}]"
            series[path] = [_point(point) for point in points]
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
            spans=spans,
            series=series,
            stored=stored,
            ecall=marks,
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: missing {exc.args[0]!r}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _point(point: Any) -> Point:
    t, value = point
    if isinstance(t, bool) or not isinstance(t, int | float) or not isinstance(value, bool | int | float | str):
        raise TypeError(f"expected [seconds, value], got {point!r}")
    return (float(t), value)


def dump_timeline(timeline: Timeline, path: Path) -> None:
    path.write_text(timeline_to_json(timeline), encoding="utf-8")


def load_timeline(path: Path) -> Timeline:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the timeline {path}: {exc.strerror or exc}") from exc
    return timeline_from_json(text, source=str(path))


def write_report(timeline: Timeline, directory: Path) -> Path:
    """Write `report.md`, `timeline.png`, `timeline.json` and `junit.xml` into `directory`; return the
    Markdown's path."""
    directory.mkdir(parents=True, exist_ok=True)
    dump_timeline(timeline, directory / "timeline.json")
    write_junit([timeline], directory / "junit.xml")
    plot_timeline(timeline, directory / "timeline.png")
    report = directory / "report.md"
    report.write_text(render_markdown(timeline), encoding="utf-8")
    return report
