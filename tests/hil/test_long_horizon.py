"""The long-horizon scenarios (measure_cap, ecall_t2, terms_renewal) and their checks (measure_attempt in
hil.measure_checks, service_at in hil.service_checks, ecall_cleared_by_t2 in hil.ecall_checks,
personal_settings in hil.ownership), without running a bench: each check on a real backend store filled
with what a run leaves behind, passing on the right data and failing on the shortcut it exists to catch;
the scenarios' own arithmetic (the measure's plan against its cap, the renewal deadline against the
calendar moves on any day CI runs, the eCall settings the agent is given)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_stub.psap import PsapCall
from hil.expectations import CHECK_TABLE, evaluate
from hil.layout import BenchLayout
from hil.run_context import Bench
from hil.scenario import CHECKS, Scenario, library, load_scenario, parse_scenario
from hil.scenario_agent_config import ScenarioAgentConfig
from hil.timeline import ExpectationResult
from tcu.ecall.config import load_ecall_config
from tcu.services.personal import DriverProfile, PersonalData, PersonalStore
from telematics_wire.terms import Booking, Term
from tests.hil.evidence_builder import BenchRecords, assert_fails, wall

HORIZON = ("measure_attempt", "service_at", "ecall_cleared_by_t2", "personal_settings")


def check(records: BenchRecords, name: str, **args: Any) -> ExpectationResult:
    """One expectation through the scenario parser's key table and the runner's evaluation."""
    unknown = set(args) - CHECKS[name]
    assert not unknown, f"{name} does not take {unknown}"
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in args.items())
    return records.check(f'check = "{name}"\n{lines}')


def _scenario(expect: str) -> Scenario:
    return parse_scenario(f'name = "t"\nduration_s = 10\n{expect}')


def test_every_horizon_check_is_in_both_tables() -> None:
    """A scenario can name each (hil.scenario) and the runner can evaluate it (hil.expectations)."""
    for name in HORIZON:
        assert name in CHECKS
        assert name in CHECK_TABLE


# -- measure_attempt ------------------------------------------------------------------------------


def attempt(records: BenchRecords, number: int, *, sent_s: float, ended_s: float, impaired_s: float, **kw: Any) -> None:
    store = records.backend.measure_store
    store.start_attempt("CAP-580", number, wall(sent_s))
    store.end_attempt(
        "CAP-580",
        number,
        status=kw.get("status", "succeeded"),
        at=wall(ended_s),
        code=kw.get("code"),
        impaired_s=impaired_s,
    )


def test_measure_attempt_passes_on_an_attempt_that_ran_its_minutes(records: BenchRecords) -> None:
    attempt(records, 1, sent_s=300, ended_s=840.1, impaired_s=539.0, status="rolled_back", code="lock_or_unlock")
    attempt(records, 2, sent_s=845, ended_s=1427.5, impaired_s=580.6)
    first = check(records, "measure_attempt", id="CAP-580", attempt=1, status="rolled_back", code="lock_or_unlock")
    assert first.passed, first.detail
    last = check(records, "measure_attempt", id="CAP-580", status="succeeded", min_s=580, max_s=600)
    assert last.passed, last.detail
    assert last.measured == "580.6 s"
    assert "582.500 s from sending to the answer" in last.detail


def test_measure_attempt_fails_when_the_steps_finished_at_once(records: BenchRecords) -> None:
    """The shortcut the check exists for: a cap that is not real time (steps that do not wait)."""
    attempt(records, 1, sent_s=300, ended_s=300.4, impaired_s=0.012)
    result = check(records, "measure_attempt", id="CAP-580", min_s=580, max_s=600)
    assert_fails(result, "impaired services for 0.012 s, outside 580..600 s")


def test_measure_attempt_fails_when_the_backend_saw_less_time_than_the_vehicle_claims(records: BenchRecords) -> None:
    """A vehicle clock that ran ahead (or a made-up figure): the backend's own clock disagrees."""
    attempt(records, 1, sent_s=300, ended_s=310, impaired_s=580.2)
    result = check(records, "measure_attempt", id="CAP-580", min_s=580, max_s=600)
    assert_fails(result, "the backend saw only 10.000 s")


