"""The `sale` scenario end to end through Mosquitto: the account paired by the code the car shows, a driver
profile, the owner change; personal data gone in the car and at the backend, link and consents ended,
the new owner told of the services."""

from __future__ import annotations

from pathlib import Path

from hil.cli import main as hil_cli
from hil.report import load_timeline
from tests.conftest import require_mosquitto


def test_the_sale_scenario_passes(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    require_mosquitto()
    code = hil_cli(["run", "sale", "--workdir", str(tmp_path / "run"), "--broker", "mosquitto"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sale: PASS" in out
    labels = [event.label for event in load_timeline(tmp_path / "run" / "report" / "timeline.json").events]
    # In this order: the code was shown in the car before the account was paired, the profile after it.
    shown, paired, profile = (
        labels.index("security code shown in the car"),
        labels.index("account paired"),
        labels.index("driver profile created"),
    )
    assert shown < paired < profile
    assert "security code for account seller@example.org" in (tmp_path / "run" / "agent.log").read_text()


def test_without_the_owner_change_the_checks_fail(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The checks are not vacuous: a car that was never handed over fails each of them."""
    require_mosquitto()
    scenario = tmp_path / "kept.toml"
    scenario.write_text(
        'name = "kept"\nduration_s = 12\ndevices = []\n[vehicle]\nlegal_ecall = false\n'
        '[[step]]\nat = 1\ndo = "pair"\n'
        '[[expect]]\ncheck = "car_personal_data_wiped"\n'
        '[[expect]]\ncheck = "backend_personal_data_gone"\n'
        '[[expect]]\ncheck = "account_unlinked"\n'
    )
    assert hil_cli(["run", str(scenario), "--workdir", str(tmp_path / "run"), "--broker", "mosquitto"]) == 1
    out = capsys.readouterr().out
    assert "FAIL car_personal_data_wiped: owner changes 0" in out
    assert "FAIL backend_personal_data_gone: the backend handled no owner change" in out
    assert "FAIL account_unlinked: links: [('owner@example.org', 'active')]" in out
