"""MQTT topic names. Per vehicle and per direction, so a broker ACL can confine each vehicle's
credentials to its own subtree: `pattern write vehicles/%u/up/#`, `pattern read vehicles/%u/down/#`."""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "vehicles"
UP_WILDCARD = f"{ROOT}/+/up/#"


@dataclass(frozen=True, slots=True)
class VehicleTopics:
    vin: str

    @property
    def records(self) -> str:
        return f"{ROOT}/{self.vin}/up/records"

    @property
    def status(self) -> str:
        return f"{ROOT}/{self.vin}/up/status"

    @property
    def downlink(self) -> str:
        return f"{ROOT}/{self.vin}/down/#"

    def down(self, kind: str) -> str:
        return f"{ROOT}/{self.vin}/down/{kind}"


def split_topic(topic: str) -> tuple[str, str, str] | None:
    """`vehicles/{vin}/{up|down}/{kind}` → (vin, direction, kind); None for anything else."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[2] not in ("up", "down") or not parts[1] or not parts[3]:
        return None
    return parts[1], parts[2], parts[3]
