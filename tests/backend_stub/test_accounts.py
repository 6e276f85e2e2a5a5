"""Accounts: pairing by the security code the car shows (AGB 1.6 a), and the owner change at the backend
(AGB 7.2, 7.3): link and consents end, the new owner's list of services, the old owner's data gone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from nacl.public import Box, PrivateKey
from nacl.signing import SigningKey

from backend_stub.account_service import AccountService
from backend_stub.accounts import CODE_TTL, MAX_ATTEMPTS, AccountStore, Sealer
from backend_stub.errors import AccountError, UnknownVehicleError
from backend_stub.handover import ENDED_UNPAID
from backend_stub.ingest import Ingest
from backend_stub.invoice_store import InvoiceStore
from backend_stub.invoices import Billing
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.retention import PersonalValues, RetentionJob
from backend_stub.store import BackendStore
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from tcu.errors import ProfileRefusedError
from tcu.services.account_link import AccountMessages
from tcu.services.personal import DriverProfile, PersonalStore
from telematics_wire.catalogue import Catalogue
from telematics_wire.envelope import seal_record
from telematics_wire.records import Record, RecordKind, to_millis
from tests.conftest import OTHER_VIN, VIN

RECORDS = f"vehicles/{VIN}/up/records"
ANNA, BEN = "anna@example.org", "ben@example.org"
POSITION = "Vehicle.CurrentLocation.Latitude"
VOLTAGE = "Vehicle.LowVoltageBattery.CurrentVoltage"


@dataclass
class World:
    clock: ManualClock
    store: BackendStore
    accounts: AccountStore
    provisioning: ProvisioningStore
    issuer: ProvisioningIssuer
    service: AccountService
    ingest: Ingest
    box: Box
    car: AccountMessages
    personal: PersonalStore
    billing: Billing
    invoices: InvoiceStore
    seq: int = 0

    def deliver(self) -> None:
        """The backend publishes, the car receives (the broker in between is not what is tested here)."""
        for number, vin, signed in self.accounts.pending_messages(self.clock.now()):
            if vin == VIN:
                asyncio.run(self.car.receive(signed))
            self.accounts.mark_published(number, self.clock.now())

    def shown_code(self) -> str:
        code = self.personal.current().security_code
        assert code is not None, "the car shows no security code"
        return code.code

    def pair(self, account: str = ANNA) -> None:
        self.accounts.request_code(VIN, account, self.clock.now())
        self.deliver()
        self.accounts.pair(VIN, account, self.shown_code(), self.clock.now())
        self.deliver()

    def send(self, body: dict[str, object], kind: RecordKind = RecordKind.TELEMETRY, seq: int | None = None) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        payload = seal_record(self.box, VIN, seq, Record(kind=kind, created=self.clock.now(), body=body))
        with self.store.transaction():
            self.ingest.handle(RECORDS, payload)
        self.service.process_inbox()
        return seq


@pytest.fixture
def world(tmp_path: Path, vehicle_key: PrivateKey, backend_key: PrivateKey) -> Iterator[World]:
    clock = ManualClock(wall=datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    path = tmp_path / "backend.sqlite3"
    signing = SigningKey.generate()
    store = BackendStore(path)
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    accounts = AccountStore(
        path, sealer=Sealer(bytes(backend_key)), signing_key=signing, enrolled=lambda v: store.public_key(v) is not None
    )
    provisioning = ProvisioningStore(path)
    issuer = ProvisioningIssuer(provisioning, signing_key=signing, clock=clock, enrolled=lambda _v: True)
    job = RetentionJob(store, accounts, PersonalValues(Catalogue.load()), clock)
    invoices = InvoiceStore(path)
    billing = Billing(invoices, provisioning, issuer, clock)
    service = AccountService(accounts, provisioning, job, BrokerConfig(port=1), clock, billing=billing)
    ingest = Ingest(store, backend_key, clock, 64 * 1024)
    service.attach(ingest)
    personal = PersonalStore(tmp_path / "car" / "personal.cbor")
    car = AccountMessages(vin=VIN, verify_key=signing.verify_key, personal=personal, clock=clock)
    yield World(
        clock,
        store,
        accounts,
        provisioning,
        issuer,
        service,
        ingest,
        Box(vehicle_key, backend_key.public_key),
        car,
        personal,
        billing,
        invoices,
    )
    invoices.close()
    accounts.close()
    provisioning.close()
    store.close()


def test_the_code_the_car_shows_pairs_the_account_and_allows_driver_profiles(world: World) -> None:
    world.accounts.create(ANNA, name="Anna", email="anna@example.org", now=world.clock.now())
    with pytest.raises(ProfileRefusedError, match="needs a paired ConnectedDrive account"):
        world.personal.current().with_profile(DriverProfile(name="Anna"))
    world.pair()
    data = world.personal.current()
    assert data.paired_accounts == (ANNA,)
    assert data.security_code is None  # shown until the pairing succeeded
    asyncio.run(world.personal.save(data.with_profile(DriverProfile(name="Anna"))))
    [link] = world.accounts.links(VIN)
    assert (link.account, link.ended) == (ANNA, None)


def test_wrong_codes_are_refused_counted_and_void_the_code(world: World) -> None:
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.accounts.request_code(VIN, ANNA, world.clock.now())
    world.deliver()
    right = world.shown_code()
    wrong = f"{(int(right) + 1) % 10**8:08d}"
    for left in range(MAX_ATTEMPTS - 1, 0, -1):
        with pytest.raises(AccountError, match=rf"wrong security code for this account \({left} attempt"):
            world.accounts.pair(VIN, ANNA, wrong, world.clock.now())
    with pytest.raises(AccountError, match="the code is void"):
        world.accounts.pair(VIN, ANNA, wrong, world.clock.now())
    with pytest.raises(AccountError, match="no security code is pending"):
        world.accounts.pair(VIN, ANNA, right, world.clock.now())  # too late: the right code is void too
    assert world.accounts.links(VIN) == []


def test_a_mistyped_account_name_is_named_and_costs_no_attempt(world: World) -> None:
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.accounts.request_code(VIN, ANNA, world.clock.now())
    world.deliver()
    for _ in range(MAX_ATTEMPTS + 1):
        with pytest.raises(AccountError, match=r"no account nobody@example\.org: check the name"):
            world.accounts.pair(VIN, "nobody@example.org", world.shown_code(), world.clock.now())
    assert world.accounts.pair(VIN, ANNA, world.shown_code(), world.clock.now()).account == ANNA


def test_the_code_expires(world: World) -> None:
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.accounts.request_code(VIN, ANNA, world.clock.now())
    world.deliver()
    world.clock.advance(CODE_TTL.total_seconds())
    with pytest.raises(AccountError, match="expired"):
        world.accounts.pair(VIN, ANNA, world.shown_code(), world.clock.now())


def test_a_code_requested_for_one_account_does_not_pair_another(world: World) -> None:
    for account in (ANNA, BEN):
        world.accounts.create(account, name=account, email=account, now=world.clock.now())
    world.accounts.request_code(VIN, ANNA, world.clock.now())
    world.deliver()
    with pytest.raises(AccountError, match="wrong security code"):
        world.accounts.pair(VIN, BEN, world.shown_code(), world.clock.now())


def test_requests_that_cannot_pair_are_refused_with_the_reason(world: World) -> None:
    with pytest.raises(AccountError, match=r"no account anna@example\.org: create it first"):
        world.accounts.request_code(VIN, ANNA, world.clock.now())
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    with pytest.raises(UnknownVehicleError, match="not enrolled"):
        world.accounts.request_code(OTHER_VIN, ANNA, world.clock.now())
    with pytest.raises(AccountError, match=r"not 1\.\.64 letters"):
        world.accounts.request_code(VIN, "anna; DROP TABLE", world.clock.now())
    world.pair()
    world.accounts.create(BEN, name="Ben", email="b@example.org", now=world.clock.now())
    with pytest.raises(AccountError, match="linked to another account already"):
        world.accounts.request_code(VIN, BEN, world.clock.now())


def test_the_code_is_not_kept_at_the_backend_once_delivered(world: World, tmp_path: Path) -> None:
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.accounts.request_code(VIN, ANNA, world.clock.now())
    world.deliver()
    code = world.shown_code().encode()
    assert all(code not in p.read_bytes() for p in tmp_path.glob("backend.sqlite3*"))


def _owner_change_body(world: World) -> dict[str, object]:
    return asyncio.run(world.personal.owner_change())  # what `tcu owner-change` queues


def test_owner_change_unlinks_ends_consents_lists_services_and_removes_personal_data(world: World) -> None:
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.pair()
    world.accounts.grant_consent(VIN, "Insurer via CarData", world.clock.now())
    world.issuer.book(VIN, "6AE")
    stamp = to_millis(world.clock.now())
    before = world.send({"signals": {POSITION: {"v": 48.1, "t": stamp}, VOLTAGE: {"v": 12.4, "t": stamp}}})
    change = world.send(_owner_change_body(world), kind=RecordKind.EVENT)
    after = world.send({"signals": {POSITION: {"v": 52.5, "t": stamp}}})  # the new owner drives

    [link] = world.accounts.links(VIN)
    assert link.ended == world.clock.now()
    assert link.end_reason == "owner change reported by the vehicle"
    assert [c.ended for c in world.accounts.consents(VIN)] == [world.clock.now()]
    handled = world.accounts.last_handover(VIN)
    assert handled is not None
    assert [(row["code"], row["state"]) for row in handled[1]] == [("6AE", "active")]
    records = {r.seq: r.body for r in world.store.records(VIN)}
    assert set(records[before]["signals"]) == {VOLTAGE}  # technical data stays
    assert records[change]["type"] == "owner_change"
    assert set(records[after]["signals"]) == {POSITION}  # the new owner's data is not touched
    assert {v.path: v.value for v in world.store.last_values(VIN)} == {POSITION: 52.5, VOLTAGE: 12.4}
    # The car is clean too, and a new owner can pair.
    assert world.personal.current().paired_accounts == ()
    world.accounts.create(BEN, name="Ben", email="b@example.org", now=world.clock.now())
    world.pair(BEN)
    assert world.personal.current().paired_accounts == (BEN,)


def test_the_seller_s_overdue_invoice_stays_his_debt_and_its_suspended_booking_ends_at_the_owner_change(
    world: World,
) -> None:
    """AGB 7.1: the contract is the seller's, so is the debt; the buyer inherits no payment default and
    does not get the unpaid service either (5.5 c "einstellen"); he is told so (7.3)."""
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.pair()
    world.issuer.book(VIN, "6AE")
    world.issuer.book(VIN, "STORE-CONNECTED", "1y")
    overdue = world.billing.issue(VIN, "STORE-CONNECTED", 4990, invoiced=date(2026, 10, 1))
    head = world.provisioning.head(VIN)
    assert head is not None
    assert head.contents.suspended == {"STORE-CONNECTED"}
    world.send(_owner_change_body(world), kind=RecordKind.EVENT)

    head = world.provisioning.head(VIN)
    assert head is not None
    assert (head.contents.codes, head.contents.suspended) == ({"6AE"}, frozenset())
    assert head.operation.startswith("end STORE-CONNECTED (unpaid by the previous owner")
    [invoice] = world.invoices.invoices(VIN)
    assert (invoice.number, invoice.paid, invoice.debtor) == (overdue.number, None, ANNA)
    assert invoice.detached == world.clock.now().date()
    assert world.billing.check(VIN).in_default is False
    handed = world.accounts.last_handover(VIN)
    assert handed is not None
    rows = {row["code"]: row for row in handed[1]}
    assert (rows["6AE"]["state"], rows["6AE"].get("note")) == ("active", None)
    assert (rows["STORE-CONNECTED"]["state"], rows["STORE-CONNECTED"]["note"]) == ("deactivated", ENDED_UNPAID)
    versions = len(world.provisioning.files(VIN))
    world.send(_owner_change_body(world), kind=RecordKind.EVENT, seq=world.seq)  # the same record again
    assert len(world.provisioning.files(VIN)) == versions


def test_a_record_of_the_old_owner_arriving_late_is_scrubbed_by_the_next_pass(world: World) -> None:
    stamp = to_millis(world.clock.now())
    world.seq = 1  # record 1 is still in the car's queue when the owner change arrives
    world.send(_owner_change_body(world), kind=RecordKind.EVENT)
    late = world.send({"signals": {POSITION: {"v": 48.1, "t": stamp}}}, seq=1)
    assert set(world.store.records(VIN)[0].body["signals"]) == {POSITION}  # arrived after the owner change ...
    world.clock.advance(60)
    RetentionJob(world.store, world.accounts, PersonalValues(Catalogue.load()), world.clock).run()
    [scrubbed, _] = world.store.records(VIN)
    assert scrubbed.seq == late
    assert scrubbed.body["signals"] == {}
    assert POSITION not in {v.path for v in world.store.last_values(VIN)}


def test_the_same_owner_change_taken_twice_changes_nothing(world: World) -> None:
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.pair()
    body = _owner_change_body(world)
    seq = world.send(body, kind=RecordKind.EVENT)
    world.accounts.create(BEN, name="Ben", email="b@example.org", now=world.clock.now())
    world.pair(BEN)
    # A replay of the report (a resend after a lost ack) is a duplicate: Ben stays linked.
    world.send(body, kind=RecordKind.EVENT, seq=seq)
    assert world.accounts.link(VIN) is not None
    assert (
        world.accounts.owner_change(
            VIN, epoch=b"", seq=seq, created=world.clock.now(), now=world.clock.now(), handover=[]
        )
        is None
    )
    assert world.accounts.link(VIN) is not None


def test_a_link_message_replayed_after_the_sale_does_not_pair_the_old_account(world: World) -> None:
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.accounts.request_code(VIN, ANNA, world.clock.now())
    world.deliver()
    world.accounts.pair(VIN, ANNA, world.shown_code(), world.clock.now())
    [(_, _, recorded)] = world.accounts.pending_messages(world.clock.now())  # an attacker keeps a copy
    world.deliver()
    asyncio.run(world.personal.owner_change())
    world.clock.advance(timedelta(hours=1).total_seconds())
    assert asyncio.run(world.car.receive(recorded)) is None
    assert world.personal.current().paired_accounts == ()


def test_unlinking_in_the_portal_tells_the_car(world: World) -> None:
    world.accounts.create(ANNA, name="Anna", email="a@example.org", now=world.clock.now())
    world.pair()
    ended = world.accounts.unlink(VIN, world.clock.now(), reason="ended in the portal")
    assert ended is not None
    assert ended.account == ANNA
    world.deliver()
    assert world.personal.current().paired_accounts == ()
    assert world.accounts.unlink(VIN, world.clock.now(), reason="again") is None
