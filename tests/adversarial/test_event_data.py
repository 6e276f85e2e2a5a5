"""Issue 12 item 10 under hostile input: any sequence of door/lock readings, any service readings (NaN,
infinities, bools, huge numbers) — events stay few, consistent and never more than the rules allow."""

from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcu.clock import ManualClock
from tcu.telemetry.data_policy import Verdict
from tcu.telemetry.events import VehicleEvents
from tcu.vehicle.state import Signal, VehicleState
from telematics_wire.catalogue import Catalogue, Category
from telematics_wire.records import Record
from telematics_wire.signal_values import SignalValue

CATALOGUE = Catalogue.load()
LOCK = "Vehicle.Body.CentralLock.State"
DISTANCE = "Vehicle.Service.DistanceToService"


class _AllowAll:
    def category_of(self, path: str) -> Category:
        return CATALOGUE.category_of(path)

    def verdict(self, category: Category) -> Verdict:
        return Verdict(True, "allowed")


def _events(tmp_path: Path) -> tuple[VehicleEvents, VehicleState, ManualClock, list[Record]]:
    clock, state, records = ManualClock(), VehicleState(), []
    # A directory per example: the writer of the last example's record may still be at work on its own.
    store = Path(tempfile.mkdtemp(dir=tmp_path)) / "service_calls.json"
    events = VehicleEvents(
        state=state, clock=clock, gate=_AllowAll(), report=records.append, store_path=store, debounce_s=1.0
    )
    events.load()
    state.subscribe(events.on_signal)
    return events, state, clock, records


def _read(state: VehicleState, clock: ManualClock, path: str, value: SignalValue) -> None:
    state.update(Signal(path=path, value=value, timestamp=clock.now(), source="fuzz", monotonic=clock.monotonic()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from(["UNLOCKED", "LOCKED", "DOUBLE_LOCKED"]), st.floats(min_value=0.0, max_value=5.0)),
        max_size=200,
    )
)
def test_lock_events_are_debounced_changes_and_never_a_storm(tmp_path: Path, readings: list[tuple[str, float]]) -> None:
    events, state, clock, records = _events(tmp_path)
    for value, pause in readings:
        _read(state, clock, LOCK, value)
        clock.advance(pause)
        events.tick()
    for _ in range(70):  # quiet for a minute: what was held back comes out
        clock.advance(1.0)
        events.tick()
    sent = [(r.created, r.body) for r in records]
    for _, body in sent:
        assert body["value"] != body["previous"]
    for earlier, later in itertools.pairwise(sent):
        assert later[1]["previous"] == earlier[1]["value"]  # each event follows on from the last one sent
    times = [created.timestamp() for created, _ in sent]
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 60.0) <= 6
    if readings:
        # After the quiet minute the backend knows the state the lock settled in (or was never told of a change).
        told = sent[-1][1]["value"] if sent else readings[0][0]
        assert told == readings[-1][0]


_READINGS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_READINGS, max_size=100))
def test_a_service_is_called_at_most_once_per_due_date(tmp_path: Path, readings: list[SignalValue]) -> None:
    _, state, clock, records = _events(tmp_path)
    due_dates, due = 0, False
    for value in readings:
        _read(state, clock, DISTANCE, value)
        if isinstance(value, bool) or not math.isfinite(value):
            continue  # not a reading: neither due nor serviced
        if value <= 0 and not due:
            due_dates += 1
        due = value <= 0
    assert len(records) == due_dates
