"""What one record costs Mosquitto: CPU per message routed, for the arithmetic in docs/scale.md.

    python -m bench.bench_broker --count 20000 --rounds 3

A plain paho QoS 1 publisher sends `count` messages of the sealed telemetry size to one subscriber
through a fresh Mosquitto (the same `bench.baseline_paho` run as the end-to-end baseline); the broker's
own CPU time (utime + stime from /proc) over the run, divided by the messages, is what it spends on one
message in and its delivery out with both PUBACKs. A record of the agent costs the broker two such
messages: the record itself and the backend's end-to-end ack back to the vehicle (one ack per batch; at
1 record/s a batch is one record).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.baseline_paho import plain_paho_per_s
from hil.broker import MosquittoBroker
from hil.proc_stats import children, cpu_seconds

SEALED_TELEMETRY_BYTES = 1363  # a real sealed telemetry envelope of the simulated drive (20 signals)


@dataclass(frozen=True, slots=True)
class BrokerCost:
    messages_per_s: float
    cpu_us_per_message: float


async def measure(count: int, payload_size: int) -> BrokerCost:
    with tempfile.TemporaryDirectory(prefix="tcu-bench-broker-") as tmp:
        broker = MosquittoBroker(Path(tmp) / "mosquitto")
        async with broker:
            (pid,) = children(os.getpid(), "mosquitto")
            before = cpu_seconds(pid)
            rate = await asyncio.to_thread(plain_paho_per_s, broker.url, count, payload_size)
            used = cpu_seconds(pid) - before
    return BrokerCost(messages_per_s=rate, cpu_us_per_message=used / count * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--payload-size", type=int, default=SEALED_TELEMETRY_BYTES)
    args = parser.parse_args()
    costs = [asyncio.run(measure(args.count, args.payload_size)) for _ in range(args.rounds)]
    per_message = [cost.cpu_us_per_message for cost in costs]
    rates = [cost.messages_per_s for cost in costs]
    print(f"messages of {args.payload_size} B through Mosquitto, QoS 1, {args.rounds} rounds of {args.count:,}")
    print(f"  Mosquitto CPU per message: min {min(per_message):.1f} µs, median {statistics.median(per_message):.1f} µs")
    print(f"  paho publisher → subscriber: median {statistics.median(rates):,.0f} messages/s (the clients' limit)")
    print(f"  one core of Mosquitto, 2 messages per record: {1e6 / statistics.median(per_message) / 2:,.0f} records/s")


if __name__ == "__main__":
    main()
