"""The end-of-run report: Markdown a CI log reader can act on, a PNG true to the run, a JSON round trip."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hil.report import (
    DPI,
    FIG_SIZE_IN,
    dump_timeline,
    load_timeline,
    render_markdown,
    timeline_from_json,
    timeline_to_json,
    write_report,
)
from hil.report_lanes import draw_bench, draw_doors, draw_events, draw_faults
from hil.report_plot import hold_limit, numeric_line
from hil.timeline import ExpectationResult, Sample, Span, SpanKind, Timeline, link_down, runs
from tcu.errors import ConfigError
from tests.hil.report_fixture import KILL, recorded_run, with_errored_check

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, chunk, width, height = struct.unpack(">I4sII", data[8:24])
    assert (length, chunk) == (13, b"IHDR")
    return width, height


def _png_chunks(path: Path) -> list[bytes]:
    data, offset, chunks = path.read_bytes(), 8, []
    while offset < len(data):
        length, name = struct.unpack(">I4s", data[offset : offset + 8])
        chunks.append(name)
        offset += 12 + length
    return chunks


# -- report.md -------------------------------------------------------------------------------------


def _summary(text: str) -> dict[str, str]:
    """The report's summary bullets, `- **Label:** value`, as {label: value}."""
    return dict(re.findall(r"^- \*\*(.+?):\*\* (.*)$", text, re.MULTILINE))


def _table(text: str, heading: str) -> list[str]:
    """The lines of the first table under the line `heading`: its header, its rule, its rows."""
    after = text.split(f"\n{heading}\n", 1)[1].splitlines()
    start = next(index for index, line in enumerate(after) if line.startswith("|"))
    return list(itertools.takewhile(lambda line: line.startswith("|"), after[start:]))


def test_report_files_and_summary(tmp_path: Path) -> None:
    report = write_report(recorded_run(), tmp_path / "run")
    assert report == tmp_path / "run" / "report.md"
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"report.md", "timeline.png", "timeline.json", "junit.xml"}
    text = report.read_text()
    assert text.startswith("# Scenario `tunnel_kill_crash`: PASS\n")
    assert _summary(text) == {
        "Result": "PASS — 3 of 3 expectations passed",
        "Duration": "124.5 s scenario time, 122 samples, 14 events",
        "Phases": "start-up 0.0 to 1.6 s, run 1.6 to 120.0 s, drain 120.0 to 124.5 s "
        "(start-up and drain are the bench's own, not faults)",
        # The tunnel's outage (33..49 s) and the first seconds before the first sample's link; not the
        # agent's 3 s down, not the start-up, not the drain.
        "Link down while the agent ran": "16.4 s in 2 span(s)",
        "Agent down": "3.7 s in 3 span(s)",
        "Faults injected": "3",
        "Queue depth": "max 16, at the end 0",
        "Stored at the backend": "100 records",
        "Signals recorded": "7, 763 readings (telemetry at its interval; door and lock changes as they happened)",
    }
    order = ["## Expectations", "## Timeline", "## Faults", "## Bench phases", "## eCall", "## Signals", "## Events"]
    assert [text.index(heading) for heading in order] == sorted(text.index(heading) for heading in order)


def test_expectations_show_measured_value_and_limit() -> None:
    assert _table(render_markdown(recorded_run()), "## Expectations") == [
        "| Expectation | Result | Measured | Limit | Detail |",
        "|---|---|---|---|---|",
        "| records_without_gaps | PASS | — | — | vehicle produced 90, backend stored 90 |",
        "| msd_received(within_m=200) | PASS | 3 m | 200 m "
        "| MSD #1 at 48.14077,11.56622: 3 m from the crash position |",
        "| measure_succeeded | PASS | — | — | m-7 succeeded after 2 attempts |",
    ]


