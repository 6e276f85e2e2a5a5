"""`BackendStub.operate`: an operator in the backend's own process (a bench's step, an integration test)
changes the backend's stores on its database thread while the app runs, never from the event loop.

The stores' connections are shared with that thread. A booking made from the loop while the thread
holds a transaction on the same connection would fail ("cannot start a transaction within a
transaction") or, between two statements of the thread's transaction, be committed or rolled back
with the other's half-done work. Handed over, it waits for the thread and both land whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backend_stub.app import BackendStub
from backend_stub.config import load_backend_config
from backend_stub.provisioning_store import ProvisioningStore
from hil.layout import BenchLayout
from tests.conftest import VIN, running_task


def _backend(tmp_path: Path) -> BackendStub:
    layout = BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:1")  # nothing is connected
    layout.create_backend()
    layout.add_vehicle(VIN)
    return BackendStub(load_backend_config(layout.backend_config, env={}))


@contextlib.asynccontextmanager
async def running(backend: BackendStub) -> AsyncIterator[None]:
    async with running_task(backend.run(), name="backend"):
        await asyncio.sleep(0)  # run() has started: its database thread owns the stores
        yield


async def test_a_booking_waits_for_the_database_threads_transaction_and_both_land(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    issuer = backend.issuer
    assert issuer is not None
    entered, release = threading.Event(), threading.Event()

    def long_write() -> None:
        """The backend's own work holding a write open on the provisioning store's connection."""
        with backend.provisioning_store.transaction():
            backend.provisioning_store.set_legal_ecall(VIN, True)
            entered.set()
            assert release.wait(10), "the test never released the database thread"

    async with running(backend):
        holding = asyncio.create_task(backend.database.run(long_write))
        assert await asyncio.to_thread(entered.wait, 10)
        booking = asyncio.create_task(backend.operate(issuer.book, VIN, "6AE"))
        await asyncio.sleep(0.3)
        assert not booking.done(), "the booking ran beside the thread's open transaction"
        release.set()
        issued = await asyncio.wait_for(booking, 10)
        await asyncio.wait_for(holding, 10)
        assert (issued.version, issued.operation.split()[:2]) == (1, ["book", "6AE"])
        assert await backend.operate(backend.provisioning_store.legal_ecall, VIN) is True
    # Both committed: another connection sees them once the app has closed its own.
    store = ProvisioningStore(backend.config.database)
    try:
        assert store.legal_ecall(VIN) is True
        assert [(f.version, f.operation) for f in store.files(VIN)] == [(1, issued.operation)]
    finally:
        store.close()


async def test_while_the_app_runs_a_job_runs_on_its_database_thread_and_a_plain_call_otherwise(
    tmp_path: Path,
) -> None:
    backend = _backend(tmp_path)
    here = threading.get_ident()
    before = await backend.operate(threading.current_thread)
    async with running(backend):
        during = await backend.operate(threading.current_thread)
        assert await backend.operate(backend.provisioning_store.set_legal_ecall, VIN, True) is True
    after_ident = await backend.operate(threading.get_ident)
    assert before.ident == here == after_ident  # no thread to hand it to: nothing else uses the stores
    assert during.ident != here
    assert during.name.startswith("backend-db")
    with pytest.raises(ValueError, match="boom"):  # a job's exception reaches the operator
        await backend.operate(_fail, "boom")


def _fail(reason: str) -> None:
    raise ValueError(reason)
