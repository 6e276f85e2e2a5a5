"""CAN and GNSS source benchmarks. A measurement, not a test.

    python -m bench.bench_sources [--seconds 2] [--samples 2000] [--rounds 3]

- SLCAN against its baseline (`bench/baseline_cantools.py`: python-can's slcan line parser + cantools
  `decode_message`, no mapping), interleaved rounds, min/median and the ratio of medians, for the bus
  mix and the worst case (12-signal frames, every payload new); goals ratio >= 1.0 and >= 0.5.
- SLCAN: frames/s from raw adapter bytes to signals in `VehicleState` (parse, DBC decode, mapping,
  state update with one subscriber), on one core; goal >= 20,000 frames/s. Traffic: the simulated
  bus as it is (cycle times of the DBC: mostly the 20 ms speed frame, whose alive counter and speed
  make nearly every payload new), and the heaviest frame (12 signals) alone, repeating its payload as
  a door status does, and with every payload different (the decoder's payload cache never hits).
- python-can virtual: frames/s of the simulated bus mix into `VehicleState` through `CanBusReader`,
  both its decode path alone (`handle` on python-can `Message` objects) and end to end (a second
  virtual Bus sends, the reader's worker thread receives and hands batches to the event loop).
- NMEA: sentences/s parsed, and parsed + interpreted into `VehicleState`; pynmeagps for comparison.
- Latency: a frame written on the device side of a pty (by a thread, as a separate device would)
  to its value in `VehicleState` through the real `SlcanReader`, with the rest of the bus running;
  goal p99 < 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
import tty
from collections.abc import Callable
from datetime import UTC, datetime

import can
from pynmeagps import NMEAReader

from bench.baseline_cantools import python_can_cantools_frames_per_s
from bench.comparison import ROUNDS, Better, Figures, ratio
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.slcan_sim import VehicleBus
from tcu.clock import SystemClock
from tcu.sources.can_bus import CanBusConfig, CanBusReader
from tcu.sources.nmea import NmeaStream, parse_sentence
from tcu.sources.nmea_reader import NmeaConfig, NmeaReader
from tcu.sources.slcan import CanFrame, SlcanStream, format_frame
from tcu.sources.slcan_reader import SlcanConfig, SlcanReader
from tcu.sources.slcan_signals import CanSignalDecoder
from tcu.vehicle.state import Signal, VehicleState

CHUNK = 4096  # what one read of a busy port returns


def rate(work: Callable[[], int], seconds: float) -> float:
    """Units of work per second, repeating `work` (which returns how many units it did)."""
    work()  # warm up
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += work()
    return done / elapsed


def bus_bytes(seconds: float) -> tuple[bytes, int]:
    """Adapter output for `seconds` of the simulated bus (1 ms steps)."""
    bus = VehicleBus()
    frames = [f for step in range(int(seconds * 1000)) for f in bus.due(step / 1000, 30.0 + step / 1000)]
    return b"".join(format_frame(f) for f in frames), len(frames)


def body_bytes(count: int, *, varying: bool) -> tuple[bytes, int]:
    """BodyStatus frames only (12 mapped signals each); `varying`: the mapped bits of a payload recur only
    6,144 frames later, far past a batch (~370 frames of a 4 KB chunk) and the decoder's payload cache."""
    payloads = [bytes((n & 0x3F, (n >> 6) & 0x1F, n % 3)) if varying else b"\x01\x1f\x01" for n in range(count)]
    return b"".join(format_frame(CanFrame(can_id=0x2A0, data=p)) for p in payloads), count


def slcan_rate(data: bytes, frames: int, seconds: float) -> tuple[float, float]:
    """(frames/s, VSS signals/s) through `SlcanReader.handle`, the reader's whole per-chunk path."""
    decoder = CanSignalDecoder.from_files()
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]

    def once() -> SlcanReader:
        state = VehicleState()
        state.subscribe(lambda signal: None)  # telemetry listens; its callback is its own cost
        reader = SlcanReader(SlcanConfig(port="bench"), state=state, clock=SystemClock(), decoder=decoder)
        stream = SlcanStream()
        for chunk in chunks:
            reader.handle(stream.feed(chunk))
        return reader

    stats = once().stats
    assert stats.messages == frames
    assert stats.errors == 0
    frames_per_s = rate(lambda: once().stats.messages, seconds)
    return frames_per_s, frames_per_s * stats.signals / frames


