"""Remote measures end to end, sans I/O: the backend's scheduler signs, the vehicle's engine answers,
the answer is booked by the backend — including refusals, a full disk on the vehicle, and orders the
backend must not sign at all."""

from __future__ import annotations

import asyncio
import errno
import os
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import tcu.persist
from backend_stub.errors import MeasureRefusedError
from backend_stub.measure_store import MeasureState, MeasureStore
from backend_stub.measures import MeasureScheduler
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from tcu.services.ecu_config import EcuConfiguration
from telematics_wire.ecu_keys import load_key_specs
from telematics_wire.measure_plan import Fault, one_step_per_change
from telematics_wire.records import ReceivedRecord, RecordKind
from telematics_wire.vehicle_mode import VehicleMode
from tests.conftest import VIN
from tests.services.test_measures import KEY, Bench
from tests.settle import settle


class Disk:
    """tcu.persist's view of the OS with a switch: when `full`, every write fails with ENOSPC, as on a
    real full filesystem (write_atomic's own error handling runs)."""

    def __init__(self) -> None:
        self.full = False

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    disk = Disk()
    monkeypatch.setattr(tcu.persist, "os", disk)
    return disk


class Link:
    """One backend scheduler and one vehicle, their clocks separate (a vehicle's clock may be off)."""

    def __init__(self, tmp_path: Path, clock: ManualClock, car_clock: ManualClock | None = None) -> None:
        self.clock = clock
        self.car = Bench(tmp_path / "car", car_clock or clock)
        self.store = MeasureStore(tmp_path / "backend.sqlite3")
        self.scheduler = MeasureScheduler(
            self.store,
            signing_key=KEY,
            clock=clock,
            vehicle_mode=lambda _vin: "parked",
            online=lambda _vin: True,
            backoff=Backoff(base_s=60, cap_s=600, jitter=0),
            attempt_timeout_s=900,
            rng=random.Random(1),
        )
        self.booked = 0

    async def start(self) -> Link:
        await self.car.start()
        return self

    def send(self, measure_id: str = "M1", **changes: object) -> None:
        changes = changes or {"gateway.firewall_rules": "v13"}
        service = load_key_specs()[next(iter(changes))].owner or ""  # the fault of the first key's service
        self.scheduler.send(
            vin=VIN,
            measure_id=measure_id,
            fault=Fault(ref=f"TICKET-{measure_id}", service=service),
            steps=one_step_per_change(changes, expected_ms=1000),  # type: ignore[arg-type]
            allowed_states=(VehicleMode.PARKED,),
        )

    async def tick(self) -> list[dict[str, Any]]:
        """One scheduler tick; the vehicle runs what it accepted; its answers are booked. Returns them."""
        for order in self.scheduler.tick():
            assert order.topic == f"vehicles/{VIN}/down/measure"
            await self.car.engine.receive(order.payload)  # must not raise, whatever it holds
        engine = asyncio.create_task(self.car.engine.run())
        try:
            await settle(lambda: self.car.engine.idle)
        finally:
            engine.cancel()
        with pytest.raises(asyncio.CancelledError):
            await engine  # the engine was still running: nothing crashed it
        answers = [dict(r.body) for r in self.car.reports[self.booked :]]
        for record in self.car.reports[self.booked :]:
            self.booked += 1
            self.scheduler.on_record(
                ReceivedRecord(
                    vin=VIN, seq=self.booked, kind=RecordKind.EVENT, created=record.created, body=record.body
                )
            )
        return answers

    def state(self, measure_id: str = "M1") -> tuple[str, str | None]:
        measure = self.store.get(measure_id)
        assert measure is not None
        return measure.state, measure.reason


@pytest.fixture
async def link(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Link]:
    link = await Link(tmp_path, clock).start()
    yield link
    link.store.close()


async def _older_firmware(link: Link, missing: str) -> None:
    """The vehicle's key table lacks a key the backend's has (older ECU firmware)."""
    specs = {k: v for k, v in load_key_specs().items() if k != missing}
    link.car.ecu = EcuConfiguration(link.car.journal_path.with_name("ecu.cbor"), specs)
    link.car.engine = await link.car.new_engine()


