"""Retention beyond signal paths: the MSD and the occupants of eCall records, the PSAP's MSDs, invoices.

Privacy part B: personal data goes after 4 weeks — the MSD is position, the recent positions, the
direction of travel, the number of passengers and the VIN. Part A: "Finanztransaktionen werden im
Rahmen der gesetzlichen Bestimmungen nach 10 Jahren gelöscht". Every test reads the real SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import Box, PrivateKey
from nacl.signing import SigningKey

from backend_stub.accounts import AccountStore, Sealer
from backend_stub.call_centre_cases import read_call_centre_cases
from backend_stub.ingest import Ingest
from backend_stub.invoice_store import InvoiceStore
from backend_stub.psap import PsapStub, read_psap_msds
from backend_stub.retention import (
    FIELDS_REMOVED_KEY,
    REMOVED_KEY,
    PersonalValues,
    RetentionJob,
    SideTables,
    financial_cutoff,
)
from backend_stub.store import BackendStore
from tcu.clock import ManualClock
from telematics_wire.catalogue import Catalogue
from telematics_wire.envelope import seal_record
from telematics_wire.msd import encode, msd_from_fixes
from telematics_wire.msd_model import VehicleType
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN

RECORDS = f"vehicles/{VIN}/up/records"
FOUR_WEEKS = timedelta(weeks=4)
HAZARD = "Vehicle.Body.Lights.Hazard.IsSignaling"  # status data: stays
MSD = encode(
    msd_from_fixes(
        [(48.1374, 11.5755), (48.1370, 11.5750), (48.1365, 11.5745)],
        heading_deg=87.0,
        automatic_activation=True,
        test_call=False,
        position_can_be_trusted=True,
        vehicle_type=VehicleType.M1,
        vin=VIN,
        number_of_passengers=2,
    )
)


def _case(**changes: Any) -> dict[str, Any]:
    """A call_centre_data record as tcu/ecall/call_centre_data.py builds it."""
    return {
        "event": "call_centre_data",
        "session": 1,
        "call_type": "automatic",
        "trigger": "crash detected",
        "trigger_signal": "Vehicle.Safety.CrashDetected",
        "at_ms": 1_795_000_000_000,
        "number": "+498912345678",
        "fallback_to_112": True,
        "msd": MSD,
        "msd_version": 2,
        "severity": "crash_detected",
        "occupants": {"belted": 2, "seats_known": 2},
        "vehicle": {"model": "BMW 320d", "colour": "Alpinweiss", "type": "M1", "propulsion": ["diesel"]},
        "signals": {
            "Vehicle.Speed": 87.0,
            "Vehicle.Acceleration.Longitudinal": -48.0,
            "Vehicle.Safety.Airbag.IsDeployed": True,
            HAZARD: True,
        },
        **changes,
    }


@dataclass
class Backend:
    path: Path
    clock: ManualClock
    store: BackendStore
    ingest: Ingest
    box: Box
    job: RetentionJob
    seq: int = 0

    def receive(self, body: dict[str, Any], kind: RecordKind = RecordKind.ECALL) -> None:
        self.seq += 1
        payload = seal_record(self.box, VIN, self.seq, Record(kind=kind, created=self.clock.now(), body=body))
        with self.store.transaction():
            self.ingest.handle(RECORDS, payload)

    def body(self) -> dict[str, Any]:
        reopened = BackendStore(self.path)  # what is on disk, through a connection of its own
        try:
            [record] = reopened.records(VIN)
            return record.body
        finally:
            reopened.close()

    def file_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.path.parent.glob(self.path.name + "*"))


@pytest.fixture
def backend(tmp_path: Path, vehicle_key: PrivateKey, backend_key: PrivateKey) -> Iterator[Backend]:
    clock = ManualClock(wall=datetime(2027, 3, 1, 12, 0, tzinfo=UTC))
    path = tmp_path / "backend.sqlite3"
    store = BackendStore(path)
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    accounts = AccountStore(path, sealer=Sealer(bytes(backend_key)), signing_key=SigningKey.generate())
    side = SideTables(path)
    job = RetentionJob(store, accounts, PersonalValues(Catalogue.load()), clock, side=side)
    yield Backend(
        path=path,
        clock=clock,
        store=store,
        ingest=Ingest(store, backend_key, clock, 64 * 1024),
        box=Box(vehicle_key, backend_key.public_key),
        job=job,
    )
    side.close()
    accounts.close()
    store.close()


def _travel(clock: ManualClock, to: datetime) -> None:
    clock.advance((to - clock.now()).total_seconds())


# -- the MSD and the occupants of eCall records ------------------------------------------------------------


def test_the_msd_and_the_occupants_of_a_call_centre_record_go_after_four_weeks(backend: Backend) -> None:
    """Before: only VSS-path keys were judged; the MSD bytes stayed for ever, and the body claimed
    `personal_removed: ['position']` while still holding the position."""
    backend.receive(_case())
    backend.clock.advance((FOUR_WEEKS - timedelta(milliseconds=1)).total_seconds())
    assert backend.job.run().records_scrubbed == 0
    assert backend.body()["msd"] == MSD
    backend.clock.advance(0.001)
    assert backend.job.run().records_scrubbed == 1
    body = backend.body()
    assert "msd" not in body
    assert "occupants" not in body
    assert body["signals"] == {HAZARD: True}  # speed, acceleration, the airbag: movement data
    assert body[REMOVED_KEY] == ["position", "sensors"]
    assert body[FIELDS_REMOVED_KEY] == ["msd", "occupants"]
    assert body["session"] == 1  # what the call was stays: technical, and needed to read the eCall log
    assert MSD not in backend.file_bytes()  # not in a free page, not in the write-ahead log


def test_a_scrubbed_case_still_reads_without_a_false_problem(backend: Backend) -> None:
    backend.receive(_case())
    backend.clock.advance(FOUR_WEEKS.total_seconds())
    backend.job.run()
    [case] = read_call_centre_cases(backend.store, VIN)
    assert case.msd is None
    assert case.occupants_belted is None
    assert case.problems == ()
    assert (case.severity, case.colour) == ("crash_detected", "Alpinweiss")


def test_a_scrubbed_body_is_scrubbed_once_and_keeps_what_it_says(backend: Backend) -> None:
    backend.receive(_case())
    backend.clock.advance(FOUR_WEEKS.total_seconds())
    backend.job.run()
    first = backend.body()
    backend.clock.advance(FOUR_WEEKS.total_seconds())
    assert backend.job.run().records_scrubbed == 0
    assert backend.body() == first


def test_an_ecall_record_without_personal_fields_is_left_alone(backend: Backend) -> None:
    backend.receive({"event": "transition", "session": 1, "from": "idle", "to": "dialling", "reason": "crash"})
    backend.clock.advance(FOUR_WEEKS.total_seconds())
    assert backend.job.run().records_scrubbed == 0
    assert REMOVED_KEY not in backend.body()


PERSONAL = PersonalValues(Catalogue.load())
PATHS = st.sampled_from(
    [
        "Vehicle.CurrentLocation.Latitude",
        "Vehicle.Speed",
        "Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted",
        "Vehicle.Chassis.SteeringWheel.Angle",
        "Vehicle.No.Such.Signal",
        "Vehicle.TraveledDistance",
        "Vehicle.Service.DistanceToService",
        HAZARD,
    ]
)
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))
KEYS = st.one_of(PATHS, st.sampled_from(["msd", "occupants", "signals", "position", "data", "x"]), st.integers())
BODIES = st.recursive(
    LEAVES | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


def _personal_left(value: Any, personal: PersonalValues) -> list[str]:
    """Every personal thing left anywhere in `value`, judged on its own (not by `scrub`)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            field = key in ("msd", "occupants") and item is not None
            if field or (isinstance(key, str) and key.startswith("Vehicle.") and personal.is_personal(key)):
                found.append(key)
            else:
                found += _personal_left(item, personal)
    elif isinstance(value, list):
        for item in value:
            found += _personal_left(item, personal)
    return found


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(KEYS, BODIES, max_size=5))
def test_nothing_personal_survives_a_scrub_at_any_depth(body: dict[Any, Any]) -> None:
    personal = PERSONAL
    scrubbed = personal.scrub("ecall", body)
    if scrubbed is None:
        assert _personal_left(body, personal) == []
    else:
        assert _personal_left(scrubbed, personal) == []
        assert personal.scrub("ecall", scrubbed) is None  # once is enough


