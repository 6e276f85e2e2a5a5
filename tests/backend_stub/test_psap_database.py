"""The PSAP stub shares the backend's database: a write that fails must not cost the eCall its ack."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from backend_stub.psap import PsapStub
from tests.backend_stub.psap_caller import MSD, emergency_call, send_msd
from tests.conftest import VIN


async def test_an_msd_the_database_cannot_take_is_still_acknowledged(tmp_path: Path) -> None:
    database = tmp_path / "backend.sqlite3"
    async with PsapStub(database=database) as psap:
        with closing(sqlite3.connect(database)) as db, db:  # every write now fails, as on a full disk
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON psap_msds BEGIN SELECT RAISE(FAIL, 'disk is full'); END")
        async with emergency_call(psap) as (reader, writer):
            assert await send_msd(reader, writer) == ["LL-ACK", "AL-ACK positive"]
        [received] = psap.msds
        assert received.msd is not None
        assert received.msd.vin == VIN


def _call_and_time_the_acks(address: tuple[str, int]) -> float:
    """A blocking caller in its own thread: seconds from sending the MSD to holding both acks."""
    with socket.create_connection(address, timeout=10) as line, line.makefile("rwb") as stream:
        stream.write(b"CALL automatic -\n")
        stream.flush()
        assert [stream.readline().strip() for _ in range(2)] == [b"CONNECTED", b"SEND-MSD"]
        sent = time.monotonic()
        stream.write(f"MSD {MSD.hex()}\n".encode("ascii"))
        stream.flush()
        assert [stream.readline().strip() for _ in range(2)] == [b"LL-ACK", b"AL-ACK positive"]
        elapsed = time.monotonic() - sent
        stream.write(b"HANGUP\n")
        stream.flush()
        return elapsed


async def test_the_acks_do_not_wait_for_a_database_locked_by_another_process(tmp_path: Path) -> None:
    """The CLI (another process) may hold the write lock; the caller must not wait the busy timeout out."""
    database = tmp_path / "backend.sqlite3"
    async with PsapStub(database=database) as psap:
        with closing(sqlite3.connect(database, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # held for the whole call
            elapsed = await asyncio.to_thread(_call_and_time_the_acks, psap.address)
            other.execute("ROLLBACK")
        assert elapsed < 2.0  # before: LL-ACK only after sqlite3's 5 s busy timeout
        assert len(psap.msds) == 1
