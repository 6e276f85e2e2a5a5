"""BenchLayout.add_vehicles: many vehicles enrolled in one go, each as add_vehicle would have it."""

from __future__ import annotations

from pathlib import Path

from backend_stub.store import BackendStore
from hil.layout import BenchLayout, vin_for
from tcu.config import load_agent_config
from telematics_wire.keys import load_private_key


def test_each_vehicle_added_together_is_enrolled_with_its_own_key_and_has_a_loadable_config(tmp_path: Path) -> None:
    layout = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1883")
    layout.create_backend()
    vins = [vin_for(index) for index in range(3)]
    configs = layout.add_vehicles(iter(vins), telemetry_interval_s=2.0)  # any iterable, read once
    single = layout.add_vehicle(vin_for(3), telemetry_interval_s=2.0)
    assert configs == [layout.agent_config(vin) for vin in vins]
    store = BackendStore(tmp_path / "backend.sqlite3", read_only=True)
    try:
        for vin, path in [*zip(vins, configs, strict=True), (vin_for(3), single)]:
            config = load_agent_config(path, env={})
            assert (config.vin, config.telemetry.interval_s) == (vin, 2.0)
            # The backend opens this vehicle's records with the key the vehicle seals them with.
            assert store.public_key(vin) == bytes(load_private_key(config.keys.vehicle_private_key).public_key)
    finally:
        store.close()
