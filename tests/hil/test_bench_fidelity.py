"""The bench tells the truth about a run: what it checks can fail, what it plots happened, what it
says about the agent and the clock is so, and watching a fast run does not load the machine."""

from __future__ import annotations

import pytest

from hil.scenario import parse_scenario
from tcu.errors import ConfigError

MINIMAL = 'name = "x"\nduration_s = 10\n'

# -- `at` only where a check reads it --------------------------------------------------------------


def test_at_on_a_check_that_does_not_read_it_is_refused() -> None:
    """signal_range takes a window, not a moment: an `at` there would be silently ignored."""
    text = MINIMAL + '[[expect]]\ncheck = "signal_range"\npath = "Vehicle.Speed"\nmin = 0\nmax = 60\nat = 5\n'
    with pytest.raises(ConfigError, match=r"expect\[0\] \(signal_range\): unknown key\(s\) at; it takes max, "):
        parse_scenario(text)


def test_at_is_taken_where_the_check_reads_it() -> None:
    value = parse_scenario(
        MINIMAL + '[[expect]]\ncheck = "signal_value"\npath = "Vehicle.Speed"\nequals = 0\nat = 5\n'
        '[[expect]]\ncheck = "service_at"\nservice = "6AM"\nat = 5\nstate = "running"\n'
    )
    assert [e.args["at"] for e in value.expectations] == [5, 5]
    step = parse_scenario(MINIMAL + '[[step]]\nat = 3\ndo = "lock"\n').steps[0]
    assert (step.at, step.args) == (3.0, {})
