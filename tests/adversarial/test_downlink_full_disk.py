"""The vehicle's downlink state on a full or failing disk: provisioning files wait instead of being lost,
write_atomic never puts a cut-short file in place, a damaged measure journal does not stop the boot."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import tcu.persist
from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_history import FileState
from backend_stub.provisioning_service import parse_result
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import ManualClock
from tcu.errors import StorageError
from tcu.persist import write_atomic
from tcu.services.measure_journal import MeasureJournal
from tests.adversarial.test_downlink_cose import Provisioning
from tests.adversarial.test_downlink_measures import Disk
from tests.conftest import VIN
from tests.services.test_measures import KEY


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    disk = Disk()
    monkeypatch.setattr(tcu.persist, "os", disk)
    return disk


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProvisioningStore]:
    store = ProvisioningStore(tmp_path / "backend.sqlite3")
    yield store
    store.close()


def _book(store: ProvisioningStore, seq: int, body: dict[str, Any]) -> None:
    at = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    store.record_result(parse_result(vin=VIN, seq=seq, created=at, received=at, body=body))


async def test_a_file_arriving_on_a_full_disk_waits_and_is_applied_once_there_is_room(
    tmp_path: Path, clock: ManualClock, disk: Disk, store: ProvisioningStore
) -> None:
    issuer = ProvisioningIssuer(store, signing_key=KEY, clock=clock, enrolled=lambda _vin: True)
    issued = issuer.book(VIN, "6AE", "unlimited")
    store.mark_published(VIN, issued.version, clock.now())
    car = Provisioning(tmp_path / "provisioning.cose", clock)

    disk.full = True
    await car.manager.receive(issued.signed)
    await car.manager.receive(issued.signed)  # the retained copy again, at a reconnect
    await car.manager.retry_deferred()  # a tick while the disk is still full
    [deferred] = car.results()
    assert (deferred["status"], deferred["version"], deferred["code"]) == ("deferred", issued.version, "storage")
    assert "No space left on device" in deferred["reason"]
    assert not car.path.exists()
    _book(store, 1, deferred)
    [file] = store.files(VIN)
    assert file.state is FileState.DELIVERED  # unresolved: the backend sends it again when the car comes online

    disk.full = False
    await car.manager.retry_deferred()  # the next tick
    assert [(r["status"], r["version"]) for r in car.results()[1:]] == [("applied", issued.version)]
    assert car.boot().entitlements.version == issued.version
    _book(store, 2, car.results()[-1])
    assert store.files(VIN)[0].state is FileState.APPLIED


class ShortWrites(Disk):
    """A disk that writes at most `chunk` bytes per call (os.write may), or nothing at all (chunk 0)."""

    def __init__(self, chunk: int) -> None:
        super().__init__()
        self.chunk = chunk

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, bytes(data[: self.chunk])) if self.chunk else 0


def test_a_short_write_is_continued_and_a_stalled_one_never_replaces_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.cbor"
    target.write_bytes(b"old state")
    monkeypatch.setattr(tcu.persist, "os", ShortWrites(3))
    write_atomic(target, b"the whole new state")
    assert target.read_bytes() == b"the whole new state"

    monkeypatch.setattr(tcu.persist, "os", ShortWrites(0))
    with pytest.raises(StorageError, match="no progress writing"):
        write_atomic(target, b"a state cut short")
    assert target.read_bytes() == b"the whole new state"
    assert [p.name for p in tmp_path.iterdir()] == ["state.cbor"]


@pytest.mark.parametrize("damage", [b"", b"\xff\xff", b"\xa1\x64seen\x05", b"\xa1\x64seen\xa1\x61m\x01"])
async def test_a_damaged_measure_journal_does_not_stop_the_boot(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "measures.cbor"
    path.write_bytes(damage)
    journal = MeasureJournal(path)
    journal.load()
    assert journal.in_progress is None
    assert journal.last_attempt("m") == 0
    assert "measure journal" in caplog.text
    await journal.seen("m", 1)  # and it works again
    assert journal.last_attempt("m") == 1


async def test_a_journal_that_cannot_be_written_remembers_nothing(tmp_path: Path, disk: Disk) -> None:
    journal = MeasureJournal(tmp_path / "measures.cbor")
    disk.full = True
    with pytest.raises(StorageError):
        await journal.seen("M1", 4)
    assert journal.last_attempt("M1") == 0  # attempt 4, never recorded, is not a replay later
