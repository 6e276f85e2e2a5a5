"""Baseline for the SLCAN benchmark: python-can's SLCAN line parsing + cantools `decode_message`, no mapping.

The same adapter bytes `bench.bench_sources` feeds our reader go through python-can's own code path:
an `slcanBus` opened on pyserial's `loop://` (no port, no two-second sleep), whose `_read` is pointed at
the lines of those bytes, so `_recv_internal` parses each line exactly as it parses a line off a real
adapter (hex id, DLC, `bytearray.fromhex`, a `can.Message`). Only the byte-at-a-time serial read is left
out: it would slow the baseline down and flatter us. Each frame is then decoded by cantools'
`Database.decode_message` (choices and scaling on, its defaults) with the same DBC (`hil/vehicle.dbc`).
No VSS mapping, no units, no bounds checks, no state: the floor any Python CAN pipeline stands on.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import cantools
from can.interfaces.slcan import slcanBus

DBC = Path(__file__).resolve().parent.parent / "hil" / "vehicle.dbc"


def _lines(data: bytes) -> list[str]:
    """The strings python-can's `_read` returns: one per CR-terminated line, CR included."""
    return data.decode("ascii").splitlines(keepends=True)


def _decode_all(bus: Any, database: Any, data: bytes) -> int:
    """Split, parse every line with python-can and decode every frame with cantools; returns frames decoded."""
    bus._read = functools.partial(next, iter(_lines(data)))  # next(lines, timeout): None once they run out
    receive = bus._recv_internal
    decode_message = database.decode_message
    frames = 0
    while True:
        message, _filtered = receive(0)
        if message is None:
            return frames
        decode_message(message.arbitration_id, message.data)
        frames += 1


def python_can_cantools_frames_per_s(data: bytes, seconds: float, *, worst_case: bool) -> float:
    """Frames/s of `data` (SLCAN adapter output) through python-can's line parser and cantools' decoder.

    `worst_case` only names the traffic for the caller (12-signal frames, every payload new); the work
    per frame is the same, as cantools caches nothing between frames.
    """
    del worst_case  # the baseline does the same work whatever the traffic; the flag keeps call sites honest
    database = cantools.database.load_file(str(DBC), strict=True)
    bus = slcanBus("loop://", sleep_after_open=0)
    try:
        expected = sum(1 for line in _lines(data) if line[:1] in "tTrR")
        assert _decode_all(bus, database, data) == expected  # warm up, and every frame was decoded
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            done += _decode_all(bus, database, data)
        return done / elapsed
    finally:
        bus.shutdown()