def test_every_fault_is_listed_as_a_span_with_its_start_and_end() -> None:
    text = render_markdown(recorded_run())
    assert _table(text, "## Faults")[2:] == [
        "| tunnel | 30.00 | 48.00 | 18.00 | no coverage |",
        "| agent_kill | 58.00 | 61.00 | 3.00 | SIGKILL, restarted after 3 s |",
        "| disk_full | 64.00 | 75.40 | 11.40 | queue capped; restarted twice |",
    ]
    # disk_full's two restarts are said, each with its own start and end
    assert [row for row in _table(text, "## Bench phases, agent and link") if "disk_full" in row] == [
        "| agent down: disk_full: restart 1 of 2 (queue capped) | 64.00 | 64.30 | 0.30 |  |",
        "| agent down: disk_full: restart 2 of 2 (queue uncapped) | 75.00 | 75.40 | 0.40 |  |",
    ]


def test_startup_and_drain_are_marked_as_the_benchs_own() -> None:
    rows = _table(render_markdown(recorded_run()), "## Bench phases, agent and link")
    # No link down from 120 s: the drain agent connecting is no outage.
    assert [row for row in rows if row.startswith(("| phase:", "| link down"))] == [
        "| phase: startup | 0.00 | 1.60 | 1.60 | the agent starting |",
        "| link down | 1.60 | 2.00 | 0.40 | the agent ran without a link to the broker |",
        "| phase: run | 1.60 | 120.00 | 118.40 |  |",
        "| link down | 33.00 | 49.00 | 16.00 | the agent ran without a link to the broker |",
        "| phase: drain | 120.00 | 124.50 | 4.50 | drain-only agent |",
    ]


def test_the_ecall_table_has_millisecond_offsets_from_the_trigger() -> None:
    text = render_markdown(recorded_run())
    rows = [line for line in text.splitlines() if line.startswith("| 1 | ")]
    offsets = [(line.split(" | ")[1], line.split(" | ")[3]) for line in rows]
    assert offsets == [
        ("0", "triggered"),
        ("0", "dialling 112"),
        ("2010", "call established"),
        ("2013", "MSD sent"),
        ("3518", "MSD decoded at the PSAP"),
        ("3828", "MSD received by the PSAP's modem (LL-ACK)"),
        ("3833", "MSD acknowledged (AL-ACK)"),
        ("3833", "voice"),
        ("13834", "cleared down"),
        ("13834", "callback window"),
    ]
    assert "| 1 | 3518 | 93.518 | MSD decoded at the PSAP | psap | call 1 MSD #1 |" in text


def test_signals_table_shows_each_signals_own_rate() -> None:
    text = render_markdown(recorded_run())
    assert "| Vehicle.Speed | 234 | 0.00 | 119.50 | 0.500 | 0 … 50 |" in text
    assert "| Vehicle.Powertrain.CombustionEngine.Speed | 58 | 0.00 | 118.00 | 2.000 | 800 … 2300 |" in text
    assert "| Vehicle.Body.CentralLock.State | 3 | 0.00 | 110.00 | 55.000 | LOCKED, UNLOCKED |" in text


def test_a_failed_expectation_fails_the_report() -> None:
    timeline = recorded_run()
    timeline.expectations.append(
        ExpectationResult(name="service_active", passed=False, detail="expected remote_measure | found []")
    )
    text = render_markdown(timeline)
    assert text.startswith("# Scenario `tunnel_kill_crash`: FAIL\n")
    assert "- **Result:** FAIL — 3 of 4 expectations passed" in text
    assert "| service_active | FAIL | — | — | expected remote_measure \\| found [] |" in text  # pipe escaped


def test_a_check_that_could_not_run_reads_error_not_fail() -> None:
    text = render_markdown(with_errored_check(recorded_run()))
    assert text.startswith("# Scenario `tunnel_kill_crash`: FAIL\n")  # the run fails all the same
    assert "| signal_value | ERROR | — | — | check failed to run: KeyError: 'Vehicle.Speed' |" in text


def test_an_empty_run_still_reports(tmp_path: Path) -> None:
    report = write_report(Timeline(scenario="nothing"), tmp_path)
    text = report.read_text()
    for line in ("No expectations were checked.", "(none were checked)", "No faults were injected.", "No eCall."):
        assert line in text
    assert "No events." in text
    assert _png_size(tmp_path / "timeline.png") == (int(FIG_SIZE_IN[0] * DPI), int(FIG_SIZE_IN[1] * DPI))