# -- the 112 PSAP's table ------------------------------------------------------------------------------------


async def _call_in(psap: PsapStub) -> None:
    reader, writer = await asyncio.open_connection(*psap.address)
    writer.write(b"CALL automatic -\n")
    async with asyncio.timeout(5):
        assert [(await reader.readline()).strip() for _ in range(2)] == [b"CONNECTED", b"SEND-MSD"]
        writer.write(f"MSD {MSD.hex()}\n".encode("ascii"))
        assert [(await reader.readline()).strip() for _ in range(2)] == [b"LL-ACK", b"AL-ACK positive"]
    writer.write(b"HANGUP\n")
    writer.close()
    await writer.wait_closed()


async def test_the_psap_table_loses_position_and_msd_after_four_weeks(backend: Backend) -> None:
    async with PsapStub(database=backend.path, clock=backend.clock) as psap:
        await _call_in(psap)
    [row] = read_psap_msds(backend.path)
    assert row["latitude_deg"] is not None
    assert row["raw_hex"] == MSD.hex()
    backend.clock.advance((FOUR_WEEKS - timedelta(milliseconds=1)).total_seconds())
    assert backend.job.run().psap_msds_scrubbed == 0
    backend.clock.advance(0.001)
    assert backend.job.run().psap_msds_scrubbed == 1
    [row] = read_psap_msds(backend.path)
    assert (row["latitude_deg"], row["longitude_deg"], row["raw_hex"]) == (None, None, "")
    assert (row["vin"], row["kind"]) == (VIN, "automatic")  # which vehicle called, and how, stays
    assert MSD.hex().encode() not in backend.file_bytes()
    assert backend.job.run().psap_msds_scrubbed == 0


