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
