"""`junit.xml`: each scenario a test suite, each expectation a test case, readable by what reads pytest's."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, cast

import pytest

from hil import expectations
from hil.expectations import Evidence, evaluate
from hil.junit import NOTHING_CHECKED, render_junit, write_junit
from hil.scenario import parse_scenario
from hil.timeline import ExpectationResult, Timeline
from tcu.errors import ConfigError
from tests.hil.evidence_builder import HEAD
from tests.hil.report_fixture import recorded_run, with_errored_check

REFERENCE_ARGS = ("-o", "junit_logging=system-out", "--junitxml", "ref.xml", "test_sample.py")


def _failing() -> Timeline:
    timeline = recorded_run()
    timeline.expectations.append(
        ExpectationResult(
            name="records_latency",
            passed=False,
            detail="p99 4.2 s over 37 records, limit 3 s",
            measured="p50 0.12 s, p99 4.2 s",
            limit="p99 <= 3 s",
        )
    )
    return timeline


def _errored() -> Timeline:
    """A run whose last check could not run, beside the one that failed."""
    return with_errored_check(_failing())


def _counts(element: ET.Element) -> tuple[str | None, ...]:
    return tuple(element.get(count) for count in ("tests", "failures", "errors"))


def _outcome(case: ET.Element) -> str:
    """`passed`, or what the case carries: `failure`, `error` (both: `error+failure`)."""
    return "+".join(sorted(child.tag for child in case if child.tag in ("failure", "error", "skipped"))) or "passed"


def _outline(root: ET.Element) -> dict[str, Any]:
    """What a CI system reads of a report: the totals, and each suite with its counts and cases."""
    return {
        "tag": root.tag,
        "totals": _counts(root),
        "suites": [
            {
                "name": suite.get("name"),
                "counts": _counts(suite),
                "time": suite.get("time"),
                "cases": [(case.get("classname"), case.get("name"), _outcome(case)) for case in suite.iter("testcase")],
            }
            for suite in root.findall("testsuite")
        ],
    }


SUITE = "hil.tunnel_kill_crash"
RECORDED_CASES = [
    (SUITE, "records_without_gaps", "passed"),
    (SUITE, "msd_received(within_m=200)", "passed"),
    (SUITE, "measure_succeeded", "passed"),
]


def test_one_suite_per_scenario_one_case_per_expectation() -> None:
    assert _outline(ET.fromstring(render_junit([recorded_run(), _failing()]))) == {
        "tag": "testsuites",
        "totals": ("7", "1", "0"),
        "suites": [
            {"name": SUITE, "counts": ("3", "0", "0"), "time": "124.500", "cases": RECORDED_CASES},
            {
                "name": SUITE,
                "counts": ("4", "1", "0"),
                "time": "124.500",
                "cases": [*RECORDED_CASES, (SUITE, "records_latency", "failure")],
            },
        ],
    }


def test_a_failure_carries_the_detail_the_measured_value_and_the_limit() -> None:
    root = ET.fromstring(render_junit([_failing()]))
    failure = root.find("testsuite/testcase[@name='records_latency']/failure")
    assert failure is not None
    assert failure.get("message") == "p99 4.2 s over 37 records, limit 3 s"
    assert failure.text == "p99 4.2 s over 37 records, limit 3 s\nmeasured: p50 0.12 s, p99 4.2 s\nlimit: p99 <= 3 s"
    passed = root.find("testsuite/testcase[@name='msd_received(within_m=200)']/system-out")
    assert passed is not None
    assert passed.text is not None
    assert "measured: 3 m\nlimit: 200 m" in passed.text


def test_a_check_that_could_not_run_is_an_error_not_a_failure() -> None:
    """pytest's convention, which CI systems follow: a failure is a verdict on the car, an error says the
    check itself did not run (a broken scenario or check), so nobody reads it as the car's fault."""
    root = ET.fromstring(render_junit([_errored(), recorded_run()]))
    outline = _outline(root)
    assert (outline["totals"], outline["suites"][0]["counts"]) == (("8", "1", "1"), ("5", "1", "1"))
    assert outline["suites"][0]["cases"][-2:] == [
        (SUITE, "records_latency", "failure"),  # the real failure stays one
        (SUITE, "signal_value", "error"),
    ]
    error = root.find("testsuite/testcase[@name='signal_value']/error")
    assert error is not None
    assert (error.get("message"), error.text) == ("check failed to run: KeyError: 'Vehicle.Speed'",) * 2


