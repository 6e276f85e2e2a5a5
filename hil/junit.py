"""`junit.xml`: each scenario a test suite, each expectation a test case, so a CI system (GitLab,
Jenkins, GitHub's test reporters) lists a bench run's checks as tests and a failed one with its reason.

The common JUnit schema as pytest's `--junitxml` writes it: `<testsuites>` holding one `<testsuite
name tests failures errors skipped time>` per scenario, one `<testcase classname name time>` per
expectation; a failed expectation has a `<failure message=...>` whose message is the expectation's
detail and whose text adds the measured value and the limit; a check that could not run has an
`<error>` instead (pytest's convention: the test itself could not run), counted in `errors`. A
scenario that checked nothing fails (the CLI fails such a run too): one test case says so.
Deterministic like the rest of the report: no timestamp, no host name.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from hil.timeline import ExpectationResult, Phase, SpanKind, Timeline, duration_s

NOTHING_CHECKED = "the scenario checked nothing (add [[expect]] entries)"
# What XML 1.0 cannot carry at all (control characters, lone surrogates, U+FFFE/U+FFFF): a detail that
# quotes a device's garbage must not make the whole file unreadable to the CI system.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    return _NOT_XML.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _measured(result: ExpectationResult) -> str:
    return result.measured


def _limit(result: ExpectationResult) -> str:
    return result.limit


def expectation_text(result: ExpectationResult) -> str:
    """The detail, then the measured value and the limit when the check gave them."""
    lines = [result.detail]
    if _measured(result):
        lines.append(f"measured: {_measured(result)}")
    if _limit(result):
        lines.append(f"limit: {_limit(result)}")
    return "\n".join(lines)


def _suite(timeline: Timeline) -> ET.Element:
    results = timeline.expectations
    failures = _failures(results)
    classname = f"hil.{timeline.scenario}"
    suite = ET.Element(
        "testsuite",
        {
            "name": classname,
            "tests": str(max(len(results), 1)),
            "failures": str(failures),
            "errors": str(_errors(results)),
            "skipped": "0",
            "time": f"{duration_s(timeline):.3f}",
        },
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in _properties(timeline):
        ET.SubElement(properties, "property", {"name": name, "value": value})
    for result in results:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": result.name, "time": "0.000"})
        if result.errored:
            error = ET.SubElement(case, "error", {"message": result.detail, "type": "CheckError"})
            error.text = expectation_text(result)
        elif not result.passed:
            failure = ET.SubElement(case, "failure", {"message": result.detail, "type": "ExpectationFailed"})
            failure.text = expectation_text(result)
        else:
            ET.SubElement(case, "system-out").text = expectation_text(result)
    if not results:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": "expectations", "time": "0.000"})
        ET.SubElement(case, "failure", {"message": NOTHING_CHECKED, "type": "NothingChecked"}).text = NOTHING_CHECKED
    return suite


def _failures(results: Sequence[ExpectationResult]) -> int:
    """Failed checks; a scenario that checked nothing is one failure."""
    return sum(not r.passed and not r.errored for r in results) if results else 1


def _errors(results: Sequence[ExpectationResult]) -> int:
    return sum(r.errored for r in results)


def _properties(timeline: Timeline) -> list[tuple[str, str]]:
    found = [("scenario", timeline.scenario), ("description", timeline.description)]
    for phase in Phase:
        span = timeline.phase(phase)
        if span is not None:
            found.append((f"phase.{phase}", f"{span.start:.3f}-{span.end:.3f} s"))
    for index, span in enumerate(timeline.spans_of(SpanKind.FAULT), start=1):
        found.append((f"fault.{index}", f"{span.label} {span.start:.3f}-{span.end:.3f} s"))
    return found


def render_junit(timelines: Sequence[Timeline]) -> str:
    root = ET.Element(
        "testsuites",
        {
            "name": "tcu-hil",
            "tests": str(sum(max(len(t.expectations), 1) for t in timelines)),
            "failures": str(sum(_failures(t.expectations) for t in timelines)),
            "errors": str(sum(_errors(t.expectations) for t in timelines)),
            "time": f"{sum(duration_s(t) for t in timelines):.3f}",
        },
    )
    root.extend(_suite(timeline) for timeline in timelines)
    for element in root.iter():
        element.attrib = {key: xml_safe(value) for key, value in element.attrib.items()}
        element.text = None if element.text is None else xml_safe(element.text)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(timelines: Sequence[Timeline], path: Path) -> None:
    path.write_text(render_junit(timelines), encoding="utf-8")