# -- timeline.png ----------------------------------------------------------------------------------


def test_png_is_valid_sized_and_deterministic(tmp_path: Path) -> None:
    timeline = recorded_run()
    write_report(timeline, tmp_path / "a")
    write_report(timeline, tmp_path / "b")
    png = tmp_path / "a" / "timeline.png"
    assert _png_size(png) == (int(FIG_SIZE_IN[0] * DPI), int(FIG_SIZE_IN[1] * DPI))
    assert b"tEXt" not in _png_chunks(png)  # no Software / time stamps: reports diff well
    assert b"tIME" not in _png_chunks(png)
    for name in ("timeline.png", "report.md", "junit.xml", "timeline.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def _axes() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure()
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def _colour_at(ax: Any, t: float, y: float) -> str | None:
    """The colour of the topmost bar drawn over (t, y), as #rrggbb."""
    from matplotlib.colors import to_hex  # noqa: PLC0415

    found = None
    for collection in sorted(ax.collections, key=lambda c: c.get_zorder()):
        colours = collection.get_facecolors()
        for index, path in enumerate(collection.get_paths()):
            box = path.get_extents()
            if box.x0 <= t <= box.x1 and box.y0 <= y <= box.y1 and len(colours):
                found = to_hex(colours[min(index, len(colours) - 1)])
    return found


AGENT_DOWN_GREY, LINK_UP_GREEN, LINK_DOWN_RED, PALE = "#424242", "#66bb6a", "#e53935", "#cfd8dc"


def test_the_link_lane_shows_a_killed_agent_as_down_not_its_last_status() -> None:
    timeline = recorded_run()
    # What a stale status.json would have said: link up all along. The agent was down 58..61 s.
    timeline.samples = [dataclasses.replace(s, coverage=True) for s in timeline.samples]
    ax = _axes()
    draw_bench(ax, timeline, 124.5, 1000.0)
    link_y, agent_y = 0, 1
    assert _colour_at(ax, 59.5, link_y) == AGENT_DOWN_GREY
    assert _colour_at(ax, 59.5, agent_y) == AGENT_DOWN_GREY
    assert _colour_at(ax, 20.0, link_y) == LINK_UP_GREEN
    assert _colour_at(ax, 64.1, link_y) == AGENT_DOWN_GREY  # disk_full's first restart, between two samples


def test_the_link_lane_draws_startup_and_drain_pale_and_an_outage_red() -> None:
    timeline = recorded_run()
    timeline.samples.insert(0, Sample(t=0.0, speed_kmh=None, coverage=False, queue_depth=0, stored_at_backend=0))
    timeline.samples.insert(-1, Sample(t=120.5, speed_kmh=None, coverage=False, queue_depth=0, stored_at_backend=0))
    ax = _axes()
    draw_bench(ax, timeline, 124.5, 1000.0)
    assert _colour_at(ax, 0.5, 0) == PALE  # start-up: the bench's own
    assert _colour_at(ax, 121.0, 0) == PALE  # the drain agent connecting
    assert _colour_at(ax, 40.0, 0) == LINK_DOWN_RED  # the tunnel


def test_a_restarted_agent_still_starting_is_not_a_link_outage() -> None:
    timeline = recorded_run()
    starting = Sample(t=61.0, speed_kmh=None, coverage=False, queue_depth=0, stored_at_backend=0, starting=True)
    timeline.samples = [s for s in timeline.samples if not 61 <= s.t < 64] + [starting]
    timeline.samples.sort(key=lambda s: s.t)
    ax = _axes()
    draw_bench(ax, timeline, 124.5, 1000.0)
    assert _colour_at(ax, 62.0, 0) == PALE
    assert _colour_at(ax, 62.0, 1) == "#c8e6c9"  # the agent row: starting
    assert not any(a < 62.0 < b for a, b in link_down(timeline))
    assert "| agent starting | 61.00 | 64.00 | 3.00 | the process runs but has written no status yet" in (
        render_markdown(timeline)
    )


def test_the_fault_lane_draws_each_fault_as_a_labelled_span() -> None:
    ax = _axes()
    draw_faults(ax, recorded_run(), 124.5, 1000.0)
    texts = [t.get_text() for t in ax.texts]
    assert {"tunnel (18.0 s)", "agent_kill (3.0 s)", "disk_full (11.4 s)"} <= set(texts)
    assert "lock failed" in texts  # a fault event without a span still shows
    bars = [p.get_extents() for c in ax.collections for p in c.get_paths()]
    assert any(abs(b.x0 - KILL[0]) < 1e-6 and abs(b.x1 - KILL[1]) < 1e-6 for b in bars)
    assert not any(t.startswith(("tunnel ends", "agent_kill")) and "(" not in t for t in texts)


def test_doors_and_locks_are_drawn_from_their_readings() -> None:
    ax = _axes()
    timeline = recorded_run()
    draw_doors(ax, timeline, 124.5, hold_limit)
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert labels == ["row 1 driver", "central lock"]
    assert _colour_at(ax, 4.0, 1.2) == "#fb8c00"  # open 3..6 s
    assert _colour_at(ax, 20.0, 1.2) == PALE  # closed
    assert _colour_at(ax, 115.0, 0.8) == "#1e88e5"  # locked from 110 s
    assert _colour_at(ax, 60.5, 1.2) is None  # agent down 58..61 s: the 57 s reading holds 3 s, then no state


def test_the_ecall_row_has_the_vehicles_states_and_the_msd_at_the_psap() -> None:
    ax = _axes()
    handles = draw_events(ax, recorded_run(), 124.5, 1000.0)
    assert "MSD at the PSAP +3518 ms" in [t.get_text() for t in ax.texts]
    assert [h.get_label() for h in handles][:3] == ["eCall triggered", "eCall dialling", "eCall call_established"]
    ecall_y = 3
    assert _colour_at(ax, 100.0, ecall_y) == "#8e24aa"  # voice 93.8..103.8 s


def test_a_signal_gap_stays_a_gap() -> None:
    points = [(0.0, 10.0), (0.5, 11.0), (1.0, 12.0), (9.0, 13.0), (9.5, 14.0)]
    xs, ys = numeric_line(points)
    assert xs == [0.0, 0.5, 1.0, 9.0, 9.0, 9.5]
    assert ys[3] != ys[3]  # NaN: the line breaks over the 8 s without a reading
    assert hold_limit(points) == 1.5


# -- timeline.json ---------------------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    timeline = recorded_run()
    write_report(timeline, tmp_path)
    assert load_timeline(tmp_path / "timeline.json") == timeline
    dump_timeline(timeline, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == (tmp_path / "timeline.json").read_text()
    text = timeline_to_json(timeline)
    assert '    {"t": 30.0, "kind": "fault", "label": "tunnel", "detail": "for_s=18"},' in text.splitlines()
    assert any(line.startswith('    "Vehicle.Speed": [[0.0, 0.0], [0.5, 1.25]') for line in text.splitlines())
    empty = Timeline(scenario="x")
    assert timeline_from_json(timeline_to_json(empty)) == empty


def test_a_check_that_could_not_run_stays_one_through_timeline_json(tmp_path: Path) -> None:
    timeline = with_errored_check(recorded_run())
    dump_timeline(timeline, tmp_path / "timeline.json")
    loaded = load_timeline(tmp_path / "timeline.json")
    assert loaded == timeline
    assert [r.errored for r in loaded.expectations] == [False, False, False, True]


def test_a_version_1_timeline_still_loads() -> None:
    doc = {
        "format": "tcu-hil-timeline",
        "version": 1,
        "scenario": "old",
        "description": "",
        "passed": True,
        "samples": [{"t": 0.0, "speed_kmh": 1.0, "coverage": True, "queue_depth": 0, "stored_at_backend": 0}],
        "events": [],
        "expectations": [{"name": "x", "passed": True, "detail": "ok"}],
    }
    timeline = timeline_from_json(json.dumps(doc))
    assert timeline.expectations == [ExpectationResult(name="x", passed=True, detail="ok", errored=False)]
    assert timeline.samples[0].agent_up is True
    assert timeline.spans == []
    assert timeline.series == {}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda text: text[:-3], "not valid JSON"),
        (lambda text: text.replace('"tcu-hil-timeline"', '"other"'), "not a timeline"),
        (lambda text: text.replace('"version": 2', '"version": 9'), "version 9"),
        (lambda text: text.replace('"kind": "fault"', '"kind": "weather"', 1), r"events\[5\]: 'weather'"),
        (lambda text: text.replace('"queue_depth": 0,', '"depth": 0,', 1), r"samples\[2\]: .*depth"),
        (lambda text: text.replace('"kind": "agent_down"', '"kind": "nap"', 1), r"spans\[5\]: 'nap'"),
        (lambda text: text.replace("[[0.0, 0.0], [0.5", "[[0.0, null], [0.5", 1), r"series\['Vehicle.Speed'\]"),
        (lambda text: text.replace('"at_ms": ', '"at": ', 1), r"ecall\[0\]: .*'at'"),
        (
            lambda text: text.replace('"errored": false', '"errored": 1', 1),
            r"expectations\[0\]: errored must be true or false, got 1",
        ),
        (
            lambda text: text.replace('"errored": false', '"errored": true', 1),
            r"expectations\[0\]: expectation 'records_without_gaps': a check that could not run cannot have passed",
        ),
    ],
)
def test_a_malformed_timeline_is_refused_with_the_place(mutate: Callable[[str], str], message: str) -> None:
    text = timeline_to_json(recorded_run())
    with pytest.raises(ConfigError, match=message):
        timeline_from_json(mutate(text), source="run.json")


