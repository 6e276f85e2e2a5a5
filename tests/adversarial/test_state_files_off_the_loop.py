"""Issue 14 item 3: the agent's state files (provisioning, personal data, measure journal, ECU configuration,
service calls) are written off the event loop, with the ordering and durability they had on it.

The disk here is slow on demand: `SlowDisk` holds every fsync until the test opens its gate, so a test
sees what the loop does while a write is in its fsync — ordering, not wall-clock: the loop runs other
tasks to completion, and nothing is reported or believed before the bytes are durable. A full disk
(ENOSPC) reaches each caller as the same StorageError the blocking write raised.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from nacl.signing import SigningKey

import tcu.persist
from hil.layout import BenchLayout
from tcu.app import Agent
from tcu.clock import ManualClock
from tcu.config import load_agent_config
from tcu.ecall.activity import EcallActivity
from tcu.ecall.state_machine import EcallState
from tcu.ecall.triggers import CallType
from tcu.errors import StorageError
from tcu.persist import AtomicFile, write_atomic
from tcu.services.account_link import AccountMessages
from tcu.services.measure_attempt import Interruption
from tcu.services.measure_journal import InProgress, MeasureJournal
from tcu.services.personal import PersonalData, PersonalStore
from telematics_wire.cose import sign1
from telematics_wire.keys import load_signing_key
from telematics_wire.records import to_millis
from tests.adversarial.test_downlink_measures import Disk
from tests.conftest import VIN
from tests.services.provisioning_helpers import booking, signed
from tests.services.test_manager import KEY, Harness
from tests.services.test_measures import Bench
from tests.settle import settle

HELD_S = 5.0  # how long a held fsync waits for its gate at most: a test that never opens it still ends
OTHER_TASK_TURNS = 100


class SlowDisk(Disk):
    """The full-disk switch (`full`: ENOSPC) with a slow fsync: it waits until `gate` opens (`entered`
    says one is waiting)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fsyncs_on: set[str] = set()  # thread names that called fsync

    def fsync(self, fd: int) -> None:
        self.fsyncs_on.add(threading.current_thread().name)
        self.entered.set()
        self.gate.wait(HELD_S)
        os.fsync(fd)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> SlowDisk:
    disk = SlowDisk()
    monkeypatch.setattr(tcu.persist, "os", disk)
    return disk


async def _other_task_runs_to_completion() -> int:
    """Another task of the agent (the eCall's, a CAN reader): it only needs the loop."""
    turns = 0
    for _ in range(OTHER_TASK_TURNS):
        await asyncio.sleep(0)
        turns += 1
    return turns


# -- AtomicFile --------------------------------------------------------------------------------------


async def test_writes_run_on_a_worker_in_the_order_handed_over(tmp_path: Path, disk: SlowDisk) -> None:
    file = AtomicFile(tmp_path / "state.cbor")
    writes = [asyncio.create_task(file.write(b"%d" % n)) for n in range(20)]
    assert await settle(disk.entered.is_set)
    assert await _other_task_runs_to_completion() == OTHER_TASK_TURNS
    assert not any(write.done() for write in writes), "returned before the bytes were durable"
    disk.gate.set()
    await asyncio.gather(*writes)
    assert (tmp_path / "state.cbor").read_bytes() == b"19"  # the last one handed over
    assert threading.current_thread().name not in disk.fsyncs_on
    assert not (tmp_path / ".state.cbor.tmp").exists()  # no temporary file left behind


async def test_a_write_whose_caller_stops_waiting_is_still_carried_out(tmp_path: Path, disk: SlowDisk) -> None:
    file = AtomicFile(tmp_path / "state.cbor")
    first = asyncio.create_task(file.write(b"first"))
    assert await settle(disk.entered.is_set)
    first.cancel()
    second = asyncio.create_task(file.write(b"second"))
    disk.gate.set()
    await second
    assert first.cancelled()
    assert (tmp_path / "state.cbor").read_bytes() == b"second"  # never overtaken by the abandoned one


async def test_a_full_disk_raises_the_same_error_the_blocking_write_raised(tmp_path: Path, disk: SlowDisk) -> None:
    disk.gate.set()
    disk.full = True
    path = tmp_path / "state.cbor"
    with pytest.raises(StorageError) as blocking:
        write_atomic(path, b"x")
    with pytest.raises(StorageError) as worker:
        await AtomicFile(path).write(b"x")
    assert str(worker.value) == str(blocking.value) == f"cannot write {path}: No space left on device"
    assert isinstance(worker.value.__cause__, OSError)
    assert worker.value.__cause__.errno == errno.ENOSPC


