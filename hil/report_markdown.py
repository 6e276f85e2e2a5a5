"""`report.md`: the verdict, the expectations with measured value and limit, the bench's phases, every
fault as a span, the agent's down times, the eCall in milliseconds from its trigger, every signal's
rate, and every event — for a CI log reader who will not open the bench folder."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from statistics import median

from hil.report_rows import ECALL_LABELS, cell, ecall_rows, table, verdict
from hil.timeline import Phase, Point, SpanKind, Timeline, duration_s, link_down, runs

_SPAN_COLUMNS = ("Start (s)", "End (s)", "Duration (s)", "Detail")  # a fault's row, a bench phase's row


def _phases(timeline: Timeline) -> str:
    names = {Phase.STARTUP: "start-up", Phase.RUN: "run", Phase.DRAIN: "drain"}
    found = [(names[p], timeline.phase(p)) for p in Phase]
    return ", ".join(f"{name} {span.start:.1f} to {span.end:.1f} s" for name, span in found if span is not None)


def _summary(timeline: Timeline) -> list[str]:
    results, samples = timeline.expectations, timeline.samples
    down = link_down(timeline)
    agent_down = timeline.spans_of(SpanKind.AGENT_DOWN)
    stored = timeline.stored[-1][1] if timeline.stored else (samples[-1].stored_at_backend if samples else 0)
    readings = sum(len(points) for points in timeline.series.values())
    lines = [
        f"- **Result:** {verdict(timeline.passed)} — {sum(r.passed for r in results)} of {len(results)} "
        f"expectations passed" + (" (none were checked)" if not results else ""),
        f"- **Duration:** {duration_s(timeline):.1f} s scenario time, {len(samples)} samples, "
        f"{len(timeline.events)} events",
    ]
    if timeline.spans_of(SpanKind.PHASE):
        lines.append(f"- **Phases:** {_phases(timeline)} (start-up and drain are the bench's own, not faults)")
    lines += [
        f"- **Link down while the agent ran:** {sum(b - a for a, b in down):.1f} s in {len(down)} span(s)",
        f"- **Agent down:** {sum(s.duration for s in agent_down):.1f} s in {len(agent_down)} span(s)",
        f"- **Faults injected:** {len(timeline.spans_of(SpanKind.FAULT))}",
        f"- **Queue depth:** max {max((s.queue_depth for s in samples), default=0)}, "
        f"at the end {samples[-1].queue_depth if samples else 0}",
        f"- **Stored at the backend:** {stored} records",
        f"- **Signals recorded:** {len(timeline.series)}, {readings} readings "
        "(telemetry at its interval; door and lock changes as they happened)",
    ]
    return lines


def _expectations(timeline: Timeline) -> list[str]:
    results = timeline.expectations
    if not results:
        return ["No expectations were checked."]
    return table(
        ("Expectation", "Result", "Measured", "Limit", "Detail"),
        "lllll",
        (
            (
                cell(r.name),
                "ERROR" if r.errored else verdict(r.passed),
                cell(r.measured) or "—",
                cell(r.limit) or "—",
                cell(r.detail),
            )
            for r in results
        ),
    )


def _faults(timeline: Timeline) -> list[str]:
    faults = timeline.spans_of(SpanKind.FAULT)
    if not faults:
        return ["No faults were injected."]
    return table(
        ("Fault", *_SPAN_COLUMNS),
        "lrrrl",
        ((cell(s.label), f"{s.start:.2f}", f"{s.end:.2f}", f"{s.duration:.2f}", cell(s.detail)) for s in faults),
    )


def _bench(timeline: Timeline) -> list[str]:
    rows = [(s.start, s.end, f"phase: {s.label}", s.detail) for s in timeline.spans_of(SpanKind.PHASE)]
    rows += [(s.start, s.end, f"agent down: {s.label}", s.detail) for s in timeline.spans_of(SpanKind.AGENT_DOWN)]
    rows += [(a, b, "link down", "the agent ran without a link to the broker") for a, b in link_down(timeline)]
    rows += [
        (a, b, "agent starting", "the process runs but has written no status yet: no link tried, no outage")
        for a, b, starting in runs(timeline.samples, lambda s: s.t, lambda s: s.starting, duration_s(timeline))
        if starting and b > a
    ]
    if not rows:
        return ["No phases were recorded."]
    return table(
        ("What", *_SPAN_COLUMNS),
        "lrrrl",
        ((cell(what), f"{a:.2f}", f"{b:.2f}", f"{b - a:.2f}", cell(detail)) for a, b, what, detail in sorted(rows)),
    )


def _ecall(timeline: Timeline) -> list[str]:
    if not timeline.ecall:
        return ["No eCall."]
    rows = (
        (
            str(session),
            str(offset),
            f"{mark.t:.3f}",
            cell(ECALL_LABELS.get(mark.label, mark.label)),
            mark.source,
            cell(mark.detail),
        )
        for session, offset, mark in ecall_rows(timeline.ecall)
    )
    return [
        "Milliseconds from the trigger, from the time stamps the vehicle put in its eCall records and the PSAP",
        "put on each MSD it received.",
        "",
        *table(("Session", "+ms", "Time (s)", "Step", "Source", "Detail"), "rrrlll", rows),
    ]


def _values(points: Sequence[Point]) -> str:
    values = [v for _, v in points]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        low, high = min(values), max(values)
        return f"{low:g}" if low == high else f"{low:g} … {high:g}"
    distinct: list[str] = []
    for value in values:
        if str(value) not in distinct:
            distinct.append(str(value))
    return ", ".join(distinct[:4]) + (f" (+{len(distinct) - 4} more)" if len(distinct) > 4 else "")


def _signals(timeline: Timeline) -> list[str]:
    if not timeline.series:
        return ["No signals reached the backend."]
    rows = []
    for path, points in timeline.series.items():
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(points)]
        interval = f"{median(gaps):.3f}" if gaps else "—"
        rows.append(
            (
                cell(path),
                str(len(points)),
                f"{points[0][0]:.2f}",
                f"{points[-1][0]:.2f}",
                interval,
                cell(_values(points)),
            )
        )
    return [
        "Each reading at the vehicle's own time stamp, from the backend's records (a reading repeated in later",
        "snapshots counts once). A signal read more often than the vehicle sends telemetry shows at the",
        "telemetry interval: the backend never saw the readings in between.",
        "",
        *table(("Signal", "Readings", "From (s)", "To (s)", "Median interval (s)", "Values"), "lrrrrl", rows),
    ]


def render_markdown(
    timeline: Timeline,
    *,
    plot_name: str = "timeline.png",
    data_name: str = "timeline.json",
    junit_name: str = "junit.xml",
) -> str:
    lines = [f"# Scenario `{timeline.scenario}`: {verdict(timeline.passed)}", ""]
    if timeline.description:
        lines += [timeline.description, ""]
    lines += _summary(timeline)
    lines += ["", "## Expectations", "", *_expectations(timeline)]
    lines += ["", "## Timeline", "", f"![Timeline of {timeline.scenario}]({plot_name})", ""]
    lines += [f"Raw data: [{data_name}]({data_name}); for CI: [{junit_name}]({junit_name})"]
    lines += ["", "## Faults", "", *_faults(timeline)]
    lines += ["", "## Bench phases, agent and link", "", *_bench(timeline)]
    lines += ["", "## eCall", "", *_ecall(timeline)]
    lines += ["", "## Signals", "", *_signals(timeline)]
    lines += ["", "## Events", ""]
    if timeline.events:
        events = ((f"{e.t:.1f}", str(e.kind), cell(e.label), cell(e.detail)) for e in timeline.events)
        lines += table(("Time (s)", "Kind", "Label", "Detail"), "rlll", events)
    else:
        lines.append("No events.")
    return "\n".join(lines) + "\n"