def test_measure_attempt_fails_past_the_cap_and_on_another_status(records: BenchRecords) -> None:
    attempt(records, 1, sent_s=0, ended_s=602, impaired_s=600.5, status="rolled_back", code="time_cap")
    over = check(records, "measure_attempt", id="CAP-580", min_s=580, max_s=600)
    assert_fails(over, "600.5 s, outside")
    status = check(records, "measure_attempt", id="CAP-580", status="succeeded")
    assert_fails(status, "status 'rolled_back', expected 'succeeded'")


def test_measure_attempt_names_what_there_is_when_the_attempt_is_missing(records: BenchRecords) -> None:
    attempt(records, 1, sent_s=0, ended_s=1, impaired_s=0.5, status="rolled_back", code="lock_or_unlock")
    result = check(records, "measure_attempt", id="CAP-580", attempt=2)
    assert not result.passed
    assert result.detail == "measure CAP-580: no attempt 2 (attempts: #1 rolled_back (lock_or_unlock))"


def test_measure_attempt_refuses_a_bool_attempt(records: BenchRecords) -> None:
    """`attempt = true` is 1 to Python; said as a mistake, not read as the first attempt."""
    attempt(records, 1, sent_s=0, ended_s=600, impaired_s=580)
    result = check(records, "measure_attempt", id="CAP-580", attempt=True)
    assert_fails(result, "attempt = True: expected an attempt number from 1")


# -- service_at -----------------------------------------------------------------------------------


def test_service_at_reads_the_last_report_made_by_then(records: BenchRecords) -> None:
    """A term that ends at the right moment, not merely at some point of the run."""
    records.capabilities(5, ["6AE", "6AM", "6AN"])
    records.capabilities(22, ["6AE", "6AM", "6AN"])
    records.capabilities(40, ["6AE", "6AN"])
    assert check(records, "service_at", service="6AM", at=29, state="running").passed
    early_end = check(records, "service_at", service="6AM", at=29, state="off")
    assert not early_end.passed
    assert early_end.detail.startswith("6AM running in the report made at 22.0 s, dated 2026-11-23")
    assert check(records, "service_at", service="6AM", at=45, state="off").passed


def test_service_at_fails_without_a_report_by_then_and_refuses_an_unknown_state(records: BenchRecords) -> None:
    records.capabilities(40, ["6AN"])
    none = check(records, "service_at", service="6AN", at=10, state="running")
    assert not none.passed
    assert none.detail == "no capability report made by 10 s (1 in all)"
    typo = check(records, "service_at", service="6AN", at=50, state="active")
    assert_fails(typo, "expected one of running, suspended, partly suspended, off")


# -- ecall_cleared_by_t2 --------------------------------------------------------------------------


def transition(records: BenchRecords, to: str, at_s: float, reason: str = "") -> None:
    """A transition of the crash at 20 s, received a second later."""
    records.ecall(to, at_s, at_s + 1, started_s=20.0, reason=reason or to)


def t2_call(
    records: BenchRecords,
    *,
    cleared_after_s: float = 3600.084,
    cleared_by: str = "T2: clear-down fallback after 3600 s",
    dials: int = 1,
    msd_reason: str = "AL-ACK positive",
    ended_by: str = "ivs",
) -> None:
    """A crash at 20 s, answered at 23 s, as ecall_t2 records it; then the PSAP's own view of the call."""
    transition(records, "triggered", 20.0, "crash detected")
    for n in range(dials):
        transition(records, "dialling", 20.1 + n, f"dial attempt {n + 1}")
    transition(records, "call_established", 23.0, "PSAP answered")
    transition(records, "msd_sent", 23.2, "PSAP requested the MSD (SEND MSD)")
    transition(records, "msd_acknowledged" if msd_reason.startswith("AL-ACK") else "voice", 25.0, msd_reason)
    transition(records, "voice", 25.1, "voice after the AL-ACK for MSD 1")
    transition(records, "cleared", 23.0 + cleared_after_s, cleared_by)
    psap = records.backend.psap
    assert psap is not None
    call = PsapCall(id=1, callback="127.0.0.1:1", started=wall(20.5), kind="automatic", ended_by=ended_by)
    call.timeline += [(1000.0, "call"), (1002.5, "connected"), (1002.5 + cleared_after_s + 1.6, f"ended by {ended_by}")]
    psap.calls.append(call)


