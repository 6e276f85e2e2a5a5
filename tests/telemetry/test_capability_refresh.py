"""The capability report follows the signals: the boot report precedes the first readings."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from tcu.services.catalogue import Category
from tcu.telemetry.capabilities import NewSignalWatch
from tcu.vehicle.state import Signal

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CATEGORIES = {"Vehicle.Speed": Category.POSITION, "Vehicle.CurrentLocation.Latitude": Category.POSITION}


class _Policy:
    def category_of(self, path: str) -> Category:
        return CATEGORIES.get(path, Category.VEHICLE_STATUS)


def _signal(path: str) -> Signal:
    return Signal(path=path, value=1, timestamp=NOW, source="test")


async def test_first_readings_of_a_new_category_give_one_new_report() -> None:
    reports: list[int] = []
    watch = NewSignalWatch(policy=_Policy(), report=lambda: reports.append(1), settle_s=0.01)  # type: ignore[arg-type]
    watch.reported([])  # the boot report: nothing read yet
    runner = asyncio.create_task(watch.run())
    try:
        for path in ("Vehicle.Speed", "Vehicle.CurrentLocation.Latitude", "Vehicle.TraveledDistance"):
            watch.on_signal(_signal(path))
        await asyncio.sleep(0.05)
        assert reports == [1]  # one report for the start, not one per signal
        watch.reported(["Vehicle.Speed", "Vehicle.TraveledDistance"])
        watch.on_signal(_signal("Vehicle.Speed"))
        watch.on_signal(_signal("Vehicle.Body.Lights.IsLowBeamOn"))  # new path, category already reported
        await asyncio.sleep(0.05)
        assert reports == [1]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_a_changed_privacy_setting_sends_the_capability_report_again() -> None:
    consents = dict.fromkeys(Category, True)
    reports: list[int] = []
    watch = NewSignalWatch(
        policy=_Policy(),  # type: ignore[arg-type]
        report=lambda: reports.append(1),
        consents=lambda: consents,
        poll_s=0.01,
    )
    watch.reported([])  # the boot report, under everything allowed
    runner = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(0.05)
        assert reports == []  # nothing changed: no report
        consents[Category.POSITION] = False  # `tcu privacy position block`
        await asyncio.sleep(0.05)
        assert reports == [1]  # once per change, not once per poll
        consents[Category.POSITION] = True
        await asyncio.sleep(0.05)
        assert reports == [1, 1]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