# -- provisioning ------------------------------------------------------------------------------------


async def test_the_loop_runs_while_a_provisioning_file_is_in_its_fsync_and_the_result_waits_for_it(
    tmp_path: Path, clock: ManualClock, disk: SlowDisk
) -> None:
    harness = Harness(tmp_path / "provisioning.cose", clock)
    apply = asyncio.create_task(harness.manager.receive(signed(KEY, VIN, 1, clock.now(), booking("6AE"))))
    assert await settle(disk.entered.is_set)
    assert await _other_task_runs_to_completion() == OTHER_TASK_TURNS
    # Written before reported, as before: no result and no new entitlements while the file is not durable.
    assert not apply.done()
    assert harness.results() == []
    assert harness.manager.entitlements.version == 0  # none applied yet
    disk.gate.set()
    await apply
    assert harness.results() == [("applied", 1, None)]
    assert Harness(tmp_path / "provisioning.cose", clock).manager.entitlements.version == 1


async def test_a_file_delivered_again_while_the_first_copy_is_written_is_answered_already_applied(
    tmp_path: Path, clock: ManualClock, disk: SlowDisk
) -> None:
    """A retained file arrives at a reconnect while the eCall-deferred copy is being applied: the second
    is verified against what the first left, not against the file before it."""
    harness = Harness(tmp_path / "provisioning.cose", clock)
    message = signed(KEY, VIN, 2, clock.now(), booking("6AE"))
    older = signed(KEY, VIN, 1, clock.now(), booking("6AE"), booking("6AM"))
    first = asyncio.create_task(harness.manager.receive(message))
    assert await settle(disk.entered.is_set)
    again = asyncio.create_task(harness.manager.receive(message))
    downgrade = asyncio.create_task(harness.manager.receive(older))
    await _other_task_runs_to_completion()
    disk.gate.set()
    await asyncio.gather(first, again, downgrade)
    assert harness.results() == [("applied", 2, None), ("already_applied", 2, None), ("rejected", 1, "old_version")]
    assert Harness(tmp_path / "provisioning.cose", clock).manager.entitlements.version == 2


async def test_a_full_disk_defers_the_file_with_the_reason_as_before(
    tmp_path: Path, clock: ManualClock, disk: SlowDisk
) -> None:
    disk.gate.set()
    disk.full = True
    harness = Harness(tmp_path / "provisioning.cose", clock)
    await harness.manager.receive(signed(KEY, VIN, 1, clock.now(), booking("6AE")))
    [result] = [r.body for r in harness.reports]
    assert (result["status"], result["code"]) == ("deferred", "storage")
    path = tmp_path / "provisioning.cose"
    assert result["reason"] == f"the vehicle cannot store the file: cannot write {path}: No space left on device"


# -- personal data -----------------------------------------------------------------------------------

ACCOUNT_KEY = SigningKey(bytes(range(1, 33)))
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _link_message(n: int, account: str) -> bytes:
    body = {
        "type": "account_link",
        "vin": VIN,
        "n": n,
        "issued": to_millis(NOW),
        "expires": to_millis(NOW) + 60_000,
        "account": account,
        "linked": True,
    }
    return sign1(cbor2.dumps(body), ACCOUNT_KEY)


async def test_the_loop_runs_while_personal_data_is_in_its_fsync_and_it_is_believed_once_durable(
    tmp_path: Path, disk: SlowDisk
) -> None:
    personal = PersonalStore(tmp_path / "personal.cbor")
    accounts = AccountMessages(
        vin=VIN, verify_key=ACCOUNT_KEY.verify_key, personal=personal, clock=ManualClock(wall=NOW)
    )
    pairing = asyncio.create_task(accounts.receive(_link_message(1, "anna@example.org")))
    assert await settle(disk.entered.is_set)
    # The next message (a replay of the same number, and a newer one) waits for the first to be stored.
    replay = asyncio.create_task(accounts.receive(_link_message(1, "mallory@example.org")))
    newer = asyncio.create_task(accounts.receive(_link_message(2, "ben@example.org")))
    assert await _other_task_runs_to_completion() == OTHER_TASK_TURNS
    assert not pairing.done()
    assert personal.data.paired_accounts == ()
    disk.gate.set()
    assert [data.paired_accounts if data else None for data in await asyncio.gather(pairing, replay, newer)] == [
        ("anna@example.org",),
        None,
        ("anna@example.org", "ben@example.org"),
    ]
    on_disk = PersonalStore(tmp_path / "personal.cbor").load()
    assert (on_disk.paired_accounts, on_disk.messages_seen) == (("anna@example.org", "ben@example.org"), 2)