def test_ecall_cleared_by_t2_passes_on_the_vehicle_clearing_after_an_hour(records: BenchRecords) -> None:
    t2_call(records)
    result = check(records, "ecall_cleared_by_t2", t2_s=3600, tolerance_s=20)
    assert result.passed, result.detail
    assert result.measured == "3600.084 s"
    assert "PSAP call 1 ended by ivs 3601.7 s after it answered" in result.detail


@pytest.mark.parametrize(
    ("change", "found"),
    [
        ({"cleared_by": "PSAP cleared down", "cleared_after_s": 3600.5}, "cleared by 'PSAP cleared down', not by T2"),
        ({"cleared_after_s": 3599.5}, "cleared 3599.500 s after the PSAP answered"),  # a T2 that fires early
        ({"cleared_after_s": 3630.0}, "cleared 3630.000 s after the PSAP answered"),
        ({"dials": 2}, "2 dial attempts, expected 1"),
        ({"msd_reason": "T7: MSD not acknowledged within 20 s; voice"}, "the MSD was never acknowledged"),
        ({"ended_by": "psap"}, "the vehicle should have hung up"),
    ],
)
def test_ecall_cleared_by_t2_fails_on_each_way_the_hour_can_go_wrong(
    records: BenchRecords, change: dict[str, Any], found: str
) -> None:
    t2_call(records, **change)
    result = check(records, "ecall_cleared_by_t2", t2_s=3600, tolerance_s=20)
    assert not result.passed
    assert found in result.detail


def test_ecall_cleared_by_t2s_default_tolerance_covers_real_io_at_the_runs_time_scale(records: BenchRecords) -> None:
    """T2 fired 15 s late: 150 ms of a loaded bench at scale 100, far too late at real time."""
    t2_call(records, cleared_after_s=3615.0)
    assert_fails(check(records, "ecall_cleared_by_t2"), "cleared 3615.000 s after the PSAP answered")
    records.time_scale = 100.0
    result = check(records, "ecall_cleared_by_t2")
    assert result.passed, result.detail
    assert result.limit == "T2 clear-down 3600..3625 s after the PSAP answered"


def test_ecall_cleared_by_t2_names_a_timer_fallback(records: BenchRecords) -> None:
    t2_call(records)
    transition(records, "voice", 24.0, "T5: no SEND MSD within 5 s; voice")
    result = check(records, "ecall_cleared_by_t2")
    assert_fails(result, "fallback T5: no SEND MSD within 5 s; voice")


def test_ecall_cleared_by_t2_without_a_call(records: BenchRecords) -> None:
    result = check(records, "ecall_cleared_by_t2")
    assert (result.passed, result.detail) == (False, "no emergency eCall at the backend")


# -- personal_settings ----------------------------------------------------------------------------


async def test_personal_settings_reads_the_cars_file(records: BenchRecords, tmp_path: Path) -> None:
    path = tmp_path / "personal.cbor"
    evidence = records.evidence()
    kept = PersonalData(paired_accounts=("owner@example.org",), profiles=(DriverProfile(name="Driver"),))
    await PersonalStore(path).save(kept)
    scenario = _scenario(
        '[[expect]]\ncheck = "personal_settings"\nprofiles = ["Driver"]\naccounts = ["owner@example.org"]\n'
    )
    (passed,) = evaluate(scenario, replace(evidence, personal_path=path))
    assert passed.passed, passed.detail
    await PersonalStore(path).save(PersonalData(paired_accounts=("owner@example.org",)))  # a rollback that lost it
    (lost,) = evaluate(scenario, replace(evidence, personal_path=path))
    assert_fails(lost, "driver profiles [], expected ['Driver']")


# -- the scenarios themselves ---------------------------------------------------------------------


def _library(name: str) -> Scenario:
    return load_scenario(library()[name])


