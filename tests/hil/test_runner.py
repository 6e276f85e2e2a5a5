"""`tcu-hil run` end to end on a short scenario: devices, a tunnel, a crash, expectations, report."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from hil.cli import main as hil_cli
from hil.report import load_timeline
from hil.scenario import parse_scenario
from hil.timeline import EventKind
from tcu.errors import ConfigError
from tcu.virtual_time import VirtualClock, VirtualTime
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
    assert "no scenario 'no_such_scenario' in the library (agent_kill, commute," in capsys.readouterr().err
    assert hil_cli(["run", "commute", "--step", "at=1 do=fly"]) == 2
    assert "unknown do 'fly'; expected one of" in capsys.readouterr().err


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
    by_hand = [e for e in timeline.events if e.label == "lock: by hand"]
    assert by_hand  # the virtual bus cannot be driven on a bench: the engineer is told, the run goes on
    assert "do it on the bench" in by_hand[0].detail


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("at=10 do=tunnel for=8", "unknown key(s) for; it takes for_s"),
        ("at=10 do=tunnel for_s=eight", "for_s = 'eight': expected a number of seconds"),
        ("at=10 do=tunnel for_s=-8", "for_s = -8: expected a number of seconds"),
        ("at=10 do=tunnel for_s=0", "a fault of 0 s injects nothing"),
        ("at=50 do=tunnel for_s=8", "step tunnel at 50.0 s is outside 0..40.0 s"),
        ("at=5 do=open_door door=PassengerFront", "expected one of FrontLeft, FrontRight, RearLeft, RearRight"),
        ("at=5 do=latency loss=1.5", "loss = 1.5: expected a probability from 0 to 1"),
        ("at=5 do=serial_garbage device=usb count=0", "device = 'usb': expected one of obd, can, gnss, modem"),
        ("do=tunnel for_s=8", "needs at = <seconds into the run>"),
    ],
)
def test_a_command_line_step_is_checked_as_a_scenario_step_is(
    step: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before any run: a mistyped --step must not become a green run whose fault was never injected."""
    assert hil_cli(["run", "commute", "--step", step]) == 2
    assert reason in capsys.readouterr().err


def test_a_bus_step_without_the_can_device_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match='step\\(s\\) open_door drive the CAN bus: add "can" to devices'):
        parse_scenario('name = "nocan"\nduration_s = 10\ndevices = ["gnss"]\n[[step]]\nat = 2\ndo = "open_door"\n')


async def test_a_step_that_fails_during_the_run_fails_the_run(tmp_path: Path) -> None:
    """A fault that was never injected cannot leave a green run behind, whatever the checks say."""
    require_mosquitto()
    from hil.runner import ScenarioRunner  # noqa: PLC0415

    scenario = parse_scenario(
        'name = "broken"\nduration_s = 4\ndevices = []\n[vehicle]\nlegal_ecall = false\n'
        '[[step]]\nat = 1\ndo = "serial_garbage"\ndevice = "can"\n'  # no such device on this bench
        '[[expect]]\ncheck = "no_rejections"\n'
    )
    timeline = await ScenarioRunner(scenario, tmp_path / "run", broker_choice="mosquitto").run()
    assert not timeline.passed
    verdict = timeline.expectations[-1]
    assert verdict.name == "every step performed"
    assert verdict.detail.startswith("1 step(s) failed: serial_garbage at 1 s: KeyError")


async def test_a_step_that_expects_a_refusal_passes_on_it_and_fails_when_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """terms_renewal's late cancel: the backend's refusal is the behaviour under test, so it passes the
    step; an accepted order, or a refusal for another reason, fails it."""
    from hil import actions  # noqa: PLC0415
    from hil.run_context import Bench, RunContext, ScenarioClock  # noqa: PLC0415
    from hil.scenario import Step  # noqa: PLC0415
    from hil.scenario_agent_config import ScenarioAgentConfig  # noqa: PLC0415
    from hil.timeline import Timeline  # noqa: PLC0415

    async def refuse(*_args: object) -> None:
        raise ConfigError("service 6AN: notice on 2026-12-10 is too late to stop the renewal of its 2+1 term")

    async def accept(*_args: object) -> None:
        return None

    scenario = parse_scenario('name = "t"\nduration_s = 60\n')
    run = RunContext(
        scenario=scenario,
        bench=cast("Bench", None),  # the fake actions need no bench
        time=ScenarioClock(VirtualClock(VirtualTime.starting_now(1.0))),
        timeline=Timeline(scenario=scenario.name),
        agent_config=ScenarioAgentConfig(scenario=scenario),
    )
    late = Step(at=24, do="cancel", args={"service": "6AN", "refused": "too late to stop the renewal"})
    other = Step(at=25, do="cancel", args={"service": "6AN", "refused": "no such code"})
    monkeypatch.setitem(actions.ACTION_TABLE, "cancel", refuse)
    await actions.perform(run, late)
    assert run.failed_steps == []
    assert run.timeline.events[-1].label == "cancel refused, as expected"
    await actions.perform(run, other)
    monkeypatch.setitem(actions.ACTION_TABLE, "cancel", accept)
    await actions.perform(run, late)
    assert [f.split(":", 1)[0] for f in run.failed_steps] == ["cancel at 25 s", "cancel at 24 s"]
    assert "expected a refusal containing 'too late to stop the renewal', but it was accepted" in run.failed_steps[1]
    [result] = actions.steps_result(run)
    assert (result.name, result.passed) == ("every step performed", False)