async def test_a_full_disk_fails_a_personal_save_with_the_same_error_and_changes_nothing(
    tmp_path: Path, disk: SlowDisk
) -> None:
    disk.gate.set()
    store = PersonalStore(tmp_path / "personal.cbor")
    await store.save(PersonalData(messages_seen=3))
    disk.full = True
    with pytest.raises(StorageError, match=r"cannot write .*personal\.cbor: No space left on device"):
        await store.owner_change()
    assert store.data == PersonalData(messages_seen=3)
    assert PersonalStore(tmp_path / "personal.cbor").load() == PersonalData(messages_seen=3)


# -- the measure journal -----------------------------------------------------------------------------


async def test_journal_changes_made_while_one_is_written_are_all_kept(tmp_path: Path, disk: SlowDisk) -> None:
    """An order recorded (downlink) while the running attempt ends (engine): neither loses the other."""
    journal = MeasureJournal(tmp_path / "measures.cbor")
    begun = asyncio.create_task(journal.begin(InProgress(measure_id="M1", attempt=1, config=b"\xa0")))
    assert await settle(disk.entered.is_set)
    seen = asyncio.create_task(journal.seen("M2", 4))
    ended = asyncio.create_task(journal.end(applied=True))
    await _other_task_runs_to_completion()
    disk.gate.set()
    await asyncio.gather(begun, seen, ended)
    reloaded = MeasureJournal(tmp_path / "measures.cbor")
    reloaded.load()
    assert (reloaded.applied("M1"), reloaded.last_attempt("M2"), reloaded.in_progress) == (True, 4, None)


# -- the agent: the provisioning file that waited for an eCall ---------------------------------------


def _ended() -> EcallActivity:
    return EcallActivity(started=False, session=1, call_type=CallType.AUTOMATIC, state=EcallState.CLEARED, at=NOW)


@pytest.fixture
def agent(layout: BenchLayout) -> Agent:
    return Agent(load_agent_config(layout.agent_config(VIN), env={}))


async def test_the_end_of_an_ecall_applies_the_waiting_file_in_a_task_of_its_own(
    layout: BenchLayout, agent: Agent, disk: SlowDisk
) -> None:
    backend_key = load_signing_key(layout.keys / "backend.ed25519.key")
    async with agent.outbox:
        agent.services.load()
        disk.full = True  # the file waits for room on the disk: the end of a call tries it again
        disk.gate.set()
        await agent.services.receive(signed(backend_key, VIN, 1, agent.clock.now(), booking("6AE")))
        disk.full, disk.entered, disk.gate = False, threading.Event(), threading.Event()
        agent._on_ecall(_ended())  # the eCall engine's listener: it returns at once
        assert await settle(disk.entered.is_set)
        assert await _other_task_runs_to_completion() == OTHER_TASK_TURNS
        assert agent.services.entitlements.version == 0  # not believed before it is durable
        disk.gate.set()
        assert await settle(lambda: agent.services.entitlements.version == 1)


async def test_a_failing_apply_after_an_ecall_is_logged_and_the_agent_goes_on(
    agent: Agent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("the verify key vanished")

    monkeypatch.setattr(agent.services, "ecall_ended", broken)
    with caplog.at_level(logging.ERROR):
        agent._on_ecall(_ended())
        assert await settle(lambda: "was not applied" in caplog.text)
    assert "the verify key vanished" in caplog.text


# -- remote measures ---------------------------------------------------------------------------------


async def test_an_ecall_while_the_attempt_is_being_journaled_interrupts_it(
    tmp_path: Path, clock: ManualClock, disk: SlowDisk
) -> None:
    """The journal's fsync before the first step is part of the attempt: an eCall then rolls it back,
    as one a moment later would, instead of being missed while the engine waits for the disk."""
    disk.gate.set()
    bench = await Bench(tmp_path, clock).start()
    await bench.engine.receive(bench.order())
    disk.gate.clear()
    disk.entered.clear()
    engine = asyncio.create_task(bench.engine.run())
    try:
        assert await settle(disk.entered.is_set)  # the engine is writing the attempt's journal
        bench.engine.interrupt(Interruption.ECALL)
        disk.gate.set()
        assert await settle(lambda: bool(bench.reports) and bench.engine.idle)
    finally:
        engine.cancel()
    [result] = [r.body for r in bench.reports]
    assert (result["status"], result["code"]) == ("rolled_back", "ecall")
