"""Crash → MSD at the PSAP with a slow disk under the eCall reports: `python -m bench.bench_ecall_slow_disk`.

A measurement, not a test (issue 14: the eCall never waits on a disk; issue 15: p99 < 50 ms with every
fsync 50 ms slower, a slow SD card). The same in-process path as `bench_ecall` (VehicleState → trigger →
state machine → modem client → pty → modem simulator → simulated 112 network → PSAP stub), with the eCall's
reports drained exactly as the agent drains them: `EcallReports.drain` into `tcu.app.store_ecall_report`,
the function the agent itself hands the drain (`await Outbox.put`, sealed and committed by the queue's
writer thread, then the uplink woken), into a real queue database on a slow card: every commit takes
`--fsync-ms` longer, injected through the queue's statement trace on the writer's thread. Every call
makes about ten reports; when the disk falls behind, the eCall's report queue fills and drops its oldest
reports, as it is meant to, and the call must not notice.

Measured over `runs` triggers: crash signal → the call arriving at the PSAP (the dial) and → the MSD
decoded at the PSAP, which sends its AL-ACK at once (acknowledged). The baseline is the same with the disk
untouched (`--fsync-ms 0`). Goal: crash → MSD acknowledged p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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
from tcu.app import store_ecall_report
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
            if self._fsync_s > 0:
                time.sleep(self._fsync_s)  # the slow card: nothing else about the write changes
            self.commits += 1


@dataclass(frozen=True, slots=True)
class Result:
    dial_s: list[float]
    msd_s: list[float]
    commits: int
    dropped: int
    stored: int  # reports the agent's store put in the queue (it wakes the uplink after each)


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
    stored: list[None] = []
    async with PsapStub() as psap, outbox:
        modem = ModemSimulator(psap_address=psap.address, timing=ModemTiming.instant())
        async with modem:
            config = EcallConfig(port=modem.path, retrigger_suppress_s=0.0)
            service = EcallService(config, vin=VIN, state=state, clock=clock)
            # What Agent._run_telematics_tasks hands the drain; the uplink it would wake is not running here.
            store = functools.partial(store_ecall_report, outbox, lambda: stored.append(None))
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
    return Result(dial_s=dial_s, msd_s=msd_s, commits=slow.commits, dropped=service.reports.dropped, stored=len(stored))


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max in milliseconds."""
    ms = sorted(x * 1000 for x in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.99 * len(ms)) - 1)], ms[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="?", type=int, default=200)
    parser.add_argument("--fsync-ms", type=float, default=50.0, help="extra time every queue commit takes (50)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # per-transition and queue-full warnings would flood the terminal
    with tempfile.TemporaryDirectory(prefix="tcu-bench-slow-disk-") as tmp:
        result = asyncio.run(measure(args.runs, fsync_s=args.fsync_ms / 1000, directory=Path(tmp)))
    dial_p50, dial_p99, dial_max = percentiles(result.dial_s)
    msd_p50, msd_p99, msd_max = percentiles(result.msd_s)
    print(f"{args.runs} crashes, eCall reports queued on a disk whose every commit takes +{args.fsync_ms:g} ms:")
    print(f"  crash → dial at the PSAP:  p50 {dial_p50:.2f} ms, p99 {dial_p99:.2f} ms, max {dial_max:.2f} ms")
    print(f"  crash → MSD at the PSAP:   p50 {msd_p50:.2f} ms, p99 {msd_p99:.2f} ms, max {msd_max:.2f} ms")
    print(
        f"  queue commits {result.commits}, eCall reports stored {result.stored}, "
        f"dropped (their queue full) {result.dropped}"
    )
    print(f"  goal crash → MSD acknowledged p99 < {GOAL_MS:g} ms: {'met' if msd_p99 < GOAL_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
