"""`BackendStub.reader()`: what a test or a bench polls beside a running backend sees only committed
batches, on a connection of its own, and cannot write."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.store import BackendStore
from hil.layout import BenchLayout
from telematics_wire.records import ReceivedRecord, RecordKind
from tests.conftest import VIN

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[BackendStub]:
    layout = BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:1")  # nothing is connected
    layout.create_backend()
    stub = BackendStub(load_backend_config(layout.backend_config, env={}))
    yield stub
    for store in (
        stub.retention_tables,
        stub.invoice_store,
        stub.accounts,
        stub.measure_store,
        stub.provisioning_store,
        stub.store,
    ):
        store.close()


def _record(seq: int) -> ReceivedRecord:
    return ReceivedRecord(vin=VIN, seq=seq, kind=RecordKind.EVENT, created=AT, body={"type": "door"})


def test_a_batch_in_progress_is_invisible_to_the_reader_until_it_commits(backend: BackendStub) -> None:
    with contextlib.closing(backend.reader()) as reader:
        with backend.store.transaction():  # what the database thread does with a batch
            backend.store.add_record(_record(1), AT)
            assert backend.store.seqs(VIN) == [1]  # the backend's own connection sees its open batch
            assert reader.seqs(VIN) == []
        assert reader.seqs(VIN) == [1]


def test_a_batch_rolled_back_was_never_seen_by_the_reader(backend: BackendStub) -> None:
    def failing_batch(reader: BackendStore) -> None:
        with backend.store.transaction():
            backend.store.add_record(_record(1), AT)
            assert reader.count(VIN) == 0
            raise RuntimeError("disk gone")

    with contextlib.closing(backend.reader()) as reader:
        with pytest.raises(RuntimeError, match="disk gone"):
            failing_batch(reader)
        assert (reader.count(VIN), backend.store.count(VIN)) == (0, 0)


def test_the_reader_refuses_to_write(backend: BackendStub) -> None:
    with contextlib.closing(backend.reader()) as reader:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.add_record(_record(1), AT)
        assert backend.store.seqs(VIN) == []
