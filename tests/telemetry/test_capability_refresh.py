"""The capability report follows the signals: the boot report precedes the first readings.

The watcher's steps (`on_signal`, `settled`, `poll_consents`) are driven by hand: no real waiting, so the
exact counts hold however slow the machine. One test runs the loop itself, waiting for a report to happen.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from tcu.telemetry.capabilities import NewSignalWatch
from tcu.vehicle.state import Signal
from telematics_wire.catalogue import Category

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CATEGORIES = {"Vehicle.Speed": Category.POSITION, "Vehicle.CurrentLocation.Latitude": Category.POSITION}


class _Policy:
    def category_of(self, path: str) -> Category:
        return CATEGORIES.get(path, Category.VEHICLE_STATUS)


def _signal(path: str) -> Signal:
    return Signal(path=path, value=1, timestamp=NOW, source="test")


def test_first_readings_of_a_new_category_give_one_new_report() -> None:
    reports: list[int] = []
    watch = NewSignalWatch(policy=_Policy(), report=lambda: reports.append(1))  # type: ignore[arg-type]
    watch.reported([])  # the boot report: nothing read yet
    for path in ("Vehicle.Speed", "Vehicle.CurrentLocation.Latitude", "Vehicle.TraveledDistance"):
        watch.on_signal(_signal(path))
    assert reports == []  # nothing before the settle time is over
    assert watch.settled()
    assert reports == [1]  # one report for the start, not one per signal
    assert not watch.settled()
    watch.reported(["Vehicle.Speed", "Vehicle.TraveledDistance"])
    watch.on_signal(_signal("Vehicle.Speed"))
    watch.on_signal(_signal("Vehicle.Body.Lights.IsLowBeamOn"))  # new path, category already reported
    assert not watch.settled()
    assert reports == [1]
    watch.on_signal(_signal("Vehicle.Body.Lights.IsLowBeamOn"))  # a path seen before is not new again
    assert not watch.settled()


def test_a_changed_privacy_setting_sends_the_capability_report_again() -> None:
    consents = dict.fromkeys(Category, True)
    reports: list[int] = []
    watch = NewSignalWatch(
        policy=_Policy(),  # type: ignore[arg-type]
        report=lambda: reports.append(1),
        consents=lambda: consents,
    )
    watch.reported([])  # the boot report, under everything allowed
    assert not watch.poll_consents()
    assert reports == []  # nothing changed: no report
    consents[Category.POSITION] = False  # `tcu privacy position block`
    assert watch.poll_consents()
    assert not watch.poll_consents()
    assert reports == [1]  # once per change, not once per poll
    consents[Category.POSITION] = True
    assert watch.poll_consents()
    assert reports == [1, 1]


async def test_the_watch_loop_reports_new_signals_and_changed_settings() -> None:
    consents = dict.fromkeys(Category, True)
    reported = asyncio.Queue[str]()
    watch = NewSignalWatch(
        policy=_Policy(),  # type: ignore[arg-type]
        report=lambda: reported.put_nowait("report"),
        settle_s=0.01,
        consents=lambda: consents,
        poll_s=0.01,
    )
    watch.reported([])
    runner = asyncio.create_task(watch.run())
    try:
        watch.on_signal(_signal("Vehicle.Speed"))
        async with asyncio.timeout(20):
            await reported.get()
        consents[Category.POSITION] = False
        async with asyncio.timeout(20):
            await reported.get()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
