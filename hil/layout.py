"""A bench folder: backend and vehicle keys, `backend.toml`, one `agent-<VIN>.toml` per vehicle.

The demo, the scenarios, the tests and the benchmarks all lay out a bench the same way, with the
same files a person would write by hand for a real bench (see README), so what they test is what
users run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from tcu.clock import SystemClock
from tcu.keys import load_public_key, write_box_keypair, write_signing_keypair

DEMO_VIN = "WMWZZZ3CZ2E123456"


def vin_for(index: int) -> str:
    """Deterministic distinct VINs for fleets: WTCZZZ + 11 digits (no I, O or Q, as ISO 3779 wants)."""
    return f"WTCZZZ{index:011d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchLayout:
    root: Path
    broker_url: str
    protocol: Literal["5", "3.1.1"] = "5"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def backend_config(self) -> Path:
        return self.root / "backend.toml"

    def agent_config(self, vin: str) -> Path:
        return self.root / f"agent-{vin}.toml"

    def data_dir(self, vin: str) -> Path:
        return self.root / "vehicles" / vin

    def create_backend(self, *, username: str | None = None, password: str | None = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_box_keypair(self.keys, "backend")
        write_signing_keypair(self.keys, "backend")
        self.backend_config.write_text(
            'database = "backend.sqlite3"\n\n'
            "[keys]\n"
            'private_key = "keys/backend.x25519.key"\n'
            'signing_key = "keys/backend.ed25519.key"\n\n' + self._broker_section(username, password)
        )
        self.backend_config.chmod(0o600)  # it may hold the broker password: refused if others can read it

    def _broker_section(self, username: str | None, password: str | None, keepalive_s: int | None = None) -> str:
        text = f'[broker]\nurl = "{self.broker_url}"\nprotocol = "{self.protocol}"\n'
        if username is not None:
            text += f'username = "{username}"\npassword = "{password or ""}"\n'
        if keepalive_s is not None:
            text += f"keepalive_s = {keepalive_s}\n"
        return text

    def add_vehicle(
        self,
        vin: str,
        *,
        simulation: bool = True,
        telemetry_interval_s: float = 1.0,
        extra: str = "",
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int | None = None,
        ecall: str = "[ecall]\nlegal_ecall = false\n",
    ) -> Path:
        """Create the vehicle's keys and config and enrol it with the backend; returns the config path."""
        _, public = write_box_keypair(self.keys, vin)
        store = BackendStore(self.root / "backend.sqlite3")
        try:
            store.enroll(vin, bytes(load_public_key(public)), SystemClock().now())
        finally:
            store.close()
        return self.write_agent_config(
            vin,
            simulation=simulation,
            telemetry_interval_s=telemetry_interval_s,
            extra=extra,
            username=username,
            password=password,
            keepalive_s=keepalive_s,
            ecall=ecall,
        )

    def set_legal_ecall(self, vin: str, legal: bool, *, first_registration: date | None = None) -> None:
        """Tell the backend whether the vehicle is equipped with legal eCall (as `enroll --legal-ecall`)
        and when it was first registered (default: today, a new car)."""
        store = ProvisioningStore(self.root / "backend.sqlite3")
        try:
            store.set_legal_ecall(vin, legal)
            store.record_build(vin, today=first_registration or SystemClock().now().date())
        finally:
            store.close()

    def write_agent_config(
        self,
        vin: str,
        *,
        name: str | None = None,
        simulation: bool = True,
        telemetry_interval_s: float = 1.0,
        extra: str = "",
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int | None = None,
        ecall: str = "[ecall]\nlegal_ecall = false\n",
    ) -> Path:
        """(Re)write a config for an enrolled vehicle; `name` gives a second config of the same car.

        `ecall` is the `[ecall]` section: by default a vehicle without legal eCall and without a modem
        (an absent section would be presumed legal eCall, and the agent would refuse to start).
        """
        config = self.root / name if name is not None else self.agent_config(vin)
        config.write_text(
            f'vin = "{vin}"\n'
            f'data_dir = "vehicles/{vin}"\n\n'
            "[keys]\n"
            f'vehicle_private_key = "keys/{vin}.x25519.key"\n'
            'backend_public_key = "keys/backend.x25519.pub"\n'
            'backend_verify_key = "keys/backend.ed25519.pub"\n\n'
            + self._broker_section(username, password, keepalive_s)
            + f"\n[telemetry]\ninterval_s = {telemetry_interval_s}\n"
            + f"\n[simulation]\nenabled = {'true' if simulation else 'false'}\n"
            + f"\n{ecall}"
            + extra
        )
        config.chmod(0o600)  # it may hold the broker password: refused if others can read it
        return config
