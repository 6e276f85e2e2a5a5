"""The HIL checks split by concept (hil.signal_checks, latency_checks, ecall_checks, service_checks,
measure_checks, ownership): one table a scenario can name them from, no name shadowed by another
module's, a missing time axis said as a mistake of the bench, and the link-up that ends an excluded
fault found on any order of link and agent events."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil import ecall_checks, latency_checks, measure_checks, ownership, service_checks, signal_checks
from hil.expectations import CHECK_TABLE, evaluate
from hil.latency_checks import link_back
from hil.scenario import CHECKS, parse_scenario
from hil.timeline import Event, EventKind
from tests.hil.evidence_builder import HEAD, bench_records

MODULES = (signal_checks, latency_checks, ecall_checks, service_checks, measure_checks, ownership)


def test_every_check_a_scenario_can_name_is_evaluated_and_none_is_shadowed() -> None:
    """`CHECK_TABLE` merges the modules' tables: a name in two would silently run only the last one."""
    assert set(CHECK_TABLE) == set(CHECKS)
    owners: dict[str, list[str]] = {}
    for module in MODULES:
        for name in module.CHECKS:
            owners.setdefault(name, []).append(module.__name__)
    assert {name: mods for name, mods in owners.items() if len(mods) > 1} == {}
    for name, (module,) in owners.items():
        assert CHECK_TABLE[name] is next(m for m in MODULES if m.__name__ == module).CHECKS[name]


def test_a_check_without_the_scenario_time_axis_says_so_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The runner's mistake, said as a ConfigError: one line in the log and in the report."""
    scenario = parse_scenario(HEAD + '[[expect]]\ncheck = "signal_value"\npath = "Vehicle.Speed"\nequals = 3\n')
    with bench_records(tmp_path) as records, caplog.at_level(logging.ERROR, logger="hil.expectations"):
        records.telemetry(1.0, 1.05, {"Vehicle.Speed": 3.0})
        (result,) = evaluate(scenario, replace(records.evidence(), scenario_seconds=None))
    assert not result.passed
    assert result.detail == ("check failed to run: the runner gave no scenario time axis (Evidence.scenario_seconds)")
    assert [r.exc_info for r in caplog.records] == [None]


_LABELS = {
    EventKind.LINK: ("link up", "link down"),
    EventKind.AGENT: ("agent SIGKILLed", "agent restarted", "agent down", "agent started"),
    EventKind.FAULT: ("link up",),  # a fault's own label is no link event, whatever it says
}
events = st.lists(
    st.builds(
        lambda t, kind, index: Event(t=t, kind=kind, label=_LABELS[kind][index % len(_LABELS[kind])]),
        st.floats(0, 100, allow_nan=False),
        st.sampled_from([EventKind.LINK, EventKind.AGENT, EventKind.FAULT]),
        st.integers(0, 3),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(events=events, after=st.floats(0, 100, allow_nan=False))
def test_link_back_is_the_first_link_up_after_a_fault_that_left_the_link_down(
    events: list[Event], after: float
) -> None:
    back = link_back(events, after)
    assert back >= after
    ups = sorted(e.t for e in events if e.kind is EventKind.LINK and e.label == "link up")
    relevant = sorted((e for e in events if e.kind in (EventKind.LINK, EventKind.AGENT)), key=lambda e: e.t)
    before = [e for e in relevant if e.t <= after]
    if back == after:  # nothing said the link was down at `after`
        assert not before or before[-1].label == "link up"
    elif math.isinf(back):  # down at `after` and never up again
        assert not [t for t in ups if t > after]
    else:  # down at `after`, and this is the first link-up since
        assert back in ups
        assert not [t for t in ups if after < t < back]
        assert before
        assert before[-1].label != "link up"
