"""The `payment_default` scenario of the library, end to end under `tcu-hil run` (AGB 5.5 c)."""

from __future__ import annotations

from pathlib import Path

from hil.cli import main as hil_cli
from hil.scenario import library, load_scenario
from tests.conftest import require_mosquitto


def test_payment_default_suspends_the_invoiced_code_s_paid_services_legal_ecall_completes_payment_restores(
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    require_mosquitto()
    code = hil_cli(["run", "payment_default", "--workdir", str(tmp_path / "run"), "--broker", "mosquitto"])
    out = capsys.readouterr().out
    assert code == 0, out
    checks = len(load_scenario(library()["payment_default"]).expectations)
    assert f"payment_default: PASS ({checks}/{checks} expectations)" in out
    assert "612 in the capability reports: off → running → partly suspended → running" in out
    assert "intelligent call in the capability reports: off → available → off → available" in out
    assert "6AE in the capability reports: off → running" in out
    assert "the vehicle's last report before it had 612 partly suspended" in out
