"""The precise eCall checks (hil.ecall_checks) on a real backend store and PSAP table filled with what a
crash run leaves behind (timings as a bench run measured them): each passes on the right data and fails
on one mutation (a stage over its limit or never reached, the MSD far off or without a position)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from hil.expectations import evaluate
from hil.scenario import library, load_scenario, parse_scenario
from tcu.vehicle.geo import distance_m
from tests.hil.evidence_builder import HEAD, BenchRecords, assert_fails, position_at

TIMINGS = (
    'check = "ecall_timings"\ndial_max_ms = 1000\nmsd_acknowledged_max_ms = 8000\nvoice_max_ms = 9000\n'
    "cleared_min_ms = 10000\ncleared_max_ms = 20000\n"
)
PRECISE = frozenset(
    {
        "signal_value",
        "signal_range",
        "signal_edge",
        "event_latency",
        "telemetry_latency",
        "ecall_timings",
        "msd_received",
        # measured against a limit too (the long-horizon scenarios)
        "measure_attempt",
        "service_at",
        "ecall_cleared_by_t2",
    }
)


def crash(
    records: BenchRecords,
    *,
    at: float = 15.0,
    step: bool = True,
    ack_after_s: float = 3.833,
    acknowledged: bool = True,
    voice_s: float = 10.0,
    msd_position: tuple[float, float] | None = None,
    msd: bool = True,
) -> None:
    """A crash at `at` as a bench run reports it: dialled at once, answered 2.01 s later, the MSD
    acknowledged `ack_after_s` after the trigger, voice, the PSAP clearing down after `voice_s`."""
    if step:
        records.step(at, "crash")
    held = at + ack_after_s + 0.05  # the telematics uplink keeps off the radio until the AL-ACK
    records.ecall("triggered", at, held, started_s=at)
    records.ecall("dialling", at, held, started_s=at)
    records.ecall("call_established", at + 2.01, held, started_s=at)
    records.ecall("msd_sent", at + 2.013, held, started_s=at)
    if acknowledged:
        records.ecall("msd_acknowledged", at + ack_after_s, held, started_s=at)
    records.ecall("voice", at + ack_after_s, held, started_s=at)
    records.ecall("cleared", at + ack_after_s + voice_s, at + ack_after_s + voice_s + 0.02, started_s=at)
    if msd:
        records.msd(at + 3.5, position_at(at - 0.4) if msd_position is None else msd_position)  # the last fix


# -- ecall_timings ---------------------------------------------------------------------------------


def test_ecall_timings_show_each_stage_and_its_limit(records: BenchRecords) -> None:
    crash(records)
    result = records.check(TIMINGS)
    assert result.passed, result
    stages = "dial 0 ms, answered 2010 ms, msd_acknowledged 3833 ms, voice 3833 ms, cleared 13833 ms"
    assert result.measured == stages
    assert result.limit == "dial <= 1000 ms, msd_acknowledged <= 8000 ms, voice <= 9000 ms, cleared 10000..20000 ms"
    assert result.detail.startswith("eCall session 1 (automatic, crash detected): from the trigger dial 0 ms")


@pytest.mark.parametrize(
    ("mutation", "found"),
    [
        ({"ack_after_s": 12.0}, ("msd_acknowledged 12000 ms outside <= 8000 ms", "voice 12000 ms outside <= 9000 ms")),
        ({"acknowledged": False}, ("; msd_acknowledged never reached",)),  # voice after the MSD failed
        ({"voice_s": 2.0}, ("cleared 5833 ms outside 10000..20000 ms",)),  # cleared down before the voice time
    ],
)
def test_a_stage_over_its_limit_or_never_reached_fails(
    records: BenchRecords, mutation: dict[str, Any], found: tuple[str, ...]
) -> None:
    crash(records, **mutation)
    result = records.check(TIMINGS)
    for text in found:
        assert_fails(result, text)


def test_a_test_call_is_not_the_emergency_measured(records: BenchRecords) -> None:
    records.ecall("triggered", 2.0, 2.1, session=1, call_type="test")
    records.ecall("dialling", 4.0, 4.1, session=1, call_type="test", started_s=2.0)  # slow: 2000 ms
    for to, at in (("triggered", 15.0), ("dialling", 15.1)):
        records.ecall(to, at, 16.0, session=2, started_s=15.0)
    result = records.check('check = "ecall_timings"\ndial_max_ms = 500\n')
    assert result.passed, result
    assert result.measured.startswith("dial 100 ms, answered never")
    missing = records.check('check = "ecall_timings"\nanswered_max_ms = 5000\n')
    assert not missing.passed  # the emergency session was never answered


def test_ecall_timings_without_a_limit_or_a_trigger_fail_with_the_reason(records: BenchRecords) -> None:
    nothing = records.check(TIMINGS)
    assert not nothing.passed
    assert nothing.detail == "no eCall trigger of the first emergency session at the backend (0 transitions)"
    crash(records)
    unlimited = records.check('check = "ecall_timings"\nsession = 1\n')
    assert not unlimited.passed
    assert unlimited.detail.startswith("check failed to run: needs at least one limit: answered_max_ms")


# -- msd_received ----------------------------------------------------------------------------------


def test_the_msd_position_is_compared_with_the_drive_at_the_crash_step(records: BenchRecords) -> None:
    crash(records)
    result = records.check('check = "msd_received"\nwithin_m = 200\n')
    assert result.passed, result
    off = distance_m(position_at(15.0), position_at(14.6))
    assert (result.measured, result.limit) == (f"{off:.0f} m", "<= 200 m")
    assert "at the crash step at 15 s" in result.detail


def test_an_msd_far_from_the_drive_fails(records: BenchRecords) -> None:
    latitude, longitude = position_at(15.0)
    crash(records, msd_position=(latitude + 0.01, longitude))  # about 1.1 km north
    result = records.check('check = "msd_received"\nwithin_m = 200\n')
    assert not result.passed
    assert result.measured == "1112 m"


def test_without_a_crash_step_the_trigger_record_places_the_msd(records: BenchRecords) -> None:
    """No step caused the call (a recorded crash, a real airbag ECU): the trigger record's time counts."""
    crash(records, at=20.0, step=False)
    result = records.check('check = "msd_received"\n')
    assert result.passed, result
    assert "at the eCall trigger at 20.00 s (crash detected)" in result.detail
    records.msd(30.0, position_at(90.0))  # a later MSD cannot stand in for the first
    assert records.check('check = "msd_received"\n').passed


def test_an_msd_without_a_position_never_passes(records: BenchRecords) -> None:
    crash(records, msd=False)
    records.msd(18.5, None)
    result = records.check('check = "msd_received"\n')
    assert not result.passed
    assert result.detail.startswith("MSD #1 from WMWZZZ3CZ2E123456 carries no position")
    (blind,) = evaluate(
        parse_scenario(HEAD + '[[expect]]\ncheck = "msd_received"\n'), records.evidence(with_position=False)
    )
    assert_fails(blind, "the bench knows no drive position")


# -- the library ---------------------------------------------------------------------------------


def test_every_shipped_scenario_has_a_precise_check_with_valid_arguments(records: BenchRecords) -> None:
    """Each scenario in hil/scenarios declares at least one precise check, and each of those runs (on an
    empty backend it fails for want of data, never for a mistake in its arguments)."""
    for name, path in library().items():
        scenario = load_scenario(path)
        precise = [e for e in scenario.expectations if e.check in PRECISE]
        assert precise, f"{name} has no precise check"
        results = evaluate(replace(scenario, expectations=tuple(precise)), records.evidence(steps=scenario.steps))
        for result in results:
            assert not result.detail.startswith("check failed to run"), (name, result)