def test_load_timeline_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the timeline .*nope\.json"):
        load_timeline(tmp_path / "nope.json")


# -- the model's helpers ---------------------------------------------------------------------------


def test_runs_join_equal_neighbours() -> None:
    samples = [
        Sample(t=float(t), speed_kmh=0.0, coverage=t not in (2, 3), queue_depth=0, stored_at_backend=0)
        for t in range(5)
    ]
    assert runs(samples, lambda s: s.t, lambda s: s.coverage, 6.0) == [
        (0.0, 2.0, True),
        (2.0, 4.0, False),
        (4.0, 6.0, True),
    ]
    assert runs([], lambda s: s.t, lambda s: s.coverage, 1.0) == []


def test_link_down_leaves_out_agent_down_startup_and_drain() -> None:
    samples = [
        Sample(t=t, speed_kmh=None, coverage=False, queue_depth=0, stored_at_backend=0, agent_up=t not in (5.0, 6.0))
        for t in (0.0, 1.0, 5.0, 6.0, 7.0, 8.0)
    ] + [
        Sample(t=9.0, speed_kmh=None, coverage=True, queue_depth=0, stored_at_backend=0),
        Sample(t=9.5, speed_kmh=None, coverage=False, queue_depth=0, stored_at_backend=0, starting=True),
    ]
    spans = [
        Span(kind=SpanKind.PHASE, label="startup", start=-1.0, end=1.0),
        Span(kind=SpanKind.PHASE, label="run", start=1.0, end=10.0),
        Span(kind=SpanKind.PHASE, label="drain", start=10.0, end=12.0),
        Span(kind=SpanKind.AGENT_DOWN, label="restart", start=7.5, end=7.8),
    ]
    timeline = Timeline(scenario="x", samples=samples, spans=spans)
    assert link_down(timeline) == [(1.0, 5.0), (7.0, 7.5), (7.8, 9.0)]


def test_a_link_that_never_came_up_is_start_up_not_an_outage() -> None:
    samples = [Sample(t=float(t), speed_kmh=None, coverage=False, queue_depth=0, stored_at_backend=0) for t in range(9)]
    spans = [
        Span(kind=SpanKind.PHASE, label="startup", start=-1.0, end=8.0, detail="(the link never came up)"),
        Span(kind=SpanKind.PHASE, label="drain", start=8.0, end=9.0),
    ]
    assert link_down(Timeline(scenario="x", samples=samples, spans=spans)) == []


def test_the_report_module_does_not_import_matplotlib_until_asked() -> None:
    code = "import sys, hil.report, hil.live_view; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