def _raises(exc: Exception) -> Any:
    def check(evidence: Evidence, args: dict[str, Any]) -> Any:
        raise exc

    return check


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (ConfigError("equals needs a number"), "check failed to run: equals needs a number"),
        (KeyError("Vehicle.Speed"), "check failed to run: KeyError: 'Vehicle.Speed'"),
    ],
)
def test_evaluate_marks_a_check_that_could_not_run(
    monkeypatch: pytest.MonkeyPatch, exc: Exception, detail: str
) -> None:
    monkeypatch.setitem(expectations.CHECK_TABLE, "signal_value", _raises(exc))
    scenario = parse_scenario(HEAD + '[[expect]]\ncheck = "signal_value"\npath = "Vehicle.Speed"\nequals = 3\n')
    (result,) = evaluate(scenario, cast(Evidence, None))
    assert (result.passed, result.errored, result.detail) == (False, True, detail)


def test_evaluate_does_not_mark_a_check_that_ran_and_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(expectations.CHECK_TABLE, "signal_value", lambda evidence, args: (False, "found 2"))
    scenario = parse_scenario(HEAD + '[[expect]]\ncheck = "signal_value"\npath = "Vehicle.Speed"\nequals = 3\n')
    (result,) = evaluate(scenario, cast(Evidence, None))
    assert (result.passed, result.errored) == (False, False)


def test_faults_and_phases_are_suite_properties() -> None:
    root = ET.fromstring(render_junit([recorded_run()]))
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["phase.startup"] == "0.000-1.600 s"
    assert properties["phase.drain"] == "120.000-124.500 s"
    assert properties["fault.2"] == "agent_kill 58.000-61.000 s"


def test_a_scenario_that_checked_nothing_is_a_failed_test() -> None:
    root = ET.fromstring(render_junit([Timeline(scenario="empty")]))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("1", "1")
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == NOTHING_CHECKED


def test_text_xml_cannot_carry_is_escaped_not_fatal(tmp_path: Path) -> None:
    timeline = Timeline(scenario="garbage")
    detail = "device answered \x00\x1b[2J\x07 <&> \ud800 then \"quotes\" and 'apostrophes'"
    timeline.expectations.append(ExpectationResult(name="elm \x01 check", passed=False, detail=detail))
    write_junit([timeline], tmp_path / "junit.xml")
    failure = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == (
        "device answered \\x00\\x1b[2J\\x07 <&> \\xd800 then \"quotes\" and 'apostrophes'"
    )


def test_the_deterministic_file_has_no_timestamp_or_host() -> None:
    text = render_junit([recorded_run()])
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<testsuites ')
    assert "timestamp" not in text
    assert "hostname" not in text
    assert text == render_junit([recorded_run()])


def test_the_shape_is_what_pytests_junitxml_writes(tmp_path: Path) -> None:
    """Every element and attribute we write is one pytest writes too: CI systems that read pytest's
    reports read ours."""
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef broken():\n    raise OSError('no port')\n\n"
        "def test_pass():\n    print('out')\n\ndef test_fail():\n    assert 1 == 2, 'one is not two'\n\n"
        "def test_error(broken):\n    pass\n"
    )
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *REFERENCE_ARGS],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    reference = ET.parse(tmp_path / "ref.xml").getroot()
    theirs: dict[str, set[str]] = {}
    for element in reference.iter():
        theirs.setdefault(element.tag, set()).update(element.keys())
    theirs.setdefault("properties", set())  # pytest writes these when a test records a property
    theirs.setdefault("property", set()).update({"name", "value"})
    # Beyond pytest: totals on <testsuites> and a failure's type, both in the JUnit schema Jenkins and
    # GitLab validate against (junit-10.xsd).
    theirs["testsuites"] |= {"tests", "failures", "errors", "time"}
    theirs["failure"] |= {"type"}
    theirs["error"] |= {"type"}
    ours = ET.fromstring(render_junit([_errored(), Timeline(scenario="empty")]))
    for element in ours.iter():
        assert element.tag in theirs, element.tag
        assert set(element.keys()) <= theirs[element.tag], (element.tag, element.keys())
    assert {"testsuites", "testsuite", "testcase", "failure", "error", "system-out"} <= set(theirs)
    assert {"failure", "error"} <= {element.tag for element in ours.iter()}
    for suite in ours.findall("testsuite"):  # the counts pytest writes, as integers a reader can sum
        assert all(int(suite.get(count, "x")) >= 0 for count in ("tests", "failures", "errors", "skipped"))
