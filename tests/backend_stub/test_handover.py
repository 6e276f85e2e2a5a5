"""The new owner's list of services (AGB 7.3) tells the story the car derives from the same file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from backend_stub.errors import ProvisioningError
from backend_stub.handover import ServiceState, handover_list
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import ManualClock
from telematics_wire.catalogue import Catalogue
from telematics_wire.entitlements import derive
from tests.conftest import VIN

CATALOGUE = Catalogue.load()
START = datetime(2026, 11, 2, 9, tzinfo=UTC)
STORE = "STORE-CONNECTED"  # a store package, "Laufzeit 1 Jahr": paid


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProvisioningStore]:
    store = ProvisioningStore(tmp_path / "backend.sqlite3", CATALOGUE)
    store.record_build(VIN, first_registration=date(2026, 10, 1), today=START.date())
    yield store
    store.close()


def _issuer(store: ProvisioningStore, clock: ManualClock) -> ProvisioningIssuer:
    return ProvisioningIssuer(store, signing_key=SigningKey(bytes(range(32))), clock=clock, enrolled=lambda _v: True)


def _agrees_with_the_car(store: ProvisioningStore, now: datetime) -> list[dict[str, object]]:
    head = store.head(VIN)
    car = derive(
        None if head is None else head.contents, legal_ecall_equipped=store.legal_ecall(VIN), now=now, catalogue=None
    )
    rows = handover_list(store, VIN, now)
    for row in rows:
        code = str(row["code"])
        if code == "6AF":
            assert (row["state"], car.legal_ecall) == (ServiceState.ACTIVE, True), (
                "legal eCall is listed only for a car with it"
            )
            continue
        assert row["state"] == (ServiceState.ACTIVE if code in car.running else ServiceState.DEACTIVATED), row
        assert row["running_services"] == sorted(car.services_running.get(code, ())), row
        assert row["suspended_services"] == sorted(car.services_suspended.get(code, ())), row
        assert row["sim"] == car.sim.value
        suspended_here = head is not None and code in head.contents.suspended
        assert ("payment default" in str(row.get("note", ""))) == bool(row["suspended_services"]), row
        assert not row["suspended_services"] or suspended_here, "only a suspended code says it is suspended"
    return rows


def test_the_reviewer_s_case_no_active_service_on_a_deactivated_sim_and_no_suspension_on_a_free_one(
    store: ProvisioningStore,
) -> None:
    """6AE and 6AC cancelled, the paid package suspended: the car's SIM is off, so nothing is active."""
    clock = ManualClock(wall=START)
    issuer = _issuer(store, clock)
    for code, term in (("6AE", "unlimited"), ("6AC", "unlimited"), (STORE, "1y")):
        issuer.book(VIN, code, term, date(2026, 11, 1))
    issuer.cancel(VIN, "6AE", date(2026, 11, 2))
    issuer.cancel(VIN, "6AC", date(2026, 11, 2))
    issuer.suspend(VIN)
    rows = {row["code"]: row for row in _agrees_with_the_car(store, datetime(2027, 1, 1, tzinfo=UTC))}
    assert {code: row["state"] for code, row in rows.items()} == {
        "6AE": ServiceState.DEACTIVATED,
        "6AC": ServiceState.DEACTIVATED,
        STORE: ServiceState.DEACTIVATED,
    }
    assert {row["sim"] for row in rows.values()} == {"fully_deactivated"}
    assert "payment default" not in str(rows["6AE"].get("note", ""))
    assert rows[STORE]["suspended_services"]
    assert "suspended until paid" in rows[STORE]["note"]
    assert "SIM fully_deactivated" in rows[STORE]["note"]


def test_a_suspended_paid_package_keeps_its_free_services_running_for_the_buyer(store: ProvisioningStore) -> None:
    """612 BMW Assist in payment default: its fixed-term services (the intelligent call among them) stop,
    Teleservices and Meine Info of it keep running; the list says which."""
    clock = ManualClock(wall=START)
    issuer = _issuer(store, clock)
    issuer.book(VIN, "612", "2+1y")
    issuer.suspend(VIN, ["612"])
    [row] = _agrees_with_the_car(store, START)
    assert row["state"] == ServiceState.ACTIVE
    assert "Teleservices" in row["running_services"]
    assert "Intelligenter Notruf" in row["suspended_services"]


@settings(max_examples=60, deadline=None)
@given(
    legal=st.booleans(),
    operations=st.lists(
        st.tuples(
            st.sampled_from(["book", "cancel", "suspend", "resume", "deactivate_sim"]),
            st.sampled_from(["6AE", "6AC", "6AM", "612", STORE]),
            st.integers(min_value=0, max_value=200),
        ),
        max_size=8,
    ),
    later=st.integers(min_value=0, max_value=1500),
)
def test_the_handover_list_says_what_the_car_derives(
    legal: bool, operations: list[tuple[str, str, int]], later: int
) -> None:
    store = ProvisioningStore(Path(":memory:"), CATALOGUE)
    store.set_legal_ecall(VIN, legal)
    store.record_build(VIN, first_registration=date(2026, 10, 1), today=START.date())
    clock = ManualClock(wall=START)
    issuer = _issuer(store, clock)
    terms = {"6AE": "unlimited", "6AC": "unlimited", "6AM": "2+1y", "612": "3m", STORE: "1y"}
    try:
        for name, code, days in operations:
            day = START.date() + timedelta(days=days)
            try:
                {
                    "book": lambda: issuer.book(VIN, code, terms[code], day),  # noqa: B023 - called at once
                    "cancel": lambda: issuer.cancel(VIN, code, day),  # noqa: B023
                    "suspend": lambda: issuer.suspend(VIN, [code]),  # noqa: B023
                    "resume": lambda: issuer.resume(VIN, [code]),  # noqa: B023
                    "deactivate_sim": lambda: issuer.deactivate_sim(VIN),
                }[name]()
            except ProvisioningError:
                continue
        _agrees_with_the_car(store, START + timedelta(days=later))
    finally:
        store.close()
