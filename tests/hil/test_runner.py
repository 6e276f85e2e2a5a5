"""`tcu-hil run` end to end on a short scenario: devices, a tunnel, a crash, expectations, report."""

from __future__ import annotations

from pathlib import Path

from hil.cli import main as hil_cli
from hil.report import load_timeline
from hil.scenario import parse_scenario
from hil.timeline import EventKind
from tests.conftest import require_mosquitto

SHORT = """
name = "short"
description = "a tunnel, then a crash"
duration_s = 14
devices = ["can", "gnss"]
telemetry_interval_s = 0.5

[vehicle]
vin = "WMWZZZ3CZ2E123456"
legal_ecall = true

[[step]]
at = 2
do = "tunnel"
for_s = 3

[[step]]
at = 8
do = "crash"

[[expect]]
check = "records_without_gaps"

[[expect]]
check = "records_accounted"

[[expect]]
check = "msd_received"
within_m = 200
"""


def test_a_scenario_runs_checks_and_reports(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    require_mosquitto()
    scenario = tmp_path / "short.toml"
    scenario.write_text(SHORT)
    parse_scenario(SHORT)  # valid
    code = hil_cli(
        [
            "run",
            str(scenario),
            "--workdir",
            str(tmp_path / "run"),
            "--broker",
            "mosquitto",
            "--step",
            'at=6 do=serial_garbage device="can" count=50',
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "short: PASS (3/3 expectations)" in out
    timeline = load_timeline(tmp_path / "run" / "report" / "timeline.json")
    kinds = {event.kind for event in timeline.events}
    assert {EventKind.FAULT, EventKind.ECALL, EventKind.LINK} <= kinds
    assert any(event.label == "serial_garbage" for event in timeline.events)  # the --step from the command line
    assert (tmp_path / "run" / "report" / "timeline.png").stat().st_size > 10_000
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "| records_without_gaps | PASS |" in report
    assert "| records_accounted | PASS |" in report


def test_a_failed_expectation_fails_the_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    require_mosquitto()
    scenario = tmp_path / "bad.toml"
    scenario.write_text(
        'name = "bad"\nduration_s = 3\ndevices = []\n[vehicle]\nlegal_ecall = false\n'
        '[[expect]]\ncheck = "signal_reported"\npath = "Vehicle.NoSuchThing"\n'
    )
    assert hil_cli(["run", str(scenario), "--workdir", str(tmp_path / "run"), "--broker", "mosquitto"]) == 1
    assert "FAIL signal_reported(path=Vehicle.NoSuchThing): no value of Vehicle.NoSuchThing" in capsys.readouterr().out


def test_unknown_scenario_and_bad_step_are_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert hil_cli(["run", "no_such_scenario"]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert hil_cli(["run", "commute", "--step", "at=1 do=fly"]) == 2
    assert "unknown action(s) fly" in capsys.readouterr().err


async def test_bench_mode_uses_a_real_port_instead_of_the_virtual_device(tmp_path: Path) -> None:
    """The test plays the hardware: an SLCAN device the runner did not start, named by --port."""
    require_mosquitto()
    from hil.devices.slcan_sim import SlcanSimulator  # noqa: PLC0415
    from hil.runner import ScenarioRunner  # noqa: PLC0415

    scenario = parse_scenario(
        'name = "bench"\nduration_s = 5\ndevices = ["can"]\n[vehicle]\nlegal_ecall = false\n'
        '[[step]]\nat = 1\ndo = "lock"\n'
        '[[expect]]\ncheck = "signal_reported"\npath = "Vehicle.Mode"\n'
    )
    async with SlcanSimulator(link_path=str(tmp_path / "ttyBENCH")) as adapter:
        runner = ScenarioRunner(scenario, tmp_path / "run", broker_choice="mosquitto", real_ports={"can": adapter.path})
        timeline = await runner.run()
    assert timeline.passed, timeline.expectations
    failed = [e for e in timeline.events if e.label == "lock failed"]
    assert failed  # the virtual bus cannot be driven on a bench: said, not crashed
    assert "do it on the bench" in failed[0].detail
