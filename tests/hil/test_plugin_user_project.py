"""The plugin in a bench team's own project: pytest-asyncio in its default strict mode (no
`asyncio_mode` anywhere), no conftest — and the README's example, run exactly as written.

The README example runs in full, its 10 s tunnel included: "runs as written" is the promise, and a
shortened copy would not keep it (about 20 s, once per CI run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

README = Path(__file__).parents[2] / "README.md"
# A user's config as pytest-asyncio's documentation starts it: strict mode, warnings are errors.
USER_INI = "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"
USER_TESTS = """
import pytest


async def test_uses_the_backend(tcu_backend):
    assert tcu_backend.store.vehicles() == []


@pytest.fixture
def vehicles_folder(tcu_bench):  # a fixture of the user's own, on top of ours
    return tcu_bench.root / "vehicles"


async def test_through_a_fixture_of_its_own(vehicles_folder, tcu_broker):
    assert vehicles_folder.parent.is_dir()


async def test_without_tcu_fixtures():  # strict mode: not ours to run
    pass
"""


def readme_example() -> str:
    """The python block of the README's subsection on bench teams' tests."""
    section = README.read_text().split("### Bench teams' own tests", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README: the bench teams' subsection lost its python example"
    return match.group(1)


def test_async_tests_using_the_fixtures_run_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(USER_INI)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 2, result.stdout.str()
    # The control: the project really is in strict mode, where an unmarked coroutine is not run.
    result.stdout.fnmatch_lines(["FAILED *::test_without_tcu_fixtures - Failed: async def functions*"])


def test_a_mistyped_marker_keyword_is_named(pytester: pytest.Pytester) -> None:
    pytester.makeini(USER_INI)
    pytester.makepyfile(
        test_user="""
import pytest

@pytest.mark.tcu_agent(vn="WMWZZZ3CZ2E123456")
async def test_car(tcu_agent):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.re_match_lines([r"@pytest\.mark\.tcu_agent: unknown \['vn'\]; known: \[.*'vin'\]$"])


def test_the_readme_example_runs_as_written(pytester: pytest.Pytester) -> None:
    code = readme_example()
    assert "tunnel(seconds=10)" in code
    assert "assert_no_loss(vin)" in code
    assert len([line for line in code.splitlines() if line.strip()]) <= 10, "the README promises ten lines"
    pytester.makeini(USER_INI)
    pytester.makepyfile(test_readme=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--durations=1")
    result.assert_outcomes(passed=1)
