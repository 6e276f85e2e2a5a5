"""The agent config a scenario run writes: the scenario's vehicle, its devices' ports, the bench's uplink."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hil.config_toml import TomlValue, toml_table
from hil.scenario import Scenario
from tcu.config import QueueConfig, UplinkConfig
from tcu.virtual_time import loop_scale

if TYPE_CHECKING:
    from hil.run_context import Bench

MODEM = "modem"  # the eCall modem: a device of every legal-eCall scenario, not a telematics source
# A bench retries within seconds, not the field's minutes.
UPLINK = UplinkConfig(reconnect_base_s=0.2, reconnect_cap_s=2.0, ack_timeout_s=10)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioAgentConfig:
    """`can_dbc`/`can_mapping`: the CAN database and mapping for `[sources.can]` (`tcu-hil run --dbc/
    --mapping`, else the scenario's `[vehicle]` ones)."""

    scenario: Scenario
    can_dbc: Sequence[Path] = ()
    can_mapping: Path | None = None
    ng_proxy: str | None = None  # "host:port": `[ecall.ng] proxy`, where the NG eCall's SIP goes (the bench's NG PSAP)

    def write(self, bench: Bench, *, drain_only: bool = False, queue: QueueConfig | None = None) -> Path:
        """The scenario's agent config in the bench folder; `drain_only`: no sources, it only sends what
        is queued (a config of its own); `queue`: a `[queue]` table (the disk_full step's cap)."""
        scenario = self.scenario
        ports = {name: device.path for name, device in bench.devices.items()} | dict(bench.real_ports)
        sources = (
            {} if drain_only else {name: self._source(name, port) for name, port in ports.items() if name != MODEM}
        )
        ecall: dict[str, TomlValue] = {"legal_ecall": MODEM in ports}
        if MODEM in ports:
            ecall["port"] = ports[MODEM]
        ng = "" if MODEM not in ports or self.ng_proxy is None else toml_table("ecall.ng", {"proxy": self.ng_proxy})
        return bench.layout.write_agent_config(
            scenario.vin,
            name=f"agent-{scenario.vin}-drain.toml" if drain_only else None,
            simulation=not scenario.devices and not drain_only,
            telemetry_interval_s=scenario.telemetry_interval_s,
            uplink=UPLINK,
            queue=queue,
            sources={} if drain_only else sources,
            # A tunnel black-holes the link: keepalive is how the agent notices. paho and Mosquitto keep
            # real time, so the keepalive is as short as MQTT allows on a fast bench.
            keepalive_s=max(1, round(3 / loop_scale())),
            ecall=ecall | scenario.ecall_settings,
            extra=ng,
        )

    def _source(self, name: str, port: str) -> dict[str, TomlValue]:
        """`[sources.<name>]`; the CAN one with the `dbc`/`mapping` files (absolute: the agent's config
        lives elsewhere)."""
        table: dict[str, TomlValue] = {"port": port}
        if name == "can" and self.can_dbc:
            table["dbc"] = [str(path.resolve()) for path in self.can_dbc]
        if name == "can" and self.can_mapping is not None:
            table["mapping"] = str(self.can_mapping.resolve())
        return table
