"""The agent's module graph stays lean: a device's libraries load only when a config names the device.

Checked in a fresh interpreter that builds the `Agent` from a config, as `tcu run` does: python-can and
cantools (~15 MB, 0.3 s) only with a CAN source, pyserial and the ELM327/NMEA readers only with a
serial device, the eCall's modem stack only with an eCall, and asn1tools (~38 MB) never: the MSD codec
is written out (telematics_wire/msd_uper.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hil.layout import BenchLayout
from tests.conftest import VIN

ROOT = Path(__file__).resolve().parents[1]
# What a run without CAN, OBD, GNSS or eCall must not load: libraries (with their submodules) and agent
# modules (by name prefix: slcan covers slcan_reader and slcan_signals).
DEVICE_LIBRARIES = frozenset({"asn1tools", "pyparsing", "cantools", "can", "serial", "serial_asyncio_fast"})
DEVICE_MODULES = (
    "tcu.sources.slcan",
    "tcu.sources.can_",
    "tcu.sources.elm327",
    "tcu.sources.nmea_reader",
    "tcu.sources.modem_client",
    "tcu.ecall.service",
)
_PROBE = """
import sys
import tcu.cli
from tcu.app import Agent
from tcu.config import load_agent_config
from pathlib import Path
Agent(load_agent_config(Path(sys.argv[1])))
print("\\n".join(sorted(sys.modules)))
"""


def loaded_by_agent(config: Path) -> set[str]:
    """Every module a fresh interpreter holds after building the agent for `config`."""
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(config)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(run.stdout.split())


def device_modules(loaded: set[str]) -> list[str]:
    return sorted(name for name in loaded if name.split(".")[0] in DEVICE_LIBRARIES or name.startswith(DEVICE_MODULES))


def test_an_agent_without_devices_loads_no_device_library(layout: BenchLayout) -> None:
    assert device_modules(loaded_by_agent(layout.agent_config(VIN))) == []


def test_a_can_source_brings_python_can_and_cantools(layout: BenchLayout, tmp_path: Path) -> None:
    """The probe's control: the same check sees the libraries once a config asks for them."""
    config = layout.write_agent_config(VIN, sources={"can": {"port": str(tmp_path / "ttyCAN")}})
    loaded = loaded_by_agent(config)
    assert {"cantools", "serial", "tcu.sources.slcan_reader"} <= loaded
    assert "asn1tools" not in loaded
