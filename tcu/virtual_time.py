"""Virtual time: one clock for a whole HIL bench, running `scale` times faster than real time.

A bench (`tcu-hil run`) is several processes — the agent, and the runner with the backend, the virtual
devices and the network emulator — that must agree on the time, or a 10-minute measure cap, the eCall's
one-hour T2 or a six-week notice period could only be tested in real time. They agree through
`VirtualTime`: an origin on CLOCK_MONOTONIC, which every process of one boot shares, a wall time at that
origin and a scale. The runner hands it to the agent process as `tcu run --virtual-time JSON` (a hidden
flag: a car never runs on it, and a flag, unlike an environment variable, cannot linger in a unit file).

Each process runs its event loop as a `VirtualTimeLoop`, whose `time()` is virtual: every
`asyncio.sleep`, `asyncio.timeout` and `call_later` in the process — every protocol timer of the agent
and the backend — runs at the bench's pace without a line of their code knowing it. The `Clock` they
are given (`VirtualClock`) stamps records with the virtual wall time.

What keeps real time, and why: Mosquitto (keepalive, session expiry), paho-mqtt's keepalive pings (paho
reads `time.monotonic` itself), pyserial's threads, SQLite's busy timeout, and the start-up of a Python
process. The agent's waits on another process (a device's reply, the broker's, an ack, a source's next
frame) keep their configured virtual seconds, since a black-holed link or a silent bus belong to the
bench's virtual world, but never drop below a real floor (`io_timeout`, `silence_limit`): a loaded
machine's stall of a quarter second is many virtual seconds on a fast bench, and no lost link.

The calendar can move on without time passing for the processes (`VirtualClock.advance_calendar`): a
car parked for seven weeks, for terms that run over months. A running process sees the move only in its
own `VirtualClock`; the runner restarts the agent after the move, as the car would wake.
"""

from __future__ import annotations

import asyncio
import json
import math
import selectors
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tcu.clock import Clock, SystemClock
from tcu.errors import ConfigError

FLAG = "--virtual-time"
MAX_SCALE = 10_000.0
MAX_CALENDAR_OFFSET_S = 100 * 366 * 86400.0  # a century: far beyond any term, far from datetime's limits
# The longest a loop waits in one select: a scale change or a calendar move in another task is seen
# within this much real time, and virtual deadlines never overshoot by more than `scale` times it.
_MAX_REAL_WAIT_S = 0.05
_KEYS = frozenset({"scale", "origin_real", "origin_wall", "calendar_offset_s"})


@dataclass(frozen=True, slots=True)
class VirtualTime:
    """The bench's time base: `scale` virtual seconds per real second from `origin_real`."""

    scale: float
    origin_real: float  # time.monotonic() at the origin (CLOCK_MONOTONIC: one clock for all processes)
    origin_wall: datetime  # the virtual wall time at the origin
    calendar_offset_s: float = 0.0  # the calendar moved on without time passing (a car parked for weeks)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and 0 < self.scale <= MAX_SCALE):
            raise ConfigError(f"virtual time scale {self.scale!r}: expected a number in (0, {MAX_SCALE:g}]")
        if not (math.isfinite(self.calendar_offset_s) and 0 <= self.calendar_offset_s <= MAX_CALENDAR_OFFSET_S):
            raise ConfigError(
                f"virtual time calendar_offset_s {self.calendar_offset_s!r}: expected 0 to {MAX_CALENDAR_OFFSET_S:g} s"
            )
        if self.origin_wall.tzinfo is None:
            raise ConfigError("virtual time origin_wall: expected a timezone-aware time")

    @classmethod
    def starting_now(cls, scale: float, *, wall: datetime | None = None) -> VirtualTime:
        return cls(scale=scale, origin_real=time.monotonic(), origin_wall=wall or datetime.now(UTC))

    def monotonic(self) -> float:
        """Virtual seconds since the origin."""
        return (time.monotonic() - self.origin_real) * self.scale

    def now(self) -> datetime:
        return self.origin_wall + timedelta(seconds=self.monotonic() + self.calendar_offset_s)

    def encode(self) -> str:
        return json.dumps(
            {
                "scale": self.scale,
                "origin_real": self.origin_real,
                "origin_wall": self.origin_wall.isoformat(),
                "calendar_offset_s": self.calendar_offset_s,
            }
        )

    @classmethod
    def decode(cls, text: str) -> VirtualTime:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{FLAG} is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or set(raw) != _KEYS:
            raise ConfigError(f"{FLAG}: expected an object with the keys {', '.join(sorted(_KEYS))}")
        for key in ("scale", "origin_real", "calendar_offset_s"):
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{FLAG}: {key} = {value!r} is not a finite number")
        try:
            wall = datetime.fromisoformat(str(raw["origin_wall"]))
        except ValueError as exc:
            raise ConfigError(f"{FLAG}: origin_wall: {exc}") from exc
        return cls(
            scale=float(raw["scale"]),
            origin_real=float(raw["origin_real"]),
            origin_wall=wall,
            calendar_offset_s=float(raw["calendar_offset_s"]),
        )


