"""A backend database with accounts, records, provisioning and CarData, for the CarData domain tests.

Vehicles are paired the real way (the security code goes into the car, the car shows it) and records
are stored as ingest stores them, so a consent hangs on a real account link and an owner change goes
through `AccountStore.owner_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from backend_stub.accounts import AccountStore, Sealer
from backend_stub.cardata.catalogue import load_cardata_catalogue
from backend_stub.cardata.consents import CardataStore
from backend_stub.cardata.service import CardataService
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_history import CapabilityReport, ResultStatus, VehicleResult
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from tcu.clock import ManualClock
from tcu.services.account_link import AccountMessages
from tcu.services.personal import PersonalStore
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@dataclass
class CardataWorld:
    tmp: Path
    clock: ManualClock
    records: BackendStore
    accounts: AccountStore
    provisioning: ProvisioningStore
    issuer: ProvisioningIssuer
    store: CardataStore
    service: CardataService
    signing: SigningKey
    sealer: bytes  # the Sealer's private key
    seqs: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def now(self) -> datetime:
        return self.clock.now()

    def enroll(self, vin: str) -> None:
        self.records.enroll(vin, bytes(PrivateKey.generate().public_key), self.now())

    def account(self, account: str) -> str:
        """A new account; its gcid."""
        self.accounts.create(account, name=account.split("@", maxsplit=1)[0], email=account, now=self.now())
        return self.store.gcid_of(account)

    def pair(self, vin: str, account: str) -> None:
        """Pair as a customer does: the code goes into the car, the customer types what it shows."""
        personal = PersonalStore(self.tmp / "cars" / vin / "personal.cbor")
        car = AccountMessages(vin=vin, verify_key=self.signing.verify_key, personal=personal, clock=self.clock)
        self.accounts.request_code(vin, account, self.now())
        for number, target, signed in self.accounts.pending_messages(self.now()):
            if target == vin:
                asyncio.run(car.receive(signed))
            self.accounts.mark_published(number, self.now())
        code = personal.current().security_code
        assert code is not None, "the car shows no security code"
        self.accounts.pair(vin, account, code.code, self.now())

    def owner_change(self, vin: str) -> None:
        """The car reports an owner change (AGB 7.2): the backend's real path."""
        seq = next(self.seqs)
        self.accounts.owner_change(vin, epoch=b"e", seq=seq, created=self.now(), now=self.now(), handover=[])

    def send(self, vin: str, signals: Mapping[str, Any], *, kind: RecordKind = RecordKind.TELEMETRY) -> None:
        millis = to_millis(self.now())
        body = {"signals": {path: {"v": value, "t": millis} for path, value in signals.items()}}
        self.store_record(vin, body, kind=kind)

    def store_record(self, vin: str, body: Mapping[str, Any], *, kind: RecordKind) -> None:
        record = ReceivedRecord(
            vin=vin, seq=next(self.seqs), kind=kind, kind_name=kind.value, created=self.now(), body=body
        )
        with self.records.transaction():
            self.records.add_record(record, self.now())

    def report(self, vin: str, report: Mapping[str, Any]) -> None:
        """The car's capability report, as ingest keeps it."""
        seq = next(self.seqs)
        self.provisioning.set_capabilities(
            CapabilityReport(vin=vin, seq=seq, created=self.now(), received=self.now(), report=dict(report))
        )

    def apply(self, vin: str, version: int) -> None:
        """The vehicle reports the file applied."""
        result = VehicleResult(
            vin=vin,
            seq=next(self.seqs),
            created=self.now(),
            received=self.now(),
            version=version,
            status=ResultStatus.APPLIED,
        )
        self.provisioning.record_result(result)

    def close(self) -> None:
        self.store.close()
        self.provisioning.close()
        self.accounts.close()
        self.records.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A world saved as one database file with the keys its rows were sealed and signed with, so a test
    can start from a copy of it (`open_world(snapshot=...)`) instead of building it again: SQLite's
    schema writes and a real pairing are most of a world's start."""

    database: Path
    sealer: bytes
    signing: bytes
    next_seq: int
    clock: datetime


def snapshot(world: CardataWorld, path: Path) -> Snapshot:
    """Save `world` (still open, every change committed) to `path`."""
    with contextlib.closing(sqlite3.connect(world.tmp / "backend.sqlite3")) as db:
        db.execute("VACUUM INTO ?", (str(path),))
    next_seq = next(world.seqs)
    world.seqs = itertools.count(next_seq + 1)
    return Snapshot(
        database=path, sealer=world.sealer, signing=bytes(world.signing), next_seq=next_seq, clock=world.now()
    )


def blank_database(tmp: Path) -> Snapshot:
    """A world with every table and no rows."""
    world = open_world(tmp / "template")
    try:
        return snapshot(world, tmp / "blank.sqlite3")
    finally:
        world.close()


def open_world(tmp: Path, *, snapshot: Snapshot | None = None) -> CardataWorld:
    """A new world in `tmp`; a copy of `snapshot` when given."""
    path = tmp / "backend.sqlite3"
    sealer, signing, next_seq, clock = bytes(PrivateKey.generate()), SigningKey.generate(), 1, ManualClock(wall=START)
    if snapshot is not None:
        shutil.copyfile(snapshot.database, path)
        path.chmod(0o600)  # as the stores create it: the backend's database is the owner's alone
        sealer, signing, next_seq = snapshot.sealer, SigningKey(snapshot.signing), snapshot.next_seq
        clock = ManualClock(wall=snapshot.clock)
    records = BackendStore(path)
    accounts = AccountStore(
        path,
        sealer=Sealer(sealer),
        signing_key=signing,
        enrolled=lambda vin: records.public_key(vin) is not None,
    )
    provisioning = ProvisioningStore(path)
    issuer = ProvisioningIssuer(provisioning, signing_key=signing, clock=clock, enrolled=lambda _vin: True)
    store = CardataStore(path)
    service = CardataService(store, load_cardata_catalogue(), records, provisioning, clock)
    return CardataWorld(
        tmp, clock, records, accounts, provisioning, issuer, store, service, signing, sealer, itertools.count(next_seq)
    )
