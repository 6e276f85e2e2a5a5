"""SIM, telematics, remote measures and the emergency call over every combination, as one table.

Inputs: the vehicle has legal eCall (6AF) or not; the file's SIM field; Teleservices (6AE, unlimited:
free) running; the intelligent emergency call (6AC, unlimited) booked; payment default. Every file also
books a paid service, RTTI 6AM for one year, to show what payment default does to a paid service.

Outputs: whether the vehicle applies such a file at all (a legal-eCall SIM cannot be deactivated, AGB
6.1: the file is refused; its row shows what the car would still derive from it, defence in depth);
the SIM state; 6AM runs / is suspended / is off; telematics (anything collected may be sent); remote
measures allowed; which emergency call the car can make: "112" is the legal eCall to the PSAP,
"centre" the intelligent emergency call to the carmaker's call centre (tcu.ecall routes by
`Entitlements.legal_ecall` and `Entitlements.intelligent_ecall`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tcu.errors import RejectedMessageError
from tcu.services.catalogue import Catalogue, Category
from tcu.services.entitlements import Entitlements, derive
from tcu.services.personal import PersonalData
from tcu.services.provisioning import ProvisioningFile, check_change
from tcu.services.sim import SimPolicy, SimState
from tcu.services.terms import Booking, Term
from tcu.telemetry.data_policy import DataPolicy
from tests.conftest import VIN

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
START = date(2026, 11, 1)

# legal  sim_file     6AE  6AC  default | file     sim                     6AM        telematics  measures  call
TABLE = """
no     active       no   no   no      | applied  fully_deactivated       off        off         no        none
no     active       no   no   yes     | applied  fully_deactivated       suspended  off         no        none
no     active       no   yes  no      | applied  active                  runs       on          yes       centre
no     active       no   yes  yes     | applied  active                  suspended  on          yes       centre
no     active       yes  no   no      | applied  active                  runs       on          yes       none
no     active       yes  no   yes     | applied  active                  suspended  on          yes       none
no     active       yes  yes  no      | applied  active                  runs       on          yes       centre
no     active       yes  yes  yes     | applied  active                  suspended  on          yes       centre
no     deactivated  no   no   no      | applied  fully_deactivated       off        off         no        none
no     deactivated  no   no   yes     | applied  fully_deactivated       suspended  off         no        none
no     deactivated  no   yes  no      | applied  fully_deactivated       off        off         no        none
no     deactivated  no   yes  yes     | applied  fully_deactivated       suspended  off         no        none
no     deactivated  yes  no   no      | applied  fully_deactivated       off        off         no        none
no     deactivated  yes  no   yes     | applied  fully_deactivated       suspended  off         no        none
no     deactivated  yes  yes  no      | applied  fully_deactivated       off        off         no        none
no     deactivated  yes  yes  yes     | applied  fully_deactivated       suspended  off         no        none
yes    active       no   no   no      | applied  telematics_deactivated  off        off         no        112
yes    active       no   no   yes     | applied  telematics_deactivated  suspended  off         no        112
yes    active       no   yes  no      | applied  active                  runs       on          yes       112+centre
yes    active       no   yes  yes     | applied  active                  suspended  on          yes       112+centre
yes    active       yes  no   no      | applied  active                  runs       on          yes       112
yes    active       yes  no   yes     | applied  active                  suspended  on          yes       112
yes    active       yes  yes  no      | applied  active                  runs       on          yes       112+centre
yes    active       yes  yes  yes     | applied  active                  suspended  on          yes       112+centre
yes    deactivated  no   no   no      | refused  telematics_deactivated  off        off         no        112
yes    deactivated  no   no   yes     | refused  telematics_deactivated  suspended  off         no        112
yes    deactivated  no   yes  no      | refused  active                  runs       on          yes       112+centre
yes    deactivated  no   yes  yes     | refused  active                  suspended  on          yes       112+centre
yes    deactivated  yes  no   no      | refused  active                  runs       on          yes       112
yes    deactivated  yes  no   yes     | refused  active                  suspended  on          yes       112
yes    deactivated  yes  yes  no      | refused  active                  runs       on          yes       112+centre
yes    deactivated  yes  yes  yes     | refused  active                  suspended  on          yes       112+centre
"""


def _rows() -> list[tuple[str, ...]]:
    rows = []
    for line in TABLE.strip().splitlines():
        inputs, outputs = line.split("|")
        rows.append((*inputs.split(), *outputs.split()))
    return rows


ROWS = _rows()


def _yes(word: str) -> bool:
    assert word in ("yes", "no")
    return word == "yes"


def _file(legal: bool, sim_file: str, teleservices: bool, intelligent: bool, default: bool) -> ProvisioningFile:
    bookings = [Booking(code="6AM", term=Term.YEAR_1, start=START)]
    for code, on in (("6AE", teleservices), ("6AC", intelligent), ("6AF", legal)):
        if on:
            bookings.append(Booking(code=code, term=Term.UNLIMITED, start=START))
    suspended = frozenset(b.code for b in bookings if b.code != "6AF") if default else frozenset()
    return ProvisioningFile(
        vin=VIN, version=1, issued=NOW, expires=NOW, bookings=tuple(bookings), suspended=suspended, sim=sim_file
    )


def _call(e: Entitlements) -> str:
    calls = (["112"] if e.legal_ecall and e.sim is not SimState.FULLY_DEACTIVATED else []) + (
        ["centre"] if e.intelligent_ecall else []
    )
    return "+".join(calls) or "none"


def _paid(e: Entitlements) -> str:
    return "suspended" if "6AM" in e.suspended else "runs" if "6AM" in e.running else "off"


def test_the_table_covers_every_combination_once() -> None:
    inputs = {row[:5] for row in ROWS}
    assert len(ROWS) == len(inputs) == 2 * 2 * 2 * 2 * 2


@pytest.mark.parametrize(
    ("legal", "sim_file", "tele", "ic", "default", "file", "sim", "paid", "telematics", "measures", "call"),
    ROWS,
    ids=["-".join(row[:5]) for row in ROWS],
)
def test_row(
    legal: str,
    sim_file: str,
    tele: str,
    ic: str,
    default: str,
    file: str,
    sim: str,
    paid: str,
    telematics: str,
    measures: str,
    call: str,
) -> None:
    provisioning = _file(_yes(legal), sim_file, _yes(tele), _yes(ic), _yes(default))
    if file == "refused":
        with pytest.raises(RejectedMessageError, match="SIM of a vehicle with legal eCall cannot be deactivated"):
            check_change(provisioning, legal_ecall_equipped=_yes(legal))
    else:
        check_change(provisioning, legal_ecall_equipped=_yes(legal))
    e = derive(provisioning, legal_ecall_equipped=_yes(legal), now=NOW)
    found = (e.sim.value, _paid(e), "on" if e.telematics else "off", "yes" if e.measures_allowed else "no", _call(e))
    assert found == (sim, paid, telematics, measures, call)
    # The same answers from the parts that act on them.
    assert e.sim_reason, "every SIM state says why"
    assert (e.inactive_reason() is None) is (e.sim is SimState.ACTIVE)
    assert SimPolicy(legal_ecall=_yes(legal)).decide(SimState.ACTIVE, e.sim).allowed, "never a state the SIM refuses"
    assert "6AE" not in e.suspended, "the free Teleservices are never suspended"
    assert "6AF" not in e.suspended | e.running, "legal eCall is equipment, never a service that runs or stops"
    policy = DataPolicy(
        catalogue=Catalogue.load(),
        entitlements=lambda: e,
        personal=PersonalData,
        require_services=False,  # even a bench without provisioning rules obeys the SIM
    )
    verdicts = [policy.verdict(category) for category in Category]
    assert all(v.allowed for v in verdicts) is e.telematics
    if not e.telematics:
        assert all(f"SIM is {e.sim.value}" in v.reason for v in verdicts)


def test_payment_default_suspends_any_fixed_term_but_no_unlimited_service() -> None:
    bookings = (
        Booking(code="6AE", term=Term.UNLIMITED, start=START),
        Booking(code="6CP", term=Term.UNLIMITED, start=START),  # Smartphone Integration: with the car
        Booking(code="6AM", term=Term.YEAR_1, start=START),
        Booking(code="6AN", term=Term.MONTHS_3, start=START),
    )
    file = ProvisioningFile(
        vin=VIN, version=2, issued=NOW, expires=NOW, bookings=bookings, suspended=frozenset(b.code for b in bookings)
    )
    e = derive(file, legal_ecall_equipped=True, now=NOW)
    assert (e.suspended, e.running, e.sim, e.payment_default) == (
        {"6AM", "6AN"},
        {"6AE", "6CP"},
        SimState.ACTIVE,
        True,
    )


def test_an_ended_term_is_not_suspended_it_is_over() -> None:
    file = ProvisioningFile(
        vin=VIN,
        version=2,
        issued=NOW,
        expires=NOW,
        bookings=(
            Booking(code="6AE", term=Term.UNLIMITED, start=START),
            Booking(code="6AN", term=Term.MONTHS_3, start=START),
        ),
        suspended=frozenset({"6AE", "6AN"}),
    )
    later = datetime(2027, 3, 1, tzinfo=UTC)  # 6AN's three months ended
    assert derive(file, legal_ecall_equipped=False, now=later).suspended == frozenset()


def test_a_separately_booked_intelligent_call_is_free_and_never_suspended() -> None:
    e = derive(_file(True, "active", False, True, True), legal_ecall_equipped=True, now=NOW)
    assert (e.intelligent_ecall, "6AC" in e.suspended, e.sim) == (True, False, SimState.ACTIVE)