class VirtualClock:
    """The `Clock` of a process on virtual time; `advance_calendar` moves its wall time on at once."""

    def __init__(self, base: VirtualTime) -> None:
        self._base = base

    @property
    def base(self) -> VirtualTime:
        """What another process needs to share this clock (with the calendar as it is now)."""
        return self._base

    def now(self) -> datetime:
        return self._base.now()

    def monotonic(self) -> float:
        return self._base.monotonic()

    def advance_calendar(self, seconds: float) -> None:
        if seconds < 0:
            raise ConfigError(f"the calendar only moves forward; got {seconds} s")
        self._base = replace(self._base, calendar_offset_s=self._base.calendar_offset_s + seconds)


def virtual_or_real_clock(encoded: str | None) -> Clock:
    """The process's clock: the bench's virtual one when its runner handed one over, else the real one."""
    return SystemClock() if encoded is None else VirtualClock(VirtualTime.decode(encoded))


class _ScaledSelector(selectors.BaseSelector):
    """The loop's selector, waiting real seconds for the loop's virtual ones."""

    def __init__(self, inner: selectors.BaseSelector, scale: float) -> None:
        self._inner = inner
        self._scale = scale

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        real = _MAX_REAL_WAIT_S if timeout is None else min(max(timeout, 0.0) / self._scale, _MAX_REAL_WAIT_S)
        return self._inner.select(real)

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is the bench's virtual monotonic time."""

    def __init__(self, base: VirtualTime) -> None:
        super().__init__(_ScaledSelector(selectors.DefaultSelector(), base.scale))
        self.virtual_time = base

    def time(self) -> float:
        return self.virtual_time.monotonic()


def loop_scale() -> float:
    """Virtual seconds per real second in the running loop (1 on an ordinary loop, or outside one)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return 1.0
    return loop.virtual_time.scale if isinstance(loop, VirtualTimeLoop) else 1.0


def real_seconds(seconds: float) -> float:
    """A timeout of `seconds` real seconds, in the running loop's time: for waiting on what keeps real
    time (a process starting or stopping, Mosquitto, a disk), which a scaled timeout would cut short."""
    return seconds * loop_scale()


IO_FLOOR_REAL_S = 0.5  # what a loaded bench may stall a process or a pty for, in real seconds
SILENCE_FLOOR_REAL_S = 0.25  # a source's silence: shorter, since the frames keep coming meanwhile


def io_timeout(seconds: float, *, real_floor_s: float = IO_FLOOR_REAL_S) -> float:
    """A wait for another process (a device's reply, the broker's, an ack, a source's next frame): its
    configured `seconds` on the loop's time — a black-holed link or a silent bus are conditions of the
    bench's virtual world — but never shorter than `real_floor_s` real seconds, the stalls of the
    processes and ptys the answer crosses, which on a fast bench are many virtual seconds. On real time
    the configured value, as it is."""
    scale = loop_scale()
    return seconds if scale == 1 else max(seconds, real_floor_s * scale)


def silence_limit(seconds: float) -> float:
    """How long a source may stay silent before it counts as gone: `io_timeout` with a shorter floor."""
    return io_timeout(seconds, real_floor_s=SILENCE_FLOOR_REAL_S)
