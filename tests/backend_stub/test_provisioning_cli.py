"""`backend-stub provision ...`, `capabilities` and `enroll --legal-ecall`, as a person runs them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend_stub.cli import main
from backend_stub.provisioning_history import CapabilityReport
from backend_stub.provisioning_store import ProvisioningStore
from hil.layout import BenchLayout
from telematics_wire.keys import write_box_keypair
from tests.conftest import OTHER_VIN, VIN


@pytest.fixture
def bench(tmp_path: Path) -> BenchLayout:
    layout = BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:1")
    layout.create_backend()
    return layout


def cli(bench: BenchLayout, *args: str) -> int:
    return main([*args, "--config", str(bench.backend_config)])


def as_json(capsys: pytest.CaptureFixture[str], bench: BenchLayout, *args: str) -> Any:
    capsys.readouterr()
    assert cli(bench, *args, "--json") == 0
    return json.loads(capsys.readouterr().out)


def enroll(bench: BenchLayout, vin: str, *flags: str) -> int:
    keys = bench.keys / vin
    _, public = write_box_keypair(keys / str(len(list(keys.glob("*")))), vin)  # a fresh key each time
    return cli(bench, "enroll", vin, "--public-key", str(public), *flags)


def test_a_booking_shows_in_the_status_with_its_delivery_state(bench, capsys) -> None:
    assert enroll(bench, VIN, "--first-registration", "2026-01-01") == 0
    out = capsys.readouterr().out
    assert "legal eCall: no, brand: BMW, equipment: not recorded, first registration: 2026-01-01" in out
    assert cli(bench, "provision", "book", VIN, "--service", "6AM", "--term", "2+1y", "--start", "2026-01-01") == 0
    assert f"issued provisioning file version 1 for {VIN} (book 6AM 2+1y from 2026-01-01)" in capsys.readouterr().out
    status = as_json(capsys, bench, "provision", "status", VIN)
    assert (status["legal_ecall"], status["desired_version"], status["sim"]) == (False, 1, "active")
    assert (status["brand"], status["equipment"], status["first_registration"]) == ("BMW", None, "2026-01-01")
    [service] = status["services"]
    assert (service["code"], service["name"], service["end"]) == ("6AM", "Real Time Traffic Information", "2029-01-01")
    [file] = status["files"]
    assert (file["version"], file["state"], file["publications"]) == (1, "pending", 0)


def test_each_operation_issues_the_next_version(bench, capsys) -> None:
    enroll(bench, VIN, "--first-registration", "2026-01-01")
    steps = [
        ("book", "--service", "6AM", "--term", "2+1y", "--start", "2026-01-01"),
        ("extend", "--service", "6AM", "--months", "6", "--on", "2026-11-23"),
        ("cancel", "--service", "6AM", "--on", "2027-01-01"),  # before the deadline 2027-11-20: no renewal
        ("book", "--service", "612", "--term", "3m"),
        ("cancel", "--service", "612", "--sale"),
        ("book", "--service", "6AE"),
        ("cancel", "--contract", "--on", "2026-12-01"),  # notices 6AE: the rest is noticed or runs out
        ("suspend", "--service", "6AM"),
        ("suspend",),  # every other booked code with a fixed-term service: 612
        ("resume", "--service", "612"),
        ("resume",),
        ("deactivate-sim",),
    ]
    for number, (action, *options) in enumerate(steps, start=1):
        issued = as_json(capsys, bench, "provision", action, VIN, *options)
        assert (issued["version"], issued["state"]) == (number, "pending")
    status = as_json(capsys, bench, "provision", "status", VIN)
    services = {s["code"]: s for s in status["services"]}
    assert [(c, s["cancelled_on"], s["extensions"], s["end"], s["sale"]) for c, s in services.items()] == [
        ("612", services["612"]["cancelled_on"], [], services["612"]["end"], True),
        ("6AE", "2026-12-01", [], "2027-01-12", False),
        ("6AM", "2027-01-01", ["6m bought 2026-11-23"], "2028-07-01", False),
    ]
    assert (status["sim"], status["payment_default"], status["suspended"]) == ("deactivated", False, [])
    assert [f["state"] for f in status["files"]] == ["superseded"] * 11 + ["pending"]


def test_cancellation_refusals_say_what_the_terms_allow(bench, capsys) -> None:
    enroll(bench, VIN, "--first-registration", "2026-01-01")
    cli(bench, "provision", "book", VIN, "--service", "6AM", "--term", "2+1y")
    cli(bench, "provision", "book", VIN, "--service", "STORE-CONNECTED")
    capsys.readouterr()
    assert cli(bench, "provision", "cancel", VIN, "--service", "6AM", "--on", "2027-11-21") == 2
    assert "too late to stop the renewal of its 2+1 term (deadline 2027-11-20" in capsys.readouterr().err
    assert cli(bench, "provision", "cancel", VIN, "--service", "STORE-CONNECTED") == 2
    err = capsys.readouterr().err
    assert "does not renew and cannot be cancelled" in err
    assert "if the vehicle is sold, cancel with --sale (AGB 7.4)" in err
    assert cli(bench, "provision", "cancel", VIN, "--service", "6AF") == 2
    assert "legal eCall (6AF) cannot be cancelled" in capsys.readouterr().err


def test_equipment_is_recorded_at_enrolment_and_bookings_outside_it_are_refused(bench, capsys) -> None:
    assert enroll(bench, VIN, "--equipment", "6AE,6AC, 6AM", "--brand", "MINI") == 0
    assert "brand: MINI, equipment: 6AC,6AE,6AM" in capsys.readouterr().out
    assert cli(bench, "provision", "book", VIN, "--service", "7GH", "--term", "2+1y") == 2
    assert "the vehicle is not built with option code 7GH (Connected Navigation); its equipment: 6AC, 6AE, 6AM" in (
        capsys.readouterr().err
    )
    assert enroll(bench, VIN, "--equipment", "6AE,6NR") == 2
    assert "'6NR' is not an option code of the catalogue" in capsys.readouterr().err
    assert enroll(bench, VIN) == 0  # re-enrolment without options keeps what is recorded
    assert "brand: MINI, equipment: 6AC,6AE,6AM" in capsys.readouterr().out


def test_a_new_vehicle_is_first_registered_on_the_day_of_its_enrolment(bench, capsys) -> None:
    assert enroll(bench, VIN) == 0
    today = datetime.now(UTC).date()
    assert f"first registration: {today}" in capsys.readouterr().out
    issued = as_json(capsys, bench, "provision", "book", VIN, "--service", "6AM", "--term", "2+1y")
    assert issued["operation"] == f"book 6AM 2+1y from {today}"


def test_validity_is_chosen_per_command(bench, capsys) -> None:
    enroll(bench, VIN)
    issued = as_json(capsys, bench, "provision", "book", VIN, "--service", "6AE", "--valid-days", "7")
    expires, issued_at = datetime.fromisoformat(issued["expires"]), datetime.fromisoformat(issued["issued"])
    assert (expires - issued_at).days == 7


def test_legal_ecall_is_recorded_at_enrolment_and_kept_on_re_enrolment(bench, capsys) -> None:
    assert enroll(bench, VIN, "--legal-ecall") == 0
    assert "legal eCall: yes" in capsys.readouterr().out
    assert enroll(bench, VIN) == 0  # a new key, same equipment
    assert "legal eCall: yes" in capsys.readouterr().out
    assert cli(bench, "provision", "deactivate-sim", VIN) == 2
    assert "eCall-only already, and it cannot be deactivated further" in capsys.readouterr().err
    assert cli(bench, "provision", "book", VIN, "--service", "6AE", "--term", "unlimited") == 0
    codes = [s["code"] for s in as_json(capsys, bench, "provision", "status", VIN)["services"]]
    assert codes == ["6AE", "6AF"]
    assert enroll(bench, VIN, "--no-legal-ecall") == 0
    assert "legal eCall: no" in capsys.readouterr().out


def test_reissue_after_correcting_the_equipment_adds_legal_ecall(bench, capsys) -> None:
    enroll(bench, VIN)
    cli(bench, "provision", "book", VIN, "--service", "6AE", "--term", "unlimited")
    enroll(bench, VIN, "--legal-ecall")  # the vehicle refused the file: it has legal eCall after all
    reissued = as_json(capsys, bench, "provision", "reissue", VIN)
    assert (reissued["version"], reissued["operation"]) == (2, "reissue: requested on the command line")
    codes = [s["code"] for s in as_json(capsys, bench, "provision", "status", VIN)["services"]]
    assert codes == ["6AE", "6AF"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("book", OTHER_VIN, "--service", "6AE", "--term", "unlimited"), f"vehicle {OTHER_VIN} is not enrolled"),
        (("status", OTHER_VIN), f"vehicle {OTHER_VIN} is not enrolled"),
        (("book", VIN, "--service", "9ZZ", "--term", "unlimited"), "unknown service code '9ZZ'"),
        (("book", VIN, "--service", "6AE", "--term", "2+1y"), "offered for BMW with the term(s) unlimited"),
        (("book", VIN, "--service", "612"), "give a term; the catalogue offers for BMW: 2+1y (Laufzeit 3 Jahre), 3m"),
        (("cancel", VIN, "--service", "6AE"), "service 6AE is not booked"),
        (("resume", VIN), "nothing to resume"),
        (("suspend", VIN), "no booked service with a fixed term"),
        (("suspend", VIN, "--service", "6AF"), "legal eCall (6AF) is part of the vehicle's type approval"),
        (("book", "NOT-A-VIN", "--service", "6AE", "--term", "unlimited"), "is not a VIN"),
        (("book", VIN, "--service", "6AE", "--valid-days", "0"), "--valid-days must be at least 1"),
    ],
)
def test_refusals_exit_2_with_the_reason(bench, capsys, args: tuple[str, ...], reason: str) -> None:
    enroll(bench, VIN)
    capsys.readouterr()
    assert cli(bench, "provision", *args) == 2
    assert reason in capsys.readouterr().err


def test_without_a_signing_key_nothing_is_issued(bench, capsys) -> None:
    enroll(bench, VIN)
    text = bench.backend_config.read_text().replace('signing_key = "keys/backend.ed25519.key"\n', "")
    bench.backend_config.write_text(text)
    assert cli(bench, "provision", "suspend", VIN) == 2
    assert "signing_key is not configured" in capsys.readouterr().err


def test_status_lists_results_and_text_output_is_readable(bench, capsys) -> None:
    enroll(bench, VIN)
    cli(bench, "provision", "book", VIN, "--service", "6AE")
    capsys.readouterr()
    assert cli(bench, "provision", "status", VIN) == 0
    out = capsys.readouterr().out
    assert f"vin={VIN}  legal_ecall=False  brand=BMW" in out
    assert "code=6AE  name=Teleservices  term=unlimited" in out
    assert "version=1  state=pending  operation=book 6AE unlimited" in out
    assert "results: none" in out


def test_capabilities_shows_the_last_report_as_sent(bench, capsys) -> None:
    enroll(bench, VIN)
    capsys.readouterr()
    assert cli(bench, "capabilities", VIN) == 2
    assert f"no capability report from vehicle {VIN} yet" in capsys.readouterr().err
    at = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    report = {
        "type": "capabilities",
        "provisioning_version": 2,
        "sim": "active",
        "running": ["6AE"],
        "services": {"6AE": "active"},
        "categories": {"position": {"transmitted": False, "reason": "no consent", "signals": [], "interval_s": None}},
    }
    store = ProvisioningStore(bench.root / "backend.sqlite3")
    try:
        store.set_capabilities(CapabilityReport(vin=VIN, seq=9, created=at, received=at, report=report))
    finally:
        store.close()
    shown = as_json(capsys, bench, "capabilities", VIN)
    assert (shown["seq"], shown["report"]) == (9, report)
    assert cli(bench, "capabilities", VIN) == 0
    out = capsys.readouterr().out
    assert "provisioning_version=2  sim=active  running=['6AE']" in out
    assert "category=position  transmitted=False  reason=no consent" in out


def test_an_unknown_code_and_a_mistyped_date_get_plain_answers(bench, capsys) -> None:
    enroll(bench, VIN)
    capsys.readouterr()
    assert cli(bench, "provision", "book", VIN, "--service", "6NR") == 2
    assert "unknown service code '6NR'; the catalogue has" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(bench, "provision", "book", VIN, "--service", "6AE", "--start", "01.12.2026")
    assert "argument --start: expected a date YYYY-MM-DD, got '01.12.2026'" in capsys.readouterr().err
