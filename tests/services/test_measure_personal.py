"""A remote measure never loses the driver's personal settings (AGB 3.4 d), whatever it does meanwhile.

The HIL bench found a driver profile created during attempt 1 gone after its rollback: the engine
restored a snapshot of the personal store taken at the attempt's start, and also failed a success
(then rolled it back) because the store differed from that snapshot. Now a rollback restores the ECU
configuration only; the personal settings stay as the driver has them, in memory and on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Self

import cbor2
import pytest

from tcu.clock import ManualClock
from tcu.services.ecu_config import EcuConfiguration
from tcu.services.measure_journal import MeasureJournal
from tcu.services.personal import DriverProfile, PersonalData, PersonalStore
from telematics_wire.catalogue import Category
from telematics_wire.ecu_keys import load_key_specs
from tests.services.test_measures import CHANGES, Bench
from tests.settle import settle

ACCOUNT = "anna@example.org"
BEN = DriverProfile(name="Ben", seat_position=7, radio_presets=("FM4",))


class PersonalBench(Bench):
    """The measures bench, with a paired account (a profile needs one) and a way to cut the power."""

    def __init__(self, tmp_path: Path, clock: ManualClock) -> None:
        super().__init__(tmp_path, clock)
        self.personal_path = tmp_path / "personal.cbor"
        self.cut_at: int | None = None  # the step during which the power goes
        self.power_gone = False

    async def start(self) -> Self:
        await super().start()
        await self.personal.save(replace(self.personal.data, paired_accounts=(ACCOUNT,)))
        return self

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self.steps == self.cut_at:
            self.power_gone = True
            await asyncio.Event().wait()  # never returns: the process dies here

    def on_disk(self) -> PersonalData:
        return PersonalStore(self.personal_path).load()


async def driver_changes(bench: PersonalBench, store: PersonalStore) -> None:
    """What a driver does in the car while the measure runs: adds a profile, moves Anna's seat,
    refuses position upload. The agent then reads the file as it does for every upload (data policy)."""
    data = store.current()
    anna = replace(data.profiles[0], seat_position=9)
    await store.save(replace(data, profiles=(anna,)).with_profile(BEN).with_consent(Category.POSITION, False))
    bench.personal.current()


def assert_the_drivers_changes_are_kept(bench: PersonalBench) -> None:
    data = bench.on_disk()
    assert [(p.name, p.seat_position) for p in data.profiles] == [("Anna", 9), ("Ben", 7)]
    assert data.profiles[1] == BEN
    assert not data.allows(Category.POSITION)
    assert data.paired_accounts == (ACCOUNT,)


# The driver's change is written by the agent itself (a pairing message) or by `tcu profile add`, another
# process writing the same file: both must survive.
WRITERS: dict[str, Callable[[PersonalBench], PersonalStore]] = {
    "this process": lambda bench: bench.personal,
    "another process": lambda bench: PersonalStore(bench.personal_path),
}


@pytest.fixture
async def bench(tmp_path: Path, clock: ManualClock) -> PersonalBench:
    return await PersonalBench(tmp_path, clock).start()


@pytest.mark.parametrize("writer", list(WRITERS))
async def test_a_rollback_keeps_a_profile_added_and_one_changed_during_the_attempt(
    bench: PersonalBench, writer: str
) -> None:
    config_before = bench.ecu.snapshot()

    async def step(n: int) -> None:
        if n == 2:  # the first change is applied: the driver gets in, adjusts, and locks up again
            await driver_changes(bench, WRITERS[writer](bench))
            bench.set_signal("Vehicle.Body.CentralLock.State", "LOCKED")

    bench.on_step = step
    result = await bench.run(bench.order())
    assert (result["status"], result["code"]) == ("rolled_back", "lock_or_unlock")
    assert bench.ecu.snapshot() == config_before  # the ECU configuration is restored exactly
    assert_the_drivers_changes_are_kept(bench)
    # The retry succeeds and still keeps them.
    bench.on_step = lambda _n: None
    assert (await bench.run(bench.order(attempt=2)))["status"] == "succeeded"
    assert_the_drivers_changes_are_kept(bench)


@pytest.mark.parametrize("writer", list(WRITERS))
async def test_a_success_is_a_success_when_the_driver_changed_settings_meanwhile(
    bench: PersonalBench, writer: str
) -> None:
    bench.on_step = lambda n: driver_changes(bench, WRITERS[writer](bench)) if n == 1 else None
    result = await bench.run(bench.order())
    assert result["status"] == "succeeded"
    values = bench.ecu.values
    assert {k: values[k] for k in CHANGES} == CHANGES
    assert_the_drivers_changes_are_kept(bench)


async def test_a_boot_after_a_power_cut_mid_attempt_restores_the_ecu_and_keeps_the_drivers_changes(
    bench: PersonalBench, tmp_path: Path
) -> None:
    config_before = bench.ecu.snapshot()
    bench.on_step = lambda n: driver_changes(bench, PersonalStore(bench.personal_path)) if n == 2 else None
    bench.cut_at = 2  # the power goes during the second step, after the first change was written
    await bench.engine.receive(bench.order(changes={**CHANGES, "navigation.map_region": "EU-2027"}))
    task = asyncio.create_task(bench.engine.run())
    assert await settle(lambda: bench.power_gone)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert bench.reports == [], "no result: the process died mid-attempt"
    assert (tmp_path / "ecu.cbor").read_bytes() != config_before, "the first change was on disk"

    # The next boot: a fresh process reads everything from disk, and recovery runs first.
    bench.ecu = EcuConfiguration(tmp_path / "ecu.cbor", load_key_specs())
    bench.ecu.load()
    bench.personal = PersonalStore(bench.personal_path)
    bench.personal.load()
    bench.engine = await bench.new_engine()
    assert (bench.reports[-1].body["status"], bench.reports[-1].body["code"]) == ("rolled_back", "agent_restarted")
    assert (tmp_path / "ecu.cbor").read_bytes() == config_before
    assert_the_drivers_changes_are_kept(bench)
    journal = MeasureJournal(bench.journal_path)
    journal.load()
    assert journal.in_progress is None


def _old_journal(bench: PersonalBench, *, personal: bytes) -> None:
    """A journal as an agent before this fix wrote it mid-attempt: with a personal snapshot."""
    bench.journal_path.write_bytes(
        cbor2.dumps(
            {
                "seen": {"M-42": {"attempt": 1, "applied": False}},
                "in_progress": {
                    "measure_id": "M-42",
                    "attempt": 1,
                    "config": bench.ecu.snapshot(),
                    "personal": personal,
                },
            },
            canonical=True,
        )
    )


async def test_an_old_journals_personal_snapshot_is_never_restored(bench: PersonalBench) -> None:
    config_before = bench.ecu.snapshot()
    _old_journal(bench, personal=bench.personal.snapshot())
    await bench.ecu.set("gateway.firewall_rules", "half-written")
    await driver_changes(bench, PersonalStore(bench.personal_path))
    await bench.new_engine()
    assert bench.ecu.snapshot() == config_before
    assert bench.reports[-1].body["code"] == "agent_restarted"
    assert_the_drivers_changes_are_kept(bench)
    assert b"Anna" not in bench.journal_path.read_bytes(), "the old snapshot is gone from the journal"


async def test_a_rollback_after_an_owner_change_never_brings_the_sellers_data_back(bench: PersonalBench) -> None:
    """AGB 7.2: `tcu owner-change` during a measure (or before the boot that recovers one) wipes the
    seller's profiles and account for good; neither the rollback nor the recovery restores them."""

    async def step(n: int) -> None:
        if n == 2:  # the car is sold mid-measure, and driven off
            await PersonalStore(bench.personal_path).owner_change()
            bench.set_signal("Vehicle.Mode", "driving")

    bench.on_step = step
    result = await bench.run(bench.order())
    assert (result["status"], result["code"]) == ("rolled_back", "vehicle_state_not_allowed")
    assert bench.on_disk() == PersonalData(owner=1)

    # The same after a crash: a journal written before the owner change, holding the seller's data.
    await bench.personal.save(replace(bench.personal.current(), paired_accounts=(ACCOUNT,)).with_profile(BEN))
    _old_journal(bench, personal=bench.personal.snapshot())
    await PersonalStore(bench.personal_path).owner_change()
    await bench.new_engine()
    assert bench.on_disk() == PersonalData(owner=2)
    assert b"Ben" not in bench.personal_path.read_bytes() + bench.journal_path.read_bytes()
