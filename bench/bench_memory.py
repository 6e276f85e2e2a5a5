"""The agent's memory and import time against a bare interpreter with its four libraries. A measurement.

    python -m bench.bench_memory [--seconds 8] [--runs 5]

- RSS of one `tcu run` process on the simulated drive after `--seconds`: without any device; with a CAN
  source (an SLCAN simulator on a pty, served by this process, the packaged DBC and mapping); with
  everything (CAN, OBD, GNSS and a legal eCall on a modem simulator, all on ptys).
- Import time of the agent (`import tcu.cli`, what `tcu run` imports, `tcu.app` with it): measured
  inside a fresh interpreter around the import alone, median of `--runs`.
- Baseline: a fresh interpreter doing `import aiomqtt, nacl, cbor2, sqlite3` (the libraries the agent
  cannot do without): its RSS after the import and the import's time, interleaved with the agent's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hil.broker import MosquittoBroker
from hil.devices.elm327_sim import Elm327Simulator
from hil.devices.modem_sim import ModemSimulator
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.pty_device import PtyDevice
from hil.devices.slcan_sim import SlcanSimulator
from hil.layout import DEMO_VIN, NO_ECALL, BenchLayout
from hil.proc_stats import rss_mb

AGENT_IMPORT = "import tcu.cli"
BASELINE_IMPORT = "import aiomqtt, nacl, cbor2, sqlite3"
# Run in a fresh interpreter: the import's own time, then the process's resident set after it.
_PROBE = """
import time
start = time.perf_counter()
{statement}
elapsed = time.perf_counter() - start
rss_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(elapsed, rss_kb)
"""


@dataclass(frozen=True, slots=True)
class ImportCost:
    seconds: float
    rss_mb: float


def import_cost(statement: str, *, tree: Path | None = None) -> ImportCost:
    """Time of `statement` in a fresh interpreter, and that interpreter's RSS after it; `tree`: import the
    packages from that source tree (another checkout, to compare commits) rather than the installed ones."""
    output = subprocess.run(
        [sys.executable, "-c", _PROBE.format(statement=statement)], check=True, capture_output=True, text=True, cwd=tree
    ).stdout.split()
    return ImportCost(seconds=float(output[0]), rss_mb=int(output[1]) / 1024)


def import_costs(runs: int) -> tuple[list[ImportCost], list[ImportCost]]:
    """(agent, baseline), `runs` of each, interleaved."""
    agent: list[ImportCost] = []
    baseline: list[ImportCost] = []
    for _ in range(runs):
        agent.append(import_cost(AGENT_IMPORT))
        baseline.append(import_cost(BASELINE_IMPORT))
    return agent, baseline


def _devices(tmp: Path, devices: str) -> dict[str, PtyDevice]:
    if devices == "none":
        return {}
    if devices == "can":
        return {"can": SlcanSimulator(link_path=str(tmp / "ttyCAN"))}
    return {
        "can": SlcanSimulator(link_path=str(tmp / "ttyCAN")),
        "obd": Elm327Simulator(link_path=str(tmp / "ttyOBD")),
        "gnss": NmeaSimulator(link_path=str(tmp / "ttyGNSS")),
        # Registers and waits for a crash that does not come: the PSAP is never dialled.
        "modem": ModemSimulator(psap_address=("127.0.0.1", 1), link_path=str(tmp / "ttyMODEM")),
    }


async def agent_rss_mb(seconds: float, *, devices: str = "none") -> float:
    """Resident memory of one `tcu run` process on the simulated drive after `seconds`. `devices`:
    "none", "can" (an SLCAN adapter through the packaged DBC) or "all" (CAN, OBD, GNSS, a legal eCall on
    a modem); each a simulator on a pty served by this process."""
    with tempfile.TemporaryDirectory(prefix="tcu-bench-rss-") as tmp:
        broker = MosquittoBroker(Path(tmp) / "mosquitto")
        layout = BenchLayout(root=Path(tmp), broker_url=broker.url)
        layout.create_backend()
        simulators = _devices(Path(tmp), devices)
        sources = {name: {"port": device.path} for name, device in simulators.items() if name != "modem"}
        modem = simulators.get("modem")
        ecall = NO_ECALL if modem is None else {"legal_ecall": True, "port": modem.path}
        config = layout.add_vehicle(DEMO_VIN, telemetry_interval_s=1.0, sources=sources, ecall=ecall)
        if modem is not None:
            layout.set_legal_ecall(DEMO_VIN, True)
        async with broker, contextlib.AsyncExitStack() as stack:
            for device in simulators.values():
                await stack.enter_async_context(device)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tcu.cli",
                "--log-level",
                "error",
                "run",
                "--config",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
            )
            try:
                await asyncio.sleep(seconds)
                if process.returncode is not None:
                    raise RuntimeError(f"tcu run ended early with status {process.returncode}")
                resident = await asyncio.to_thread(rss_mb, process.pid)
                if not resident:  # rss_mb's answer for a process that is gone
                    raise RuntimeError("tcu run ended before its memory was read")
                return resident
            finally:
                if process.returncode is None:
                    process.terminate()
                await process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    agent, baseline = import_costs(args.runs)
    without_can = [asyncio.run(agent_rss_mb(args.seconds)) for _ in range(3)]
    with_can = [asyncio.run(agent_rss_mb(args.seconds, devices="can")) for _ in range(3)]
    everything = [asyncio.run(agent_rss_mb(args.seconds, devices="all")) for _ in range(3)]
    base_rss = statistics.median(cost.rss_mb for cost in baseline)
    base_s = statistics.median(cost.seconds for cost in baseline)
    agent_s = statistics.median(cost.seconds for cost in agent)
    print(f"baseline ({BASELINE_IMPORT}): RSS {base_rss:.1f} MB, import {base_s * 1000:.0f} ms (median of {args.runs})")
    print(
        f"agent import ({AGENT_IMPORT}): {agent_s * 1000:.0f} ms median, min "
        f"{min(c.seconds for c in agent) * 1000:.0f} ms, ratio {agent_s / base_s:.2f}; RSS after import "
        f"{statistics.median(c.rss_mb for c in agent):.1f} MB"
    )
    runs = (("no device", without_can), ("SLCAN + DBC", with_can), ("CAN, OBD, GNSS, eCall", everything))
    for label, figures in runs:
        rss = statistics.median(figures)
        print(
            f"tcu run, {label}, after {args.seconds:.0f} s: RSS {rss:.1f} MB median of 3 "
            f"({', '.join(f'{x:.1f}' for x in figures)}), ratio {rss / base_rss:.2f}"
        )


if __name__ == "__main__":
    main()
