"""Crash → MSD acknowledged at the PSAP, NG eCall vs circuit-switched: `python -m bench.bench_ng_ecall [runs]`.

A measurement, not a test. One process, one eCall service and one modem, the two PSAPs of the backend
stub side by side, the transports interleaved call by call (ng, cs, ng, cs, ...) so both see the same
machine at the same moment:

- NG: VehicleState → trigger → state machine → TransportModem (the modem reports `+CNEMS1: 1`) →
  NgEcallModem → SIP INVITE with MSD + PIDF-LO over loopback UDP → `PsapNg` decodes the MSD and answers
  200 OK with the control ack;
- CS: the same up to TransportModem (the modem reports `+CNEMS1: 0`, 2G/3G present) → modem client →
  pty → modem simulator → simulated 112 network (TCP loopback) → `PsapStub`: SEND-MSD, MSD, AL-ACK.

Measured: the crash signal → the PSAP's "al-ack positive" mark (its monotonic clock, this process's
`time.monotonic`), when the acknowledgement goes on the wire. No radio delays (`ModemTiming.instant()`,
the PSAPs answer at once); the ASN.1 module is compiled before the first run (the service does that at
start). Between calls the PSAP clears down, the service enters its callback window, and the network's
offer is switched for the next call (`ModemSimulator.set_network`, a `+CNEMS1` URC the agent hears).
Goal (issue 17): NG p99 < 50 ms.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from backend_stub.psap import PsapCall, PsapStub
from backend_stub.psap_ng import PsapNg
from bench import bench_ecall_slow_disk
from bench.bench_ecall import VIN, until
from bench.comparison import Contender
from hil.devices.modem_sim import ModemSimulator, ModemTiming, Network
from tcu.clock import SystemClock
from tcu.ecall.config import EcallConfig, NgConfig
from tcu.ecall.ng.dual_modem import TransportModem
from tcu.ecall.service import EcallService
from tcu.ecall.state_machine import EcallState
from tcu.ecall.triggers import CRASH_DETECTED
from tcu.sources.modem_client import ModemClient
from tcu.vehicle.state import Signal, VehicleState
from telematics_wire.records import Record

GOAL_MS = 50.0
TRANSPORTS = ("ng", "cs")
_OFFER = {"ng": Network.BOTH, "cs": Network.LEGACY_ONLY}  # what the network offers for each call
_ACKED = "al-ack positive"  # both PSAPs' mark when the acknowledgement of a decoded MSD goes out


@dataclass(frozen=True, slots=True)
class Rig:
    service: EcallService
    modem: TransportModem
    sim: ModemSimulator
    state: VehicleState
    psap_ng: PsapNg
    psap_cs: PsapStub

    async def offer(self, transport: str) -> None:
        """The network offers what `transport` needs; returns once the agent has heard it."""
        ims = transport == "ng"
        await self.sim.set_network(_OFFER[transport])
        await until(lambda: self.modem.offer.ims_emergency is ims)

    async def crash(self, transport: str) -> float:
        """One crash over `transport`: seconds from the signal to the PSAP's ack; then clear-down, callback window."""
        psap: PsapNg | PsapStub = self.psap_ng if transport == "ng" else self.psap_cs
        before = len(psap.calls)
        clock = SystemClock()
        self.state.update(Signal(path=CRASH_DETECTED, value=False, timestamp=clock.now(), source="can"))
        crash = Signal(path=CRASH_DETECTED, value=True, timestamp=clock.now(), source="can")
        started = time.monotonic()
        self.state.update(crash)
        await until(lambda: len(psap.calls) > before and psap.calls[-1].at(_ACKED) is not None)
        call: PsapCall = psap.calls[-1]
        acked = call.at(_ACKED)
        assert acked is not None
        await until(lambda: self.service.state is EcallState.VOICE)
        await psap.clear_down(call.id)
        await until(lambda: self.service.state is EcallState.CALLBACK_WINDOW)
        return acked - started


async def measure(order: Sequence[str]) -> dict[str, list[float]]:
    """Crash → MSD acknowledged at the PSAP, in seconds, for each call of `order` ("ng"/"cs"), by transport."""
    state, records = VehicleState(), list[Record]()
    latencies: dict[str, list[float]] = {transport: [] for transport in TRANSPORTS}
    async with PsapNg() as psap_ng, PsapStub() as psap_cs:
        first = order[0] if order else "ng"
        sim = ModemSimulator(psap_address=psap_cs.address, timing=ModemTiming.instant(), network=_OFFER[first])
        async with sim:
            host, port = psap_ng.address
            config = EcallConfig(port=sim.path, retrigger_suppress_s=0.0, ng=NgConfig(proxy_host=host, proxy_port=port))
            service = EcallService(config, vin=VIN, state=state, clock=SystemClock())
            modem = service.modem
            assert isinstance(modem, TransportModem), "[ecall] transport auto: the service carries both"
            rig = Rig(service=service, modem=modem, sim=sim, state=state, psap_ng=psap_ng, psap_cs=psap_cs)

            async def keep(record: Record) -> None:
                records.append(record)

            async with asyncio.TaskGroup() as tasks:
                engine = tasks.create_task(service.run(), name="ecall")
                drain = tasks.create_task(service.reports.drain(keep), name="ecall-reports")
                cs_leg = modem.cs
                assert isinstance(cs_leg, ModemClient)
                await until(lambda: cs_leg.ready)
                for transport in order:
                    await rig.offer(transport)
                    latencies[transport].append(await rig.crash(transport))
                engine.cancel()
                drain.cancel()
    carried = [r.body.get("transport") for r in records if r.body.get("event") == "transport"]
    assert carried == list(order), f"the service chose {carried}, the bench asked for {list(order)}"
    return latencies


def p99_contender(transport: str, runs: int) -> Contender:
    """`python -m bench`'s contender: `runs` calls over `transport` alone, their p99 in ms."""

    async def run() -> float:
        return percentiles((await measure([transport] * runs))[transport])[1]

    return run


def interleaved(runs: int) -> list[str]:
    """`runs` calls of each transport, alternating: ng, cs, ng, cs, ..."""
    return [transport for _ in range(runs) for transport in TRANSPORTS]


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds, computed as the other eCall benches compute them."""
    p50, p99, _ = bench_ecall_slow_disk.percentiles(list(seconds))
    return p50, p99


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    logging.basicConfig(level=logging.ERROR)  # per-transition logs would go to the terminal otherwise
    latencies = asyncio.run(measure(interleaved(runs)))
    (ng_p50, ng_p99), (cs_p50, cs_p99) = (percentiles(latencies[transport]) for transport in TRANSPORTS)
    print(f"crash → MSD acknowledged at the PSAP, {runs} calls each way, interleaved, no radio delays:")
    print(f"  NG (SIP over loopback UDP):       p50 {ng_p50:.2f} ms, p99 {ng_p99:.2f} ms")
    print(f"  CS (in-band modem, pty + TCP):    p50 {cs_p50:.2f} ms, p99 {cs_p99:.2f} ms")
    print(f"  p99 CS/NG {cs_p99 / ng_p99:.2f}; goal NG p99 < {GOAL_MS:g} ms: {'met' if ng_p99 < GOAL_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