async def test_a_verified_order_the_vehicle_refuses_is_matched_abandoned_and_frees_the_vehicle(link: Link) -> None:
    await _older_firmware(link, "navigation.map_region")
    link.send("M1", **{"navigation.map_region": "EU-2027"})
    link.send("M2")

    [answer] = await link.tick()
    assert (answer["measure_id"], answer["attempt"], answer["code"]) == ("M1", 1, "unknown_key")
    state, reason = link.state("M1")
    assert state == MeasureState.ABANDONED
    assert "unknown_key" in (reason or "")
    assert [(a.attempt, a.status) for a in link.store.history("M1")] == [(1, "rejected")]
    # The vehicle's one attempt slot is free at once, not after the 900 s attempt timeout.
    [answer] = await link.tick()
    assert (answer["measure_id"], answer["status"]) == ("M2", "succeeded")
    assert link.state("M2")[0] == MeasureState.SUCCEEDED


async def test_an_order_past_its_deadline_on_the_vehicles_clock_is_booked_expired(
    tmp_path: Path, clock: ManualClock
) -> None:
    car_clock = ManualClock(wall=clock.now() + timedelta(days=8))  # the vehicle's clock runs ahead
    link = await Link(tmp_path, clock, car_clock).start()
    try:
        link.send()
        [answer] = await link.tick()
        assert (answer["measure_id"], answer["attempt"], answer["code"]) == ("M1", 1, "expired")
        assert link.state()[0] == MeasureState.EXPIRED
        assert link.store.open_attempt(VIN) is None
    finally:
        link.store.close()


async def test_an_order_arriving_on_a_full_disk_is_refused_and_the_backends_retry_gets_through(
    link: Link, disk: Disk
) -> None:
    link.send()
    disk.full = True
    [answer] = await link.tick()
    assert (answer["measure_id"], answer["attempt"], answer["status"], answer["code"]) == (
        "M1",
        1,
        "not_started",
        "storage",
    )
    assert "No space left on device" in answer["reason"]
    assert link.state()[0] == MeasureState.PENDING  # retried, not given up
    assert link.car.ecu.values["gateway.firewall_rules"] == "v12"

    for _ in range(3):  # the disk stays full: each retry is refused the same way, nothing crashes
        link.clock.advance(3600)
        [answer] = await link.tick()
        assert answer["code"] == "storage"
    disk.full = False
    link.clock.advance(3600)
    [answer] = await link.tick()
    assert (answer["attempt"], answer["status"]) == (5, "succeeded")
    assert link.state()[0] == MeasureState.SUCCEEDED
    assert link.car.ecu.values["gateway.firewall_rules"] == "v13"


async def test_a_disk_that_fills_during_an_attempt_rolls_it_back_and_the_next_boot_restores_the_files(
    link: Link, disk: Disk
) -> None:
    link.send(**{"gateway.firewall_rules": "v13", "gateway.ids_signatures": "2026-01"})

    def fill(step: int) -> None:
        disk.full = step == 2  # the first change is stored, the second cannot be

    link.car.on_step = fill
    [answer] = await link.tick()
    assert (answer["status"], answer["code"]) == ("rolled_back", "storage")
    assert "stored again at the next boot" in answer["reason"]
    assert link.car.ecu.values["gateway.firewall_rules"] == "v12"  # in force: restored
    assert link.state()[0] == MeasureState.PENDING

    disk.full = False
    link.car.on_step = lambda _step: None
    link.car.ecu.load()
    assert link.car.ecu.values["gateway.firewall_rules"] == "v13"  # on disk: still the half-applied state
    link.car.engine = await link.car.new_engine()  # reboot: recovery restores it from the journal
    link.car.ecu.load()
    assert link.car.ecu.values["gateway.firewall_rules"] == "v12"


async def test_the_backend_refuses_to_sign_what_the_vehicle_would_refuse(link: Link) -> None:
    with pytest.raises(MeasureRefusedError, match=r"key 'ecall\.enabled' belongs to the vehicle function 'ecall'"):
        link.send("M1", **{"gateway.firewall_rules": "v13", "ecall.enabled": False})
    assert link.store.get("M1") is None
    assert await link.tick() == []