def test_measure_cap_plans_within_the_cap_and_unlocks_in_the_second_step() -> None:
    scenario = _library("measure_cap")
    (measure,) = [s for s in scenario.steps if s.do == "measure"]
    (unlock,) = [s for s in scenario.steps if s.do == "unlock"]
    step_s, changes = float(measure.args["step_s"]), len(measure.args["changes"])
    assert step_s * changes == 600, "planned at exactly the cap: more than 10 minutes is refused (AGB 3.4 d)"
    assert step_s < unlock.at - measure.at < step_s * changes, "the unlock must fall in the last step"
    assert unlock.at - measure.at >= 9 * 60, "interrupted late: at minute 9"
    assert unlock.at + 30 + 600 + 60 <= scenario.duration_s, "the retry (after up to 30 s of backoff) ends in the run"
    profile = next(s for s in scenario.steps if s.do == "profile")
    # `tcu profile add` takes a few real seconds: the profile is added during the first attempt, well
    # before the unlock rolls it back, so the rollback has a profile to leave alone.
    assert measure.at < profile.at
    assert (unlock.at - profile.at) / scenario.time_scale >= 6


def test_ecall_t2_gives_the_agent_raised_msd_timers_and_the_real_t2(tmp_path: Path) -> None:
    """The scenario's [ecall] keys as the runner writes them (dotted keys into [ecall.timers]) are what
    the agent loads: the MSD phase's waits on the PSAP raised above real I/O at this scale, the AT
    timeout its default (tcu.virtual_time.io_timeout floors it), T2 and T9 untouched, the PSAP never
    clearing."""
    scenario = _library("ecall_t2")
    bench = SimpleNamespace(
        layout=BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1883"),
        devices={},
        real_ports={"modem": str(tmp_path / "modem")},
    )
    written = ScenarioAgentConfig(scenario=scenario).write(cast("Bench", bench))
    config = load_ecall_config(tomllib.loads(written.read_text())["ecall"], vin=scenario.vin)
    assert config is not None
    assert config.command_timeout_s == 5.0
    timers = config.timers
    assert min(timers.t5_s, timers.t6_s, timers.t7_s) / scenario.time_scale >= 0.3  # real seconds at 100x
    assert (config.timers.t2_s, config.timers.t9_s) == (3600.0, 3600.0)
    assert float(scenario.psap_settings["voice_s"]) > config.timers.t2_s
    crash = next(s for s in scenario.steps if s.do == "crash")
    assert crash.at + config.timers.t2_s + 30 < scenario.duration_s, "the run outlasts T2 (3 s to answer)"


@settings(max_examples=300, deadline=None)
@given(today=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)))
def test_terms_renewal_moves_the_calendar_past_the_deadline_then_past_the_end_on_any_day(today: date) -> None:
    """Whatever day CI runs on: the first cancel is in time, the calendar's first move passes the renewal
    deadline but not the end of the two years, its second passes the end (leap days included)."""
    scenario = _library("terms_renewal")
    moves = [s for s in scenario.steps if s.do == "advance_calendar"]
    cancels = [s for s in scenario.steps if s.do == "cancel"]
    assert [s.args["service"] for s in cancels] == ["6AM", "6AN"]
    first_move, second_move = (int(s.args["days"]) for s in moves)
    assert cancels[0].at < moves[0].at < cancels[1].at < moves[1].at
    booking = Booking(
        code="6AM",
        term=Term.YEARS_2_PLUS_1,
        start=today,
        first_registration=today - timedelta(days=scenario.first_registration_days_ago),
    )
    deadline, end = booking.renewal_deadline(), booking.first_end()
    assert deadline is not None
    assert end is not None
    assert today <= deadline < today + timedelta(days=first_move)
    assert today + timedelta(days=first_move) < end <= today + timedelta(days=first_move + second_move)


def test_the_long_horizon_scenarios_run_fast_enough_for_ci() -> None:
    """Real seconds of scenario time: what CI pays for each (plus start-up and drain)."""
    for name in ("measure_cap", "ecall_t2", "terms_renewal"):
        scenario = _library(name)
        assert scenario.duration_s / scenario.time_scale <= 40, name
        assert set(HORIZON) & {e.check for e in scenario.expectations}, f"{name} uses none of {HORIZON}"
