"""Crash → dial with a slow disk under the eCall reports: `python -m bench.bench_ecall_slow_disk [runs]`.

A measurement, not a test (issue 14: the eCall never waits on a disk). The same in-process path as
`bench_ecall` (VehicleState → trigger → state machine → modem client → pty → modem simulator → simulated
112 network → PSAP stub), with the eCall's reports drained as the agent drains them
(`Agent._store_ecall_report`: `await Outbox.put`, sealed and committed by the queue's writer thread)
into a real queue database on a slow SD card: every commit takes `--fsync-ms` (500 ms) longer, injected
through the queue's statement trace on the writer's thread. Every call makes about ten reports, so the
disk falls behind at once and stays behind: the eCall's report queue fills and drops its oldest reports,
as it is meant to, and the dial must not notice.

Measured: crash signal → the call arriving at the PSAP (the dial) and → the MSD decoded there, p50 and p99
over `runs` triggers. Goal: crash → dial p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey

from backend_stub.psap import PsapStub
from bench.bench_ecall import VIN, crash_and_clear, until
from hil.devices.modem_sim import ModemSimulator, ModemTiming
from tcu.clock import SystemClock
from tcu.config import QueueConfig
from tcu.ecall.config import EcallConfig
from tcu.ecall.service import EcallService
from tcu.uplink.outbox import Outbox
from tcu.vehicle.state import VehicleState
from telematics_wire.envelope import seal_record, vehicle_box

GOAL_MS = 50.0


class SlowCommits:
    """The queue's statement trace (run on its writer thread): every COMMIT waits `fsync_s` first."""

    def __init__(self, fsync_s: float) -> None:
        self._fsync_s = fsync_s
        self.commits = 0

    def __call__(self, statement: str) -> None:
        if statement.strip().upper().startswith("COMMIT"):
            time.sleep(self._fsync_s)  # the slow card: nothing else about the write changes
            self.commits += 1


@dataclass(frozen=True, slots=True)
class Result:
    dial_s: list[float]
    msd_s: list[float]
    commits: int
    dropped: int


async def measure(runs: int, *, fsync_s: float, directory: Path) -> Result:
    clock, state = SystemClock(), VehicleState()
    box = vehicle_box(PrivateKey.generate(), PrivateKey.generate().public_key)
    slow = SlowCommits(fsync_s)
    outbox = Outbox(
        directory / "queue.sqlite3",
        sealer=lambda seq, record, epoch: seal_record(box, VIN, seq, record, epoch=epoch),
        clock=clock,
        config=QueueConfig(),
        max_envelope_bytes=64 * 1024,
        trace=slow,
    )
    dial_s: list[float] = []
    msd_s: list[float] = []
    async with PsapStub() as psap, outbox:
        modem = ModemSimulator(psap_address=psap.address, timing=ModemTiming.instant())
        async with modem:
            config = EcallConfig(port=modem.path, retrigger_suppress_s=0.0)
            service = EcallService(config, vin=VIN, state=state, clock=clock)
            store = outbox.put  # what Agent._store_ecall_report awaits (then it wakes the uplink)
            async with asyncio.TaskGroup() as tasks:
                engine = tasks.create_task(service.run(), name="ecall")
                drain = tasks.create_task(service.reports.drain(store), name="ecall-reports")
                await until(lambda: bool(getattr(service.modem, "ready", False)))
                for run in range(runs):
                    started, received = await crash_and_clear(service, state, psap, run + 1)
                    arrived = psap.call(received.call_id).at("call")
                    assert arrived is not None
                    dial_s.append(arrived - started)
                    msd_s.append(received.mono - started)
                engine.cancel()
                drain.cancel()
    return Result(dial_s=dial_s, msd_s=msd_s, commits=slow.commits, dropped=service.reports.dropped)


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max in milliseconds."""
    ms = sorted(x * 1000 for x in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.99 * len(ms)) - 1)], ms[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="?", type=int, default=200)
    parser.add_argument("--fsync-ms", type=float, default=500.0, help="extra time every queue commit takes (500)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # per-transition and queue-full warnings would flood the terminal
    with tempfile.TemporaryDirectory(prefix="tcu-bench-slow-disk-") as tmp:
        result = asyncio.run(measure(args.runs, fsync_s=args.fsync_ms / 1000, directory=Path(tmp)))
    dial_p50, dial_p99, dial_max = percentiles(result.dial_s)
    msd_p50, msd_p99, msd_max = percentiles(result.msd_s)
    print(f"{args.runs} crashes, eCall reports queued on a disk whose every commit takes +{args.fsync_ms:g} ms:")
    print(f"  crash → dial at the PSAP:  p50 {dial_p50:.2f} ms, p99 {dial_p99:.2f} ms, max {dial_max:.2f} ms")
    print(f"  crash → MSD at the PSAP:   p50 {msd_p50:.2f} ms, p99 {msd_p99:.2f} ms, max {msd_max:.2f} ms")
    print(f"  queue commits {result.commits}, eCall reports dropped (its queue full) {result.dropped}")
    print(f"  goal crash → dial p99 < {GOAL_MS:g} ms: {'met' if dial_p99 < GOAL_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