def slcan_versus_baseline(seconds: float, rounds: int = ROUNDS) -> list[tuple[str, Figures, Figures]]:
    """(case, ours, python-can + cantools) in frames/s for the bus mix and the worst case, interleaved
    (ours, baseline, ours, baseline, ...) so both see the same load on a shared machine."""
    cases = (
        ("bus mix", bus_bytes(10.0), False),
        ("worst case: 12-signal frames, every payload new", body_bytes(20_000, varying=True), True),
    )
    samples: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label, _, _ in cases}
    for _ in range(rounds):
        for label, (data, frames), worst_case in cases:
            ours, base = samples[label]
            ours.append(slcan_rate(data, frames, seconds)[0])
            base.append(python_can_cantools_frames_per_s(data, seconds, worst_case=worst_case))
    return [(label, Figures.of(ours), Figures.of(base)) for label, (ours, base) in samples.items()]


def bus_messages(seconds: float) -> list[can.Message]:
    """The simulated bus mix for `seconds`, as python-can messages."""
    bus = VehicleBus()
    return [
        can.Message(arbitration_id=f.can_id, data=f.data, is_extended_id=f.extended)
        for step in range(int(seconds * 1000))
        for f in bus.due(step / 1000, 30.0 + step / 1000)
    ]


def python_can_rates(seconds: float) -> dict[str, float]:
    """frames/s through `CanBusReader`: the decode path alone, and end to end over a virtual bus."""
    messages = bus_messages(10.0)
    decoder = CanSignalDecoder.from_files()
    batches = [messages[i : i + 512] for i in range(0, len(messages), 512)]

    def handle_only() -> int:
        state = VehicleState()
        state.subscribe(lambda signal: None)
        reader = CanBusReader(CanBusConfig(interface="virtual"), state=state, clock=SystemClock(), decoder=decoder)
        for batch in batches:
            reader.handle(batch)
        assert reader.stats.errors == 0
        return reader.stats.messages

    async def end_to_end() -> float:
        channel = f"bench-{os.getpid()}"
        state = VehicleState()
        state.subscribe(lambda signal: None)
        settings = CanBusConfig(interface="virtual", channel=channel, max_pending_frames=len(messages) + 1)
        reader = CanBusReader(settings, state=state, clock=SystemClock(), decoder=decoder)
        sender = can.Bus(interface="virtual", channel=channel)
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(reader.run(), name="source-can")
            await reader.connected.wait()
            start, sent = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                for message in messages:
                    sender.send(message)
                sent += len(messages)
                while reader.stats.messages < sent:  # noqa: ASYNC110 - let the reader keep up, then send more
                    await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - start
            task.cancel()
        sender.shutdown()
        assert reader.stats.errors == 0, "frames dropped or rejected"
        return reader.stats.messages / elapsed

    return {"decode path (handle)": rate(handle_only, seconds), "end to end (thread + loop)": asyncio.run(end_to_end())}


def nmea_rates(seconds: float) -> dict[str, float]:
    sim = NmeaSimulator()
    data = b"".join(sim.epoch(float(t)) for t in range(300))
    lines = [line.decode().strip() for line in data.split(b"\n") if line]
    raw_lines = [line + b"\n" for line in data.split(b"\n") if line]

    def parse_only() -> int:
        for line in lines:
            parse_sentence(line)
        return len(lines)

    def pynmeagps_parse() -> int:
        for line in raw_lines:
            NMEAReader.parse(line)
        return len(raw_lines)

    def into_state() -> int:
        reader = NmeaReader(NmeaConfig(port="bench"), state=VehicleState(), clock=SystemClock())
        reader.handle(NmeaStream().feed(data))
        return len(lines)

    return {
        "parse (ours)": rate(parse_only, seconds),
        "parse (pynmeagps 1.1.8)": rate(pynmeagps_parse, seconds),
        "parse + interpret + state": rate(into_state, seconds),
    }