def test_a_store_without_a_psap_or_invoice_table_is_fine(backend: Backend) -> None:
    backend.clock.advance(timedelta(days=365 * 11).total_seconds())
    report = backend.job.run()
    assert (report.psap_msds_scrubbed, report.invoices_deleted) == (0, 0)


# -- invoices: 10 years --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paid", "today", "kept"),
    [
        (date(2027, 5, 3), date(2037, 5, 3), True),  # ten years to the day: the year has not ended
        (date(2027, 5, 3), date(2037, 12, 31), True),
        (date(2027, 5, 3), date(2038, 1, 1), False),  # the end of 2027 + 10 years
        (date(2027, 12, 31), date(2038, 1, 1), False),
        (date(2028, 1, 1), date(2038, 1, 1), True),
    ],
)
def test_a_paid_invoice_goes_ten_years_after_the_end_of_its_year(
    backend: Backend, paid: date, today: date, kept: bool
) -> None:
    invoices = InvoiceStore(backend.path)
    try:
        invoice = invoices.add(vin=VIN, service="6FV", item="Online Entertainment", amount_cents=999, invoiced=paid)
        assert invoices.mark_paid(invoice.number, paid)
        _travel(backend.clock, datetime.combine(today, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12))
        report = backend.job.run()
        assert report.invoices_deleted == (0 if kept else 1)
        assert (invoices.get(invoice.number) is not None) is kept
    finally:
        invoices.close()


def test_an_unpaid_invoice_is_an_open_claim_and_stays(backend: Backend) -> None:
    invoices = InvoiceStore(backend.path)
    try:
        invoice = invoices.add(
            vin=VIN, service="6FV", item="Online Entertainment", amount_cents=999, invoiced=date(2027, 3, 1)
        )
        _travel(backend.clock, datetime(2045, 1, 1, tzinfo=UTC))
        assert backend.job.run().invoices_deleted == 0
        assert invoices.get(invoice.number) is not None
    finally:
        invoices.close()


def test_an_invoice_paid_late_counts_from_the_payment(backend: Backend) -> None:
    invoices = InvoiceStore(backend.path)
    try:
        invoice = invoices.add(
            vin=VIN, service="6FV", item="Online Entertainment", amount_cents=999, invoiced=date(2027, 11, 2)
        )
        assert invoices.mark_paid(invoice.number, date(2028, 2, 1))
        _travel(backend.clock, datetime(2038, 6, 1, tzinfo=UTC))
        assert backend.job.run().invoices_deleted == 0  # the payment of 2028 is a transaction too
        _travel(backend.clock, datetime(2039, 1, 1, tzinfo=UTC))
        assert backend.job.run().invoices_deleted == 1
    finally:
        invoices.close()


def test_the_financial_cutoff() -> None:
    assert financial_cutoff(date(2038, 1, 1)) == date(2028, 1, 1)
    assert financial_cutoff(date(2037, 12, 31)) == date(2027, 1, 1)
