"""Issue 12 item 10 end to end: the agent pushes event data (service call, parked position, door and lock)
through a real Mosquitto to the backend, once each; a privacy setting changed by `tcu privacy` sends
the capability report again."""

from __future__ import annotations

from typing import Any

from backend_stub.store import BackendStore
from hil.layout import BenchLayout
from tcu.app import Agent
from tcu.services.personal import PersonalStore
from tcu.vehicle.state import Signal
from telematics_wire.catalogue import Category
from telematics_wire.signal_values import SignalValue
from tests.conftest import VIN, eventually
from tests.integration.conftest import FAST_UPLINK, running_agent

EVENT_TYPES = ("service_call", "parked_position", "door", "lock")


def _read(agent: Agent, path: str, value: SignalValue) -> None:
    agent.state.update(
        Signal(path=path, value=value, timestamp=agent.clock.now(), source="bench", monotonic=agent.clock.monotonic())
    )


def _events(store: BackendStore, *types: str) -> list[dict[str, Any]]:
    return [r.body for r in store.records(VIN, kind="event") if r.body.get("type") in types]


async def test_the_backend_receives_each_event_once(layout: BenchLayout, backend_store: BackendStore) -> None:
    # No simulated drive (the test is the car); the first snapshot is a minute away: events are pushed.
    config = layout.add_vehicle(VIN, simulation=False, telemetry_interval_s=60.0, uplink=FAST_UPLINK)
    async with running_agent(config) as agent:
        await eventually(lambda: agent.session.stats.connected, what="agent online")
        # A drive that ends with the service due, then parking and leaving the car.
        for path, value in (
            ("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", False),
            ("Vehicle.Body.CentralLock.State", "UNLOCKED"),
            ("Vehicle.Mode", "driving"),
            ("Vehicle.CurrentLocation.Latitude", 48.137154),
            ("Vehicle.CurrentLocation.Longitude", 11.576124),
            ("Vehicle.Speed", 42.0),
            ("Vehicle.TraveledDistance", 20_000.0),
            ("Vehicle.Service.DistanceToService", 0.1),
            ("Vehicle.Service.DistanceToService", -0.1),
            ("Vehicle.Service.DistanceToService", -0.2),
            ("Vehicle.Speed", 0.0),
            ("Vehicle.Mode", "parked"),
            ("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", True),
        ):
            _read(agent, path, value)
        await eventually(lambda: len(_events(backend_store, "door")) == 1, what="door opened")
        _read(agent, "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", False)
        await eventually(lambda: len(_events(backend_store, "door")) == 2, what="door closed")
        _read(agent, "Vehicle.Body.CentralLock.State", "LOCKED")
        await eventually(lambda: len(_events(backend_store, "lock")) == 1, what="car locked")

        (call,) = _events(backend_store, "service_call")
        assert call["item"] == "service"
        assert call["context"]["Vehicle.TraveledDistance"]["v"] == 20_000.0
        (parked,) = _events(backend_store, "parked_position")
        assert parked["position"]["Vehicle.CurrentLocation.Latitude"]["v"] == 48.137154
        assert [(d["value"], d["previous"]) for d in _events(backend_store, "door")] == [(True, False), (False, True)]
        assert _events(backend_store, "lock")[0]["value"] == "LOCKED"
        assert backend_store.records(VIN, kind="telemetry") == []  # pushed as events, not with a snapshot

        # The customer blocks position data in the car: the backend learns it from a new capability report.
        reports = len(_events(backend_store, "capabilities"))
        store = PersonalStore(agent.config.personal_path)
        await store.save(store.load().with_consent(Category.POSITION, False))
        await eventually(lambda: len(_events(backend_store, "capabilities")) > reports, what="capability report")
        latest = _events(backend_store, "capabilities")[-1]
        assert latest["categories"]["position"]["transmitted"] is False
        assert latest["categories"]["position"]["reason"] == "blocked by the customer's privacy setting"
        # ... and the next parking is not reported.
        for path, value in (("Vehicle.Mode", "driving"), ("Vehicle.Speed", 30.0), ("Vehicle.Mode", "parked")):
            _read(agent, path, value)
        _read(agent, "Vehicle.Body.CentralLock.State", "UNLOCKED")
        await eventually(lambda: len(_events(backend_store, "lock")) == 2, what="unlocked")
        assert len(_events(backend_store, "parked_position")) == 1
