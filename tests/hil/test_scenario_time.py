"""A scenario's time: its virtual time scale, the calendar moving on, and the keys long horizons need."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from hil.run_context import ScenarioClock
from hil.runner import ScenarioRunner
from hil.scenario import parse_scenario
from tcu.errors import ConfigError
from tcu.virtual_time import VirtualClock, VirtualTime, VirtualTimeLoop

BASE = 'name = "t"\nduration_s = 60\ntime_scale = 50\n[vehicle]\nlegal_ecall = false\n'


def test_long_horizon_keys_reach_the_scenario() -> None:
    scenario = parse_scenario(
        BASE.replace("legal_ecall = false", "legal_ecall = true\nfirst_registration_days_ago = 681")
        + "[ecall]\ncommand_timeout_s = 30\n[psap]\nvoice_s = 7200\n"
        + '[[step]]\nat = 5\ndo = "advance_calendar"\ndays = 50\n'
    )
    assert scenario.time_scale == 50
    assert scenario.first_registration_days_ago == 681
    assert scenario.ecall_settings == {"command_timeout_s": 30}
    assert scenario.psap_settings == {"voice_s": 7200}
    assert scenario.steps[0].do == "advance_calendar"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ('[ecall]\nport = "/dev/ttyUSB9"\n', "port is set by the bench itself"),
        ("[ecall]\nlegal_ecall = false\n", "legal_ecall is set by the bench itself"),
        ("[psap]\nport = 1\n", "port is set by the bench itself"),
        ("[psap]\nvoice_s = [1, 2]\n", "expected a number, a string or a boolean"),
        ("[ecall]\nt2 = { s = 1 }\n", "expected a number, a string or a boolean"),
        ('psap = "loud"\n', "expected a table"),
    ],
)
def test_extra_section_keys_that_would_break_the_bench_are_refused(extra: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_scenario(BASE + extra if extra.startswith("[") else extra + BASE)


@pytest.mark.parametrize("days", ["-1", "36501", "true", "1.5"])
def test_first_registration_must_be_a_whole_number_of_days_back(days: str) -> None:
    with pytest.raises(ConfigError, match="first_registration_days_ago"):
        parse_scenario(
            BASE.replace("legal_ecall = false", f"legal_ecall = false\nfirst_registration_days_ago = {days}")
        )


def test_record_times_after_a_calendar_move_land_on_the_scenario_axis(tmp_path: Path) -> None:
    """After seven weeks of parking, a record stamped at scenario second 30 is at 30, not at 30 + 7 weeks;
    one stamped before the move stays where it was."""
    runner = ScenarioRunner(parse_scenario(BASE), tmp_path)

    async def scenario() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        time = runner.time = ScenarioClock(VirtualClock(loop.virtual_time))
        time.begin()
        await asyncio.sleep(10)
        before_move = time.wall.now()
        time.advance_calendar(timedelta(weeks=7).total_seconds())
        await asyncio.sleep(20)
        after_move = time.wall.now()
        return time.scenario_seconds(before_move), time.scenario_seconds(after_move), time.now()

    base = VirtualTime.starting_now(200.0)
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(base)) as loop_runner:
        before, after, now = loop_runner.run(scenario())
    assert 10 <= before < 12
    assert 30 <= after <= now < 40
    assert (runner.time.wall.now() - runner.time.start_wall) > timedelta(weeks=7)
