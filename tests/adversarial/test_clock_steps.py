"""Wall-clock steps on the car: readings after the step are stored, reported and marked good.

A car's wall clock jumps: the RTC is read at boot, then GNSS or NTP time corrects it, by an hour (a
time zone written as UTC) or by days (an RTC that lost its battery). Ordering readings by wall time
froze every signal for as long as the clock had been set back (issue 10, item 11: 150 records carried
the pre-step speed and odometer as good values). Readings are ordered by the monotonic clock; the wall
clock only stamps them. `ManualClock.step_wall` moves the wall clock without time passing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.devices.nmea_sim import NmeaSimulator
from tcu.clock import ManualClock
from tcu.sources.nmea import NmeaStream
from tcu.sources.nmea_fix import LATITUDE
from tcu.sources.nmea_reader import NmeaConfig, NmeaReader
from tcu.sources.nmea_track import GnssPosition, GnssTrack
from tcu.sources.simulated import SimulatedVehicle
from tcu.sources.slcan import CanFrame, SlcanStream, format_frame
from tcu.sources.slcan_reader import SlcanConfig, SlcanReader
from tcu.telemetry.snapshots import SnapshotTelemetry
from tcu.uplink.outbox import Outbox
from tcu.vehicle.drive_cycle import DriveCycle
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.records import Record, to_millis
from tests.ecall.test_service import ecall_rig
from tests.sources.test_elm327_client import MAPPING, STOPPED, Rig, assert_matches, running

HOUR, DAY = 3600.0, 86400.0
# Back an hour, forward a day, then the forward step undone: each must leave the signals flowing.
STEPS = (-HOUR, DAY, -DAY)
SPEED, ODOMETER = "Vehicle.Speed", "Vehicle.TraveledDistance"


class _Queued:
    """The outbox as the snapshot sees it: what was put, in order."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def put(self, record: Record) -> None:
        self.records.append(record)


async def test_simulated_readings_after_each_step_are_stored_reported_and_good() -> None:
    clock, state, cycle = ManualClock(), VehicleState(), DriveCycle()
    vehicle = SimulatedVehicle(state=state, clock=clock, cycle=cycle)
    queued = _Queued()
    telemetry = SnapshotTelemetry(
        state=state, outbox=cast(Outbox, queued), clock=clock, interval_s=1.0, on_queued=lambda: None
    )
    clock.advance(20.0)  # moving: speed and odometer change from one reading to the next
    vehicle.update()
    for step in STEPS:
        clock.advance(10.0)
        clock.step_wall(step)
        vehicle.update()
        sample = cycle.at(clock.monotonic())
        assert await telemetry.take() is not None
        sent = queued.records[-1].body["signals"]
        for path, value in ((SPEED, sample.speed_kmh), (ODOMETER, sample.odometer_km)):
            stored = state.get(path)
            assert stored is not None
            assert (stored.value, stored.timestamp, stored.quality) == (value, clock.now(), Quality.GOOD), step
            assert sent[path] == {"v": value, "t": to_millis(clock.now())}, f"{path} after a {step:+.0f} s step"


def test_a_source_going_away_after_a_step_back_marks_its_signals_stale() -> None:
    clock, state = ManualClock(), VehicleState()
    SimulatedVehicle(state=state, clock=clock).update()
    clock.step_wall(-HOUR)
    assert SPEED in state.mark_stale("simulation", clock)
    stale = state.get(SPEED)
    assert stale is not None
    assert (stale.quality, stale.timestamp) == (Quality.STALE, clock.now()), "a dead source must not stay good"


def test_a_reading_taken_earlier_by_the_monotonic_clock_is_still_ignored() -> None:
    """What the ordering is for: a late delivery must not overwrite a newer reading, wall time aside."""
    state, wall = VehicleState(), datetime(2026, 1, 1, tzinfo=UTC)
    state.update(Signal(path=SPEED, value=50.0, timestamp=wall, source="can", monotonic=10.0))
    state.update(Signal(path=SPEED, value=30.0, timestamp=wall.replace(year=2027), source="can", monotonic=9.0))
    assert state.value(SPEED) == 50.0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=5.0),  # time passing
            st.floats(min_value=-2 * DAY, max_value=2 * DAY),  # the wall clock stepping
            st.sampled_from([SPEED, ODOMETER]),
            st.integers(min_value=0, max_value=300),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_latest_reading_always_wins_whatever_the_wall_clock_does(
    events: list[tuple[float, float, str, int]],
) -> None:
    clock, state = ManualClock(), VehicleState()
    seen: list[Signal] = []
    state.subscribe(seen.append)
    for passing, step, path, value in events:
        clock.advance(passing)
        clock.step_wall(step)
        reading = Signal(path=path, value=value, timestamp=clock.now(), source="t", monotonic=clock.monotonic())
        state.update(reading)
        assert state.get(path) == reading
        assert seen[-1] == reading, "subscribers (the eCall triggers, telemetry) hear every reading"


