"""SIM, telematics and the emergency call over every combination, as tables.

TABLE. Inputs: the vehicle has legal eCall (6AF) or not; the file's SIM field; Teleservices (6AE,
unlimited: free) booked; the intelligent emergency call (6AC, unlimited: free) booked; the codes the
file names in payment default ("-": none; "all": every booked code but 6AF, which is never). Every file
also books a paid service, RTTI 6AM on its 2+1 term, to show what payment default does to one.

Outputs: whether the vehicle applies such a file at all (a legal-eCall SIM cannot be deactivated, AGB
6.1: the file is refused; its row shows what the car would still derive from it, defence in depth);
the SIM state; 6AM runs / is suspended / is off; telematics (anything collected may be sent, remote
measures run); which emergency call the car can make: "112" is the legal eCall to the PSAP, "centre"
the intelligent emergency call to the carmaker's call centre (tcu.ecall routes by
`Entitlements.legal_ecall` and `Entitlements.intelligent_ecall`).

PACKAGES. The base services come inside packages too: Teleservices and the Intelligenter Notruf are
services of 612, 6U1/6U2/6U3 (BMW), 6FP and 6UM (MINI), each on its own term. Inputs: brand, legal
eCall, the booked codes with their terms (comma-separated), the code in payment default, the day (the booking starts on
2026-11-01, the vehicle's first registration; "now" is 2026-11-23). Outputs: SIM, whether the service
Teleservices (tele) and the Intelligenter Notruf (notruf) run, telematics (tm), the call.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tcu.services.personal import PersonalData
from tcu.services.sim import SimPolicy
from tcu.telemetry.data_policy import DataPolicy
from telematics_wire.catalogue import Brand, Catalogue, Category, VehicleFit
from telematics_wire.entitlements import Entitlements, derive
from telematics_wire.errors import RejectedMessageError
from telematics_wire.provisioning import ProvisioningFile, check_change, check_fit
from telematics_wire.sim_state import SimState
from telematics_wire.terms import Booking, Term
from tests.conftest import VIN

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
START = date(2026, 11, 1)  # booking start and first registration
CATALOGUE = Catalogue.load()

# legal  sim_file     6AE  6AC  default | file     sim                     6AM        telematics  call
TABLE = """
no     active       no   no   -       | applied  fully_deactivated       off        off         none
no     active       no   no   all     | applied  fully_deactivated       suspended  off         none
no     active       no   yes  -       | applied  active                  runs       on          centre
no     active       no   yes  all     | applied  active                  suspended  on          centre
no     active       yes  no   -       | applied  active                  runs       on          none
no     active       yes  no   all     | applied  active                  suspended  on          none
no     active       yes  yes  -       | applied  active                  runs       on          centre
no     active       yes  yes  all     | applied  active                  suspended  on          centre
no     deactivated  no   no   -       | applied  fully_deactivated       off        off         none
no     deactivated  no   no   all     | applied  fully_deactivated       suspended  off         none
no     deactivated  no   yes  -       | applied  fully_deactivated       off        off         none
no     deactivated  no   yes  all     | applied  fully_deactivated       suspended  off         none
no     deactivated  yes  no   -       | applied  fully_deactivated       off        off         none
no     deactivated  yes  no   all     | applied  fully_deactivated       suspended  off         none
no     deactivated  yes  yes  -       | applied  fully_deactivated       off        off         none
no     deactivated  yes  yes  all     | applied  fully_deactivated       suspended  off         none
yes    active       no   no   -       | applied  telematics_deactivated  off        off         112
yes    active       no   no   all     | applied  telematics_deactivated  suspended  off         112
yes    active       no   yes  -       | applied  active                  runs       on          112+centre
yes    active       no   yes  all     | applied  active                  suspended  on          112+centre
yes    active       yes  no   -       | applied  active                  runs       on          112
yes    active       yes  no   all     | applied  active                  suspended  on          112
yes    active       yes  yes  -       | applied  active                  runs       on          112+centre
yes    active       yes  yes  all     | applied  active                  suspended  on          112+centre
yes    deactivated  no   no   -       | refused  telematics_deactivated  off        off         112
yes    deactivated  no   no   all     | refused  telematics_deactivated  suspended  off         112
yes    deactivated  no   yes  -       | refused  active                  runs       on          112+centre
yes    deactivated  no   yes  all     | refused  active                  suspended  on          112+centre
yes    deactivated  yes  no   -       | refused  active                  runs       on          112
yes    deactivated  yes  no   all     | refused  active                  suspended  on          112
yes    deactivated  yes  yes  -       | refused  active                  runs       on          112+centre
yes    deactivated  yes  yes  all     | refused  active                  suspended  on          112+centre
"""


def _rows(table: str) -> list[tuple[str, ...]]:
    rows = []
    for line in table.strip().splitlines():
        inputs, outputs = line.split("|")
        rows.append((*inputs.split(), *outputs.split()))
    return rows


ROWS = _rows(TABLE)


def _yes(word: str) -> bool:
    assert word in ("yes", "no")
    return word == "yes"


def _booking(code: str, term: Term) -> Booking:
    registered = {"first_registration": START} if term.from_first_registration else {}
    return Booking(code=code, term=term, start=START, **registered)  # type: ignore[arg-type]


def _file(legal: bool, sim_file: str, teleservices: bool, intelligent: bool, default: str) -> ProvisioningFile:
    bookings = [_booking("6AM", Term.YEARS_2_PLUS_1)]
    for code, on in (("6AE", teleservices), ("6AC", intelligent), ("6AF", legal)):
        if on:
            bookings.append(_booking(code, Term.UNLIMITED))
    suspended = frozenset(b.code for b in bookings if b.code != "6AF") if default == "all" else frozenset()
    return ProvisioningFile(
        vin=VIN,
        version=1,
        issued=NOW,
        expires=NOW,
        bookings=tuple(bookings),
        suspended=suspended,
        sim=sim_file,
        first_registration=START,
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


def _same_answers_downstream(e: Entitlements, legal: bool) -> None:
    """The parts that act on the entitlements agree with them."""
    assert e.sim_reason, "every SIM state says why"
    assert (e.inactive_reason() is None) is (e.sim is SimState.ACTIVE)
    assert SimPolicy(legal_ecall=legal).decide(SimState.ACTIVE, e.sim).allowed, "never a state the SIM refuses"
    assert "6AF" not in e.suspended | e.running, "legal eCall is equipment, never a service that runs or stops"
    policy = DataPolicy(
        catalogue=CATALOGUE,
        entitlements=lambda: e,
        personal=PersonalData,
        require_services=False,  # even a bench without provisioning rules obeys the SIM
    )
    verdicts = [policy.verdict(category) for category in Category]
    assert all(v.allowed for v in verdicts) is e.telematics
    if not e.telematics:
        assert all(f"SIM is {e.sim.value}" in v.reason for v in verdicts)


@pytest.mark.parametrize(
    ("legal", "sim_file", "tele", "ic", "default", "file", "sim", "paid", "telematics", "call"),
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
    call: str,
) -> None:
    provisioning = _file(_yes(legal), sim_file, _yes(tele), _yes(ic), default)
    if file == "refused":
        with pytest.raises(RejectedMessageError, match="SIM of a vehicle with legal eCall cannot be deactivated"):
            check_change(provisioning, legal_ecall_equipped=_yes(legal))
    else:
        check_change(provisioning, legal_ecall_equipped=_yes(legal))
    e = derive(provisioning, legal_ecall_equipped=_yes(legal), now=NOW)
    found = (e.sim.value, _paid(e), "on" if e.telematics else "off", _call(e))
    assert found == (sim, paid, telematics, call)
    assert not e.suspended & {"6AE", "6AC"}, "the free, unlimited 6AE and 6AC are never suspended"
    _same_answers_downstream(e, _yes(legal))


# brand legal booked             default day       | sim                    tele notruf    tm  call
PACKAGES = """
BMW   no    6U2:2+1y               -       now        | active                 runs runs      on  centre
BMW   no    6U2:2+1y               6U2     now        | active                 runs runs      on  centre
BMW   yes   6U2:2+1y               6U2     now        | active                 runs runs      on  112+centre
BMW   yes   6U3:2+1y               -       2031-01-01 | active                 runs runs      on  112+centre
BMW   no    612:2+1y               -       now        | active                 runs runs      on  centre
BMW   no    612:2+1y               612     now        | active                 runs suspended on  none
BMW   yes   612:2+1y               612     now        | active                 runs suspended on  112
BMW   no    612:2+1y,6AC:unlimited 612     now        | active                 runs runs      on  centre
BMW   yes   612:3m                 -       2027-03-01 | active                 runs off       on  112
BMW   no    612:2+1y               -       2029-11-23 | active                 runs off       on  none
BMW   no    6AP:2+1y               -       now        | fully_deactivated      off  off       off none
BMW   yes   6AP:2+1y               6AP     now        | telematics_deactivated off  off       off 112
MINI  no    6FP:unlimited          -       now        | active                 runs runs      on  centre
MINI  no    6FP:unlimited          6FP     now        | active                 runs runs      on  centre
MINI  yes   6UM:2+1y               6UM     now        | active                 runs runs      on  112+centre
MINI  no    6AG:2+1y               -       now        | fully_deactivated      off  off       off none
"""
PACKAGE_ROWS = _rows(PACKAGES)


def _packages(brand: Brand, legal: bool, booked: str, default: str) -> ProvisioningFile:
    bookings = [_booking(code, Term(term)) for code, term in (item.split(":") for item in booked.split(","))]
    if legal:
        bookings.append(_booking("6AF", Term.UNLIMITED))
    fit = VehicleFit(brand=brand, first_registration=START)
    file = ProvisioningFile(
        vin=VIN,
        version=1,
        issued=NOW,
        expires=NOW,
        bookings=tuple(bookings),
        suspended=frozenset() if default == "-" else frozenset({default}),
        first_registration=START,
    )
    check_change(file, legal_ecall_equipped=legal)
    check_fit(file, CATALOGUE, fit)  # every row is a booking the terms offer for its brand
    return file


def _service(e: Entitlements, name: str) -> str:
    if name in e.base_services:
        return "runs"
    return "suspended" if any(name in names for names in e.services_suspended.values()) else "off"


@pytest.mark.parametrize(
    ("brand", "legal", "booked", "default", "day", "sim", "teleservices", "notruf", "telematics", "call"),
    PACKAGE_ROWS,
    ids=["-".join(row[:5]) for row in PACKAGE_ROWS],
)
def test_package_row(
    brand: str,
    legal: str,
    booked: str,
    default: str,
    day: str,
    sim: str,
    teleservices: str,
    notruf: str,
    telematics: str,
    call: str,
) -> None:
    file = _packages(Brand(brand), _yes(legal), booked, default)
    now = NOW if day == "now" else datetime.fromisoformat(day).replace(tzinfo=UTC)
    catalogue = CATALOGUE.for_vehicle(VehicleFit(brand=Brand(brand), first_registration=START))
    e = derive(file, legal_ecall_equipped=_yes(legal), now=now, catalogue=catalogue)
    found = (
        e.sim.value,
        _service(e, "Teleservices"),
        _service(e, "Intelligenter Notruf"),
        "on" if e.telematics else "off",
        _call(e),
    )
    assert found == (sim, teleservices, notruf, telematics, call)
    _same_answers_downstream(e, _yes(legal))


def test_each_service_of_a_package_runs_on_its_own_term() -> None:
    """6AP booked 2+1y: Lademanagement and Remote 3D View two years from first registration, renewed once;
    Remote Services unlimited, so it outlives them."""
    package = _booking("6AP", Term.YEARS_2_PLUS_1)
    file = ProvisioningFile(
        vin=VIN,
        version=1,
        issued=NOW,
        expires=NOW,
        bookings=(package, _booking("6AE", Term.UNLIMITED)),
        first_registration=START,
    )
    during = derive(file, legal_ecall_equipped=True, now=NOW)
    after = derive(file, legal_ecall_equipped=True, now=datetime(2029, 11, 2, tzinfo=UTC))  # 2+1 years over
    assert during.services_running["6AP"] == {"Lademanagement", "Remote Services", "Remote 3D View"}
    assert after.services_running["6AP"] == {"Remote Services"}
    assert "6AP" in after.running, "a code runs while any of its services runs"
    assert after.statuses["6AP"] == "expired", "the booked term itself is over"


def test_a_notice_on_a_package_reaches_each_service_as_its_term_allows() -> None:
    """Notice in time against the 2+1 renewal (AGB 3.2, 6.2): the 2+1 services run out after two years;
    the unlimited Remote Services stop six weeks after the notice (AGB 6.2)."""
    noticed = Booking(
        code="6AP", term=Term.YEARS_2_PLUS_1, start=START, first_registration=START, cancelled_on=date(2027, 1, 5)
    )
    file = ProvisioningFile(
        vin=VIN,
        version=1,
        issued=NOW,
        expires=NOW,
        bookings=(noticed, _booking("6AE", Term.UNLIMITED)),
        first_registration=START,
    )
    spring = derive(file, legal_ecall_equipped=True, now=datetime(2027, 2, 17, tzinfo=UTC))  # notice + 6 weeks
    assert spring.services_running["6AP"] == {"Lademanagement", "Remote 3D View"}
    over = derive(file, legal_ecall_equipped=True, now=datetime(2028, 11, 1, tzinfo=UTC))  # no renewal
    assert "6AP" not in over.services_running


def test_payment_default_suspends_the_fixed_term_services_of_the_codes_named_and_nothing_else() -> None:
    bookings = (
        _booking("6AE", Term.UNLIMITED),
        _booking("6CP", Term.UNLIMITED),  # Smartphone Integration: with the car
        _booking("6AM", Term.YEARS_2_PLUS_1),
        _booking("6AN", Term.YEARS_2_PLUS_1),  # Concierge: paid, but its invoice is paid
        _booking("6AP", Term.YEARS_2_PLUS_1),
    )
    file = ProvisioningFile(
        vin=VIN,
        version=2,
        issued=NOW,
        expires=NOW,
        bookings=bookings,
        suspended=frozenset({"6AE", "6AM", "6AP"}),
        first_registration=START,
    )
    e = derive(file, legal_ecall_equipped=True, now=NOW)
    assert (e.suspended, e.running, e.sim, e.payment_default) == (
        {"6AM", "6AP"},
        {"6AE", "6CP", "6AN", "6AP"},  # 6AP: its unlimited Remote Services
        SimState.ACTIVE,
        True,
    )
    assert e.services_suspended["6AP"] == {"Lademanagement", "Remote 3D View"}
    assert e.services_running["6AP"] == {"Remote Services"}


def test_an_ended_term_is_not_suspended_it_is_over() -> None:
    file = ProvisioningFile(
        vin=VIN,
        version=2,
        issued=NOW,
        expires=NOW,
        bookings=(_booking("6AE", Term.UNLIMITED), _booking("612", Term.MONTHS_3)),
        suspended=frozenset({"612"}),
        first_registration=START,
    )
    later = datetime(2027, 3, 1, tzinfo=UTC)  # 612's three months ended; its 2+1y services still run
    e = derive(file, legal_ecall_equipped=False, now=later)
    assert "Intelligenter Notruf" not in e.services_suspended.get("612", frozenset())
    assert e.services_suspended["612"] == {
        "Online-Streckenführung",  # "Laufzeit 3 Jahre" only: two years from first registration
        "Real Time Traffic Information (RTTI)",
        "Send to Car",
        "V-Info",
    }


def test_the_reason_names_the_codes_that_keep_the_sim_active() -> None:
    e = derive(_packages(Brand.BMW, True, "612:2+1y", "612"), legal_ecall_equipped=True, now=NOW)
    assert e.sim_reason == "base service(s) Teleservices running (from 612)"
    off = derive(_packages(Brand.BMW, True, "6AP:2+1y", "-"), legal_ecall_equipped=True, now=NOW)
    assert off.inactive_reason() == (
        "SIM is telematics_deactivated: no base service (Teleservices, Intelligenter Notruf) running; "
        "eCall-only: the legal 112 eCall stays available"
    )
