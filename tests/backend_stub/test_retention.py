"""Retention with a clock that travels: personal data 4 weeks after receipt, contract data a year after
the contract ended, technical data kept — always read back from the real store, SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from nacl.public import Box, PrivateKey
from nacl.signing import SigningKey

from backend_stub.accounts import AccountStore, Sealer
from backend_stub.cardata.consents import CardataStore
from backend_stub.ingest import Ingest
from backend_stub.retention import REMOVED_KEY, PersonalValues, RetentionJob, one_year_after
from backend_stub.store import BackendStore
from tcu.clock import ManualClock
from telematics_wire.catalogue import Catalogue
from telematics_wire.envelope import seal_record
from telematics_wire.records import Record, RecordKind, to_millis
from tests.backend_stub.conftest import OpenStore
from tests.conftest import VIN

RECORDS = f"vehicles/{VIN}/up/records"
ACCOUNT = "anna@example.org"
# Privacy part B's personal categories and part D's technical ones, one signal each.
POSITION = ("Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocation.Longitude", "Vehicle.Speed")
TECHNICAL = ("Vehicle.LowVoltageBattery.CurrentVoltage", "Vehicle.Powertrain.CombustionEngine.ECT")
PROFILE = "Vehicle.Driver.Identifier.Subject"
MILEAGE_KEY = "vehicle.vehicle.travelledDistance"  # a CarData key


@dataclass
class Backend:
    path: Path
    open_store: OpenStore
    clock: ManualClock
    store: BackendStore
    accounts: AccountStore
    ingest: Ingest
    box: Box
    job: RetentionJob
    seq: int = 0

    def receive(self, body: dict[str, object], kind: RecordKind = RecordKind.TELEMETRY) -> int:
        self.seq += 1
        payload = seal_record(self.box, VIN, self.seq, Record(kind=kind, created=self.clock.now(), body=body))
        with self.store.transaction():
            self.ingest.handle(RECORDS, payload)
        return self.seq

    def reopened(self) -> BackendStore:
        """What is stored, through a connection of its own."""
        return self.open_store()


@pytest.fixture
def backend(
    tmp_path: Path, open_store: OpenStore, vehicle_key: PrivateKey, backend_key: PrivateKey
) -> Iterator[Backend]:
    clock = ManualClock(wall=datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    path = tmp_path / "backend.sqlite3"  # the accounts' file; the records' too unless PostgreSQL
    store = open_store()
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    accounts = AccountStore(path, sealer=Sealer(bytes(backend_key)), signing_key=SigningKey.generate())
    job = RetentionJob(store, accounts, PersonalValues(Catalogue.load()), clock)
    yield Backend(
        path=path,
        open_store=open_store,
        clock=clock,
        store=store,
        accounts=accounts,
        ingest=Ingest(store, backend_key, clock, 64 * 1024),
        box=Box(vehicle_key, backend_key.public_key),
        job=job,
    )
    accounts.close()
    store.close()


def _signals(clock: ManualClock, paths: tuple[str, ...]) -> dict[str, object]:
    return {"signals": {path: {"v": 1.5, "t": to_millis(clock.now())} for path in paths}}


def _on_disk(backend: Backend) -> tuple[set[str], set[str]]:
    """(paths in stored record bodies, paths with a last value), read from the file."""
    reopened = backend.reopened()
    try:
        in_records = {path for r in reopened.records(VIN) for path in r.body.get("signals", {})}
        return in_records, {v.path for v in reopened.last_values(VIN)}
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("age", "personal_kept"),
    [
        (timedelta(days=27), True),
        (timedelta(days=28) - timedelta(milliseconds=1), True),
        (timedelta(days=28), False),  # "nach 4 Wochen": due at exactly four weeks
        (timedelta(days=29), False),
    ],
    ids=["27 days", "28 days less 1 ms", "28 days exactly", "29 days"],
)
def test_personal_data_goes_four_weeks_after_receipt_technical_data_stays(
    backend: Backend, age: timedelta, personal_kept: bool
) -> None:
    backend.receive(_signals(backend.clock, (*POSITION, *TECHNICAL, PROFILE)))
    backend.clock.advance(age.total_seconds())
    report = backend.job.run()
    in_records, last = _on_disk(backend)
    personal = {*POSITION, PROFILE}
    assert set(TECHNICAL) <= in_records
    assert set(TECHNICAL) <= last
    if personal_kept:
        assert personal <= in_records
        assert personal <= last
        assert report.records_scrubbed == 0
    else:
        assert not personal & in_records
        assert not personal & last
        assert (report.records_scrubbed, report.last_values_deleted) == (1, len(personal))
        reopened = backend.reopened()
        [record] = reopened.records(VIN)
        reopened.close()
        catalogue = Catalogue.load()
        assert record.body[REMOVED_KEY] == sorted({catalogue.category_of(p).value for p in personal})
        assert record.seq == 1  # the record stays: its sequence number still deduplicates a resend


def test_each_record_is_due_four_weeks_after_its_own_receipt(backend: Backend) -> None:
    backend.receive(_signals(backend.clock, POSITION))
    backend.clock.advance(timedelta(days=1).total_seconds())
    backend.receive(_signals(backend.clock, POSITION))
    backend.clock.advance(timedelta(days=27).total_seconds())  # 28 days after the first, 27 after the second
    assert backend.job.run().records_scrubbed == 1
    reopened = backend.reopened()
    bodies = [r.body for r in reopened.records(VIN)]
    last = {v.path for v in reopened.last_values(VIN)}
    reopened.close()
    assert [set(b["signals"]) for b in bodies] == [set(), set(POSITION)]
    assert last == set(POSITION)  # the last values came with the second record
    backend.clock.advance(timedelta(days=1).total_seconds())
    backend.job.run()
    assert _on_disk(backend) == (set(), set())


def test_a_vehicle_clock_far_in_the_future_does_not_keep_personal_data(backend: Backend) -> None:
    """The backend's receipt time decides, not the vehicle's stamp (year 9999 here)."""
    future = to_millis(datetime(9999, 1, 1, tzinfo=UTC))
    backend.receive({"signals": {"Vehicle.CurrentLocation.Latitude": {"v": 48.1, "t": future}}})
    backend.clock.advance(timedelta(days=28).total_seconds())
    backend.job.run()
    assert _on_disk(backend) == (set(), set())


def test_position_in_an_event_body_is_personal_too(backend: Backend) -> None:
    stamp = to_millis(backend.clock.now())
    backend.receive(
        {
            "type": "parked_position",
            "position": {"Vehicle.CurrentLocation.Latitude": {"v": 48.1, "t": stamp}},
            "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": True,
        },
        kind=RecordKind.EVENT,
    )
    backend.clock.advance(timedelta(days=28).total_seconds())
    backend.job.run()
    reopened = backend.reopened()
    [record] = reopened.records(VIN)
    reopened.close()
    assert record.body["position"] == {}
    assert record.body["type"] == "parked_position"
    assert record.body["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"] is True  # door state: status data


def test_a_record_body_is_scrubbed_once(backend: Backend) -> None:
    backend.receive(_signals(backend.clock, (*POSITION, *TECHNICAL)))
    backend.clock.advance(timedelta(days=30).total_seconds())
    assert backend.job.run().records_scrubbed == 1
    assert backend.job.run().records_scrubbed == 0
    assert backend.store.scrubbed(VIN) == 1


def _paired_and_ended(backend: Backend, ended: datetime) -> None:
    """A contract (account link) that ends at `ended`."""
    backend.accounts.create(ACCOUNT, name="Anna Muster", email="anna@example.org", now=backend.clock.now())
    backend.accounts.request_code(VIN, ACCOUNT, backend.clock.now())
    [(_, _, signed)] = backend.accounts.pending_messages(backend.clock.now())
    code = cbor2.loads(cbor2.loads(signed).value[2])["code"]
    backend.accounts.pair(VIN, ACCOUNT, code, backend.clock.now())
    backend.accounts.grant_consent(VIN, "Insurer via CarData", backend.clock.now())
    backend.clock.wall = ended
    backend.accounts.unlink(VIN, ended, reason="ended in the portal")


def _contract_data_on_disk(backend: Backend) -> tuple[int, int, bool]:
    """(links, consents, account exists), read through a connection of its own."""
    reopened = AccountStore(backend.path, sealer=Sealer(b"\0" * 32))
    try:
        links, consents = reopened.links(VIN), reopened.consents(VIN)
        row = reopened._db.execute("SELECT count(*) FROM accounts WHERE account=?", (ACCOUNT,)).fetchone()
        return len(links), len(consents), bool(row[0])
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("ended", "days", "kept"),
    [
        (datetime(2026, 3, 10, 9, 0, tzinfo=UTC), 364, True),
        (datetime(2026, 3, 10, 9, 0, tzinfo=UTC), 365, False),  # 2027 has no 29 February: a year is 365 days
        (datetime(2026, 3, 10, 9, 0, tzinfo=UTC), 366, False),
        (datetime(2027, 6, 1, 9, 0, tzinfo=UTC), 365, True),  # across 29 February 2028: a year is 366 days
        (datetime(2027, 6, 1, 9, 0, tzinfo=UTC), 366, False),
    ],
    ids=["364 days", "365 days", "366 days", "leap: 365 days", "leap: 366 days"],
)
@pytest.mark.parametrize("store_kind", ["sqlite"])  # accounts live in the SQLite file with either store
def test_contract_data_goes_one_year_after_the_contract_ended(
    backend: Backend, ended: datetime, days: int, kept: bool
) -> None:
    _paired_and_ended(backend, ended)
    assert _contract_data_on_disk(backend) == (1, 1, True)
    backend.clock.wall = ended + timedelta(days=days)
    report = backend.job.run()
    assert report.links_deleted == (0 if kept else 1)
    assert _contract_data_on_disk(backend) == ((1, 1, True) if kept else (0, 0, False))


@pytest.mark.parametrize("store_kind", ["sqlite"])  # accounts live in the SQLite file with either store
def test_an_active_contract_is_never_deleted(backend: Backend) -> None:
    _paired_and_ended(backend, datetime(2026, 3, 10, tzinfo=UTC))
    backend.accounts.request_code(VIN, ACCOUNT, backend.clock.now())  # the same customer pairs again
    [*_, (_, _, signed)] = backend.accounts.pending_messages(backend.clock.now())
    backend.accounts.pair(VIN, ACCOUNT, cbor2.loads(cbor2.loads(signed).value[2])["code"], backend.clock.now())
    backend.clock.wall += timedelta(days=800)
    backend.job.run()
    reopened = AccountStore(backend.path, sealer=Sealer(b"\0" * 32))
    try:
        [link] = reopened.links(VIN)
        assert link.ended is None
        assert reopened._db.execute("SELECT count(*) FROM accounts").fetchone()[0] == 1
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("end", "due"),
    [
        (datetime(2028, 2, 29, 8, 0, tzinfo=UTC), datetime(2029, 2, 28, 8, 0, tzinfo=UTC)),
        (datetime(2027, 3, 1, 0, 0, tzinfo=UTC), datetime(2028, 3, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_one_year_is_a_calendar_year(end: datetime, due: datetime) -> None:
    assert one_year_after(end) == due


@pytest.mark.parametrize("store_kind", ["sqlite"])  # accounts live in the SQLite file with either store
def test_contact_data_is_stored_encrypted_only(backend: Backend, tmp_path: Path) -> None:
    backend.accounts.create(ACCOUNT, name="Anna Muster", email="anna.private@example.org", now=backend.clock.now())
    assert backend.accounts.contact(ACCOUNT) == {"name": "Anna Muster", "email": "anna.private@example.org"}
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("backend.sqlite3*"))
    assert b"anna.private" not in on_disk
    assert b"Muster" not in on_disk


@pytest.mark.parametrize("store_kind", ["sqlite"])  # PostgreSQL has no secure_delete (README)
def test_scrubbed_personal_values_are_gone_from_the_file_not_only_from_queries(
    backend: Backend, tmp_path: Path
) -> None:
    """Free pages and the write-ahead log would otherwise keep the old body for anyone reading the file."""
    subject = "anna-driver-subject-7f3a"
    backend.receive({"signals": {PROFILE: {"v": subject, "t": to_millis(backend.clock.now())}}})
    for _ in range(3):  # later records, as a running backend has them
        backend.receive(_signals(backend.clock, TECHNICAL))
    assert any(subject.encode() in p.read_bytes() for p in tmp_path.glob("backend.sqlite3*"))
    backend.clock.advance(timedelta(days=28).total_seconds())
    backend.job.run()
    assert all(subject.encode() not in p.read_bytes() for p in tmp_path.glob("backend.sqlite3*"))


@pytest.mark.parametrize("store_kind", ["sqlite"])  # CarData lives in the SQLite file with either store
def test_cardata_consents_go_with_their_contract_and_the_rest_with_the_account(backend: Backend) -> None:
    ended = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    cardata = CardataStore(backend.path)
    try:
        backend.accounts.create(ACCOUNT, name="Anna Muster", email="anna@example.org", now=backend.clock.now())
        backend.accounts.request_code(VIN, ACCOUNT, backend.clock.now())
        [(_, _, signed)] = backend.accounts.pending_messages(backend.clock.now())
        backend.accounts.pair(VIN, ACCOUNT, cbor2.loads(cbor2.loads(signed).value[2])["code"], backend.clock.now())
        gcid, client = cardata.gcid_of(ACCOUNT), cardata.add_client("Insurer").client_id
        cardata.grant(VIN, client, ["VEHICLE_STATUS"], backend.clock.now())
        cardata.create_container(gcid, client, "status", "insurance", [MILEAGE_KEY], backend.clock.now())
        cardata.log_transfer(gcid, client, VIN, "stream", [MILEAGE_KEY], backend.clock.now())
        backend.clock.wall = ended
        backend.accounts.unlink(VIN, ended, reason="ended in the portal")
        backend.job.cardata = lambda: cardata.purge_ended()[0]

        backend.clock.wall = ended + timedelta(days=364)  # the contract's year is not over: all of it stays
        assert backend.job.run().cardata_rows_deleted == 0
        assert len(cardata.consents_of(gcid)) == 1
        assert len(cardata.transfers(gcid)) == 1  # the owner may still ask for the transaction report

        backend.clock.wall = ended + timedelta(days=366)  # the link went, and the account with its last link
        assert backend.job.run().cardata_rows_deleted == 4  # the consent, the container, the transfer, the gcid
        assert cardata.account_of(gcid) is None
        assert (cardata.consents_of(gcid), cardata.transfers(gcid), cardata.containers(gcid, client)) == ([], [], [])
        assert cardata.known_gcid(ACCOUNT) is None  # a new account of that name starts with nobody's history
    finally:
        cardata.close()
