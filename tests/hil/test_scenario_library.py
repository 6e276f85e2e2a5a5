"""Every scenario of the library, end to end through Mosquitto on its virtual time, as `tcu-hil run` runs it.

The scenarios with tests of their own (which look closer at what the run did) run there instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli import main as hil_cli
from hil.scenario import library, load_scenario
from tests.conftest import require_mosquitto

OWN_TESTS = {
    "payment_default": "tests/hil/test_payment_default_scenario.py",
    "sale": "tests/hil/test_sale_scenario.py",
    "replay_commute": "tests/hil/test_replay.py",
}
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(set(library()) - set(OWN_TESTS)))
def test_the_scenario_passes_every_check(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_mosquitto()
    code = hil_cli(["run", name, "--workdir", str(tmp_path / "run"), "--broker", "mosquitto"])
    out = capsys.readouterr().out
    assert code == 0, out
    checks = len(load_scenario(library()[name]).expectations)
    assert f"{name}: PASS ({checks}/{checks} expectations)" in out


def test_every_library_scenario_runs_in_ci_on_virtual_time() -> None:
    """Faster than real time, each at least checked, none forgotten by this file."""
    for name, path in library().items():
        scenario = load_scenario(path)
        assert scenario.time_scale > 1, f"{name} runs in real time"
        assert scenario.expectations, f"{name} checks nothing"
    for name, test_file in OWN_TESTS.items():
        assert name in library()
        assert f'"run", "{name}"' in (REPO / test_file).read_text(), f"{test_file} does not run {name}"