async def latency(samples: int) -> list[float]:
    """Seconds from `os.write` of a speed frame on the device side to the value in `VehicleState`."""
    master, slave = os.openpty()
    tty.setraw(slave)
    state = VehicleState()
    written: dict[int, float] = {}  # by speed in 0.01 km/h, the frame's raw value
    arrived: dict[int, float] = {}

    def on_update(signal: Signal) -> None:
        if signal.path == "Vehicle.Speed":
            arrived.setdefault(round(float(signal.value) * 100), time.perf_counter())

    state.subscribe(on_update)
    reader = SlcanReader(SlcanConfig(port=os.ttyname(slave)), state=state, clock=SystemClock())
    device_ready = threading.Event()
    stop = threading.Event()

    def device() -> None:
        """The adapter: OK to every command, then the bus at its cycle times plus marked speed frames."""
        received = b""
        while not received.endswith(b"O\r"):
            data = os.read(master, 64)
            os.write(master, b"\r" * data.count(b"\r"))
            received += data
        device_ready.set()
        bus, start = VehicleBus(), time.perf_counter()
        for n in range(samples):
            background = b"".join(
                format_frame(f) for f in bus.due(time.perf_counter() - start, 30.0) if f.can_id != 0x0C1
            )
            raw = 100 + n  # unique speeds 1.00, 1.01, ... km/h
            marked = format_frame(CanFrame(can_id=0x0C1, data=raw.to_bytes(2, "little") + b"\x00\x00"))
            if background:
                os.write(master, background)
            written[raw] = time.perf_counter()
            os.write(master, marked)
            time.sleep(0.005)  # 200 marked frames/s on top of the ~90/s of the bus
            if stop.is_set():
                return

    thread = threading.Thread(target=device, daemon=True)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(reader.run(), name="source-can")
        thread.start()
        await asyncio.to_thread(thread.join, samples * 0.01 + 30)
        await asyncio.sleep(0.1)
        stop.set()
        task.cancel()
    os.close(master)
    os.close(slave)
    missing = [v for v in written if v not in arrived]
    assert not missing, f"{len(missing)} marked frames never arrived"
    return [arrived[v] - written[v] for v in written]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per throughput measurement")
    parser.add_argument("--samples", type=int, default=2000, help="frames for the latency measurement")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds against the baseline")
    args = parser.parse_args()
    print(f"tcu-sim source benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, one core\n")

    print(f"SLCAN frames -> typed VSS signals vs python-can slcan + cantools decode_message, {args.rounds} rounds:")
    for label, ours, base in slcan_versus_baseline(args.seconds, args.rounds):
        print(
            f"  {label}:\n    ours      min {ours.min:10,.0f}  median {ours.median:10,.0f} frames/s\n"
            f"    baseline  min {base.min:10,.0f}  median {base.median:10,.0f} frames/s"
            f"   ratio {ratio(ours, base, Better.HIGHER):.2f} (medians)"
        )
    print()

    for label, (data, frames) in (
        ("simulated bus mix (DBC cycle times)", bus_bytes(10.0)),
        ("BodyStatus only (12 signals/frame), repeated payload", body_bytes(20_000, varying=False)),
        ("BodyStatus only (12 signals/frame), every payload new", body_bytes(20_000, varying=True)),
    ):
        frames_per_s, signals_per_s = slcan_rate(data, frames, args.seconds)
        verdict = "ok" if frames_per_s >= 20_000 else "BELOW GOAL"
        print(
            f"SLCAN {label}:\n  {frames_per_s:10,.0f} frames/s  {signals_per_s:10,.0f} VSS signals/s"
            f"   (goal >= 20,000 frames/s: {verdict})"
        )

    for label, value in python_can_rates(args.seconds).items():
        print(f"python-can virtual, bus mix, {label:27} {value:10,.0f} frames/s")

    for label, value in nmea_rates(args.seconds).items():
        print(f"NMEA {label:28} {value:10,.0f} sentences/s  ({1e6 / value:5.1f} µs each)")

    delays = sorted(d * 1000 for d in asyncio.run(latency(args.samples)))
    p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99) - 1]
    verdict = "ok" if p99 < 5 else "ABOVE GOAL"
    print(
        f"\nLatency pty write -> VehicleState ({len(delays)} frames, bus running): "
        f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {delays[-1]:.2f} ms   (goal p99 < 5 ms: {verdict})"
    )


if __name__ == "__main__":
    main()