def test_can_readings_after_a_step_back_are_stored() -> None:
    clock, state = ManualClock(), VehicleState()
    reader = SlcanReader(SlcanConfig(port="/dev/null"), state=state, clock=clock)

    def speed_frame(kmh: float, counter: int) -> bytes:
        raw = round(kmh * 100)
        return format_frame(CanFrame(can_id=0xC1, data=bytes([raw & 0xFF, raw >> 8, counter, 0])))

    reader.handle(SlcanStream().feed(speed_frame(80.0, 1)))
    for counter, step in enumerate(STEPS, start=2):
        clock.advance(0.02)
        clock.step_wall(step)
        reader.handle(SlcanStream().feed(speed_frame(20.0 + counter, counter)))
        stored = state.get(SPEED)
        assert stored is not None
        assert (stored.value, stored.timestamp, stored.quality) == (20.0 + counter, clock.now(), Quality.GOOD)


def test_gnss_readings_after_a_step_back_are_stored_and_the_fix_keeps_its_monotonic_time() -> None:
    clock = ManualClock(wall=datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    state = VehicleState()
    reader = NmeaReader(NmeaConfig(port="/dev/null"), state=state, clock=clock)
    sim = NmeaSimulator(start_utc=clock.now())
    reader.handle(NmeaStream().feed(sim.epoch(30.0)))
    first = state.value(LATITUDE)
    clock.advance(60.0)
    clock.step_wall(-HOUR)
    reader.handle(NmeaStream().feed(sim.epoch(90.0)))
    stored = state.get(LATITUDE)
    assert stored is not None
    assert stored.value != first
    assert (stored.timestamp, stored.quality) == (clock.now(), Quality.GOOD)
    latest = reader.track.latest
    assert latest is not None
    assert latest.received == clock.monotonic()


async def test_obd_readings_after_a_step_back_are_stored(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    async with rig.sim, running(rig.client):
        await rig.until(rig.all_good)
        rig.clock.step_wall(-HOUR)
        rig.elapsed = STOPPED  # cruising before the step, standing at a light after it
        await rig.until(lambda: all(rig.fresh(m.path) for m in MAPPING.pids))
        assert rig.state.value(SPEED) == 0.0
        assert_matches(rig.state, DriveCycle().at(STOPPED))


@pytest.mark.parametrize("step", [DAY, -HOUR])
async def test_a_position_read_just_before_a_wall_step_is_trusted_by_the_ecall(tmp_path: Path, step: float) -> None:
    clock = ManualClock()
    track = GnssTrack()
    track.add(GnssPosition(timestamp=clock.now(), latitude=48.1, longitude=11.5, received=clock.monotonic()))
    async with ecall_rig(tmp_path, clock=clock, track=track) as rig:
        clock.advance(2.0)
        clock.step_wall(step)
        rig.crash()
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert (msd.latitude_deg, msd.position_can_be_trusted) == (pytest.approx(48.1), True)


async def test_a_position_from_the_vehicle_state_is_judged_by_its_monotonic_age(tmp_path: Path) -> None:
    clock = ManualClock()
    async with ecall_rig(tmp_path, clock=clock) as rig:
        for path, value in ((LATITUDE, 52.52), ("Vehicle.CurrentLocation.Longitude", 13.40)):
            reading = Signal(path=path, value=value, timestamp=clock.now(), source="gnss", monotonic=clock.monotonic())
            rig.state.update(reading)
        clock.advance(1.0)
        clock.step_wall(DAY)
        rig.crash()
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert (msd.latitude_deg, msd.position_can_be_trusted) == (pytest.approx(52.52), True)
