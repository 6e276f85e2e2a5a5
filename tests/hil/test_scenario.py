from __future__ import annotations

import pytest

from hil.scenario import ACTIONS, CHECKS, library, load_scenario, parse_scenario
from tcu.errors import ConfigError

MINIMAL = 'name = "x"\nduration_s = 10\n'


def test_the_library_parses_and_covers_the_mission() -> None:
    scenarios = {name: load_scenario(path) for name, path in library().items()}
    assert len(scenarios) >= 6
    used_actions = {step.do for s in scenarios.values() for step in s.steps}
    used_checks = {e.check for s in scenarios.values() for e in s.expectations}
    assert {"tunnel", "broker_outage", "book", "measure", "unlock", "crash", "agent_kill", "park"} <= used_actions
    assert {"records_without_gaps", "msd_received", "measure_succeeded", "service_active"} <= used_checks
    assert used_actions <= set(ACTIONS)
    assert used_checks <= set(CHECKS)


def test_steps_are_sorted_and_parked_windows_derived() -> None:
    scenario = parse_scenario(
        MINIMAL + 'devices = ["can"]\n[[step]]\nat = 8\ndo = "lock"\n[[step]]\nat = 2\ndo = "park"\nfor_s = 3\n'
    )
    assert [s.do for s in scenario.steps] == ["park", "lock"]
    assert scenario.parked_windows() == ((2.0, 5.0),)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[step]]\nat = 1\ndo = "fly"\n', "unknown do 'fly'"),
        ('[[step]]\nat = 1\ndo = "lock"\ncolour = 1\n', r"step\[0\] \(lock\): unknown key\(s\) colour"),
        ('[[step]]\nat = 99\ndo = "lock"\n', "outside 0..10"),
        ('[[expect]]\ncheck = "vibes"\n', "unknown check 'vibes'"),
        ('devices = ["lidar"]\n', "unknown device"),
        ('[vehicle]\nvin = "SHORT"\n', "not a VIN"),
    ],
)
def test_bad_scenarios_are_refused_with_the_place(extra: str, message: str) -> None:
    text = (
        MINIMAL.replace("duration_s = 10\n", "duration_s = 10\n" + extra)
        if extra.startswith("devices")
        else MINIMAL + extra
    )
    with pytest.raises(ConfigError, match=message):
        parse_scenario(text)
