"""The tcu_hil pytest plugin, used exactly as a bench team would: no conftest, only the fixtures."""

from __future__ import annotations

from backend_stub.store import BackendStore
from hil.pytest_plugin import RunningBackend
from tcu.app import Agent


async def test_fixtures_give_a_running_bench(tcu_agent: Agent, tcu_backend: RunningBackend) -> None:
    vin = tcu_agent.config.vin

    def speed_stored(store: BackendStore) -> bool:
        return any(v.path == "Vehicle.Speed" for v in store.last_values(vin))

    await tcu_backend.wait_for(speed_stored)
    assert tcu_agent.session.stats.connected
    assert tcu_backend.store.vehicles()[0].vin == vin


async def test_virtual_vehicle_fixture_feeds_an_agent(tcu_virtual_vehicle, tcu_bench, tcu_backend) -> None:  # type: ignore[no-untyped-def]
    import asyncio  # noqa: PLC0415

    from tcu.config import load_agent_config  # noqa: PLC0415

    config = tcu_bench.add_vehicle(
        "WVWZZZ1JZXW000002", simulation=False, telemetry_interval_s=0.2, extra=tcu_virtual_vehicle.sources_toml()
    )
    agent = Agent(load_agent_config(config, env={}))
    task = asyncio.create_task(agent.run())
    try:
        await tcu_backend.wait_for(
            lambda store: (
                {v.path for v in store.last_values("WVWZZZ1JZXW000002")}
                >= {"Vehicle.Powertrain.CombustionEngine.Speed", "Vehicle.Mode", "Vehicle.CurrentLocation.Latitude"}
            )
        )
    finally:
        task.cancel()
