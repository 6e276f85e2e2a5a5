"""The end-of-run report: Markdown a CI log reader can act on, a legible PNG, a JSON round trip."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hil.report import (
    DPI,
    FIG_SIZE_IN,
    dump_timeline,
    load_timeline,
    render_markdown,
    spans,
    timeline_from_json,
    timeline_to_json,
    write_report,
)
from hil.timeline import Event, EventKind, ExpectationResult, Sample, Timeline
from tcu.errors import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _ecall_state(t: int) -> str | None:
    for start, state in (
        (111, "cleared"),
        (98, "voice"),
        (97, "msd_acknowledged"),
        (96, "msd_sent"),
        (94, "call_established"),
        (91, "dialling"),
        (90, "triggered"),
    ):
        if t >= start:
            return state
    return None


def drive_with_tunnel_crash_and_retried_measure() -> Timeline:
    """120 s: a drive, a tunnel at 30..48 s, a measure failing once and retried, a crash eCall at 90 s."""
    samples = []
    stored = queued = 0
    for t in range(121):
        speed = 0.0 if t >= 90 else min(t * 2.5, 50.0) if t < 80 else 50.0 - (t - 80) * 1.5
        coverage = not 30 <= t < 48
        queued += 1 if t < 90 else 0
        if coverage:
            sent = min(queued, 4)
            queued -= sent
            stored += sent
        measure = "m-7 #1" if 55 <= t < 60 else "m-7 #2" if 70 <= t < 76 else None
        samples.append(
            Sample(
                t=float(t),
                speed_kmh=None if t < 2 else speed,
                coverage=coverage,
                queue_depth=queued,
                stored_at_backend=stored,
                ecall_state=_ecall_state(t),
                measure_state=measure,
            )
        )
    events = [
        Event(t=1.0, kind=EventKind.ACTION, label="ignition on"),
        Event(t=5.0, kind=EventKind.PROVISIONING, label="file issued", detail="version 3 | services: remote_measure"),
        Event(t=6.2, kind=EventKind.PROVISIONING, label="file applied", detail="version 3"),
        Event(t=20.0, kind=EventKind.FAULT, label="serial_garbage", detail="device=obd"),
        Event(t=30.0, kind=EventKind.ACTION, label="tunnel", detail="for_s=18"),
        Event(t=33.4, kind=EventKind.LINK, label="link down", detail="keepalive timeout"),
        Event(t=48.0, kind=EventKind.ACTION, label="tunnel ends", detail="coverage back"),
        Event(t=49.1, kind=EventKind.LINK, label="link up"),
        Event(t=55.0, kind=EventKind.MEASURE, label="attempt 1 started", detail="m-7"),
        Event(t=58.0, kind=EventKind.FAULT, label="agent_kill", detail="restart_after_s=2"),
        Event(t=60.0, kind=EventKind.MEASURE, label="attempt 1 failed", detail="agent restarted"),
        Event(t=70.0, kind=EventKind.MEASURE, label="attempt 2 started", detail="m-7"),
        Event(t=76.0, kind=EventKind.MEASURE, label="attempt 2 succeeded", detail="m-7"),
        Event(t=90.0, kind=EventKind.ACTION, label="crash", detail="severity=severe"),
        Event(t=90.1, kind=EventKind.ECALL, label="triggered", detail="automatic"),
        Event(t=91.0, kind=EventKind.ECALL, label="dialling", detail="ATD112;"),
        Event(t=96.0, kind=EventKind.ECALL, label="msd_sent"),
        Event(t=97.0, kind=EventKind.ECALL, label="msd_acknowledged", detail="PSAP decoded VIN"),
        Event(t=111.0, kind=EventKind.ECALL, label="cleared"),
        Event(t=120.0, kind=EventKind.ACTION, label="end", detail="agent stopped; draining what it had queued"),
    ]
    results = [
        ExpectationResult(name="records_without_gaps", passed=True, detail="vehicle produced 90, backend stored 90"),
        ExpectationResult(name="msd_received", passed=True, detail="PSAP decoded an MSD for WMWZZZ3CZ2E123456"),
        ExpectationResult(name="measure_succeeded", passed=True, detail="m-7 succeeded after 2 attempts"),
    ]
    return Timeline(
        scenario="tunnel_crash_measure",
        description="A drive through a tunnel, a remote measure retried after an agent kill, then a crash eCall.",
        samples=samples,
        events=events,
        expectations=results,
    )


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


def test_report_files_and_markdown(tmp_path: Path) -> None:
    timeline = drive_with_tunnel_crash_and_retried_measure()
    report = write_report(timeline, tmp_path / "run")
    assert report == tmp_path / "run" / "report.md"
    text = report.read_text()
    assert text.startswith("# Scenario `tunnel_crash_measure`: PASS\n")
    assert "A drive through a tunnel" in text
    assert "- **Result:** PASS — 3 of 3 expectations passed" in text
    assert "- **Duration:** 120.0 s scenario time, 121 samples, 20 events" in text
    assert "- **Link down:** 18.0 s in 1 span(s)" in text
    assert "| Expectation | Result | Detail |" in text
    assert "| measure_succeeded | PASS | m-7 succeeded after 2 attempts |" in text
    assert "![Timeline of tunnel_crash_measure](timeline.png)" in text
    assert "| 20.0 | fault | serial_garbage | device=obd |" in text
    assert "| 5.0 | provisioning | file issued | version 3 \\| services: remote_measure |" in text  # pipe escaped
    assert "| 33.4 | link | link down | keepalive timeout |" in text
    assert text.index("## Expectations") < text.index("## Timeline") < text.index("## Events")


def test_a_failed_expectation_fails_the_report() -> None:
    timeline = drive_with_tunnel_crash_and_retried_measure()
    timeline.expectations.append(
        ExpectationResult(name="service_active", passed=False, detail="expected remote_measure running; found []")
    )
    text = render_markdown(timeline)
    assert text.startswith("# Scenario `tunnel_crash_measure`: FAIL\n")
    assert "- **Result:** FAIL — 3 of 4 expectations passed" in text
    assert "| service_active | FAIL | expected remote_measure running; found [] |" in text


def test_an_empty_run_still_reports(tmp_path: Path) -> None:
    report = write_report(Timeline(scenario="nothing"), tmp_path)
    text = report.read_text()
    assert "No expectations were checked." in text
    assert "(none were checked)" in text
    assert "No events." in text
    assert _png_size(tmp_path / "timeline.png") == (1200, 1000)


def test_png_is_valid_sized_and_deterministic(tmp_path: Path) -> None:
    timeline = drive_with_tunnel_crash_and_retried_measure()
    write_report(timeline, tmp_path / "a")
    write_report(timeline, tmp_path / "b")
    png = tmp_path / "a" / "timeline.png"
    assert _png_size(png) == (int(FIG_SIZE_IN[0] * DPI), int(FIG_SIZE_IN[1] * DPI))
    assert b"tEXt" not in _png_chunks(png)  # no Software / time stamps: reports diff well
    assert b"tIME" not in _png_chunks(png)
    assert png.read_bytes() == (tmp_path / "b" / "timeline.png").read_bytes()
    assert (tmp_path / "a" / "report.md").read_bytes() == (tmp_path / "b" / "report.md").read_bytes()


def test_png_reads_back_with_matplotlib(tmp_path: Path) -> None:
    from matplotlib.image import imread  # noqa: PLC0415

    write_report(drive_with_tunnel_crash_and_retried_measure(), tmp_path)
    pixels = imread(tmp_path / "timeline.png")
    assert pixels.shape[:2] == (1000, 1200)
    assert pixels.std() > 0.05  # not a blank canvas


def test_json_round_trip(tmp_path: Path) -> None:
    timeline = drive_with_tunnel_crash_and_retried_measure()
    write_report(timeline, tmp_path)
    assert load_timeline(tmp_path / "timeline.json") == timeline
    dump_timeline(timeline, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == (tmp_path / "timeline.json").read_text()
    text = timeline_to_json(timeline)
    assert '    {"t": 20.0, "kind": "fault", "label": "serial_garbage", "detail": "device=obd"},' in text.splitlines()
    assert timeline_from_json(text) == timeline
    empty = Timeline(scenario="x")
    assert timeline_from_json(timeline_to_json(empty)) == empty


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda text: text[:-3], "not valid JSON"),
        (lambda text: text.replace('"tcu-hil-timeline"', '"other"'), "not a timeline"),
        (lambda text: text.replace('"version": 1', '"version": 9'), "version 9"),
        (lambda text: text.replace('"kind": "fault"', '"kind": "weather"'), r"events\[3\]: 'weather'"),
        (lambda text: text.replace('"queue_depth": 0,', '"depth": 0,', 1), r"samples\[0\]: .*depth"),
        (lambda text: text.replace('"detail": "device=obd"', '"x": 1'), r"events\[3\]: missing 'detail'"),
    ],
)
def test_a_malformed_timeline_is_refused_with_the_place(mutate: Callable[[str], str], message: str) -> None:
    text = timeline_to_json(drive_with_tunnel_crash_and_retried_measure())
    with pytest.raises(ConfigError, match=message):
        timeline_from_json(mutate(text), source="run.json")


def test_load_timeline_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the timeline .*nope\.json"):
        load_timeline(tmp_path / "nope.json")


def test_spans_join_equal_neighbours() -> None:
    samples = [
        Sample(t=float(t), speed_kmh=0.0, coverage=t not in (2, 3), queue_depth=0, stored_at_backend=0)
        for t in range(5)
    ]
    assert spans(samples, lambda s: s.coverage) == [(0.0, 2.0, True), (2.0, 4.0, False), (4.0, 5.0, True)]
    assert spans([], lambda s: s.coverage) == []


def test_the_report_module_does_not_import_matplotlib_until_asked() -> None:
    code = "import sys, hil.report, hil.live_view; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
