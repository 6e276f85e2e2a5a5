"""What a seeded chaos run does (`hil.chaos`): its settings, and the faults drawn from its seed.

The same seed draws the same schedule: a failure is reproduced with `tcu-hil chaos --seed N`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from hil.layout import DEMO_VIN

Action = Literal["kill_agent", "kill_broker", "kill_backend", "stop_broker", "fill_disk"]
ACTIONS: tuple[Action, ...] = ("kill_agent", "kill_broker", "kill_backend", "stop_broker", "fill_disk")

_TARGET: dict[Action, str] = {
    "kill_agent": "agent",
    "kill_broker": "broker",
    "stop_broker": "broker",
    "kill_backend": "backend",
    "fill_disk": "disk",
}
# Seconds until the fault is undone: restart after a kill, SIGCONT after a stop, ballast removed.
# A stop longer than the agent's 3 s keepalive makes it notice and reconnect; a shorter one must not lose.
_HOLD: dict[Action, tuple[float, float]] = {
    "kill_agent": (0.0, 2.0),
    "kill_broker": (0.0, 3.0),
    "kill_backend": (0.0, 2.0),
    "stop_broker": (1.0, 8.0),
    "fill_disk": (3.0, 12.0),
}
_UNDO = {"kill_agent": "restart", "kill_broker": "restart", "kill_backend": "restart", "stop_broker": "SIGCONT"}


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float  # seconds after the agent first started
    action: Action
    hold_s: float  # until restarted / resumed / freed

    def describe(self) -> str:
        undo = f"{_UNDO.get(self.action, 'freed')} after {self.hold_s:.2f} s"
        return f"t={self.at_s:7.2f} s  {self.action:<12}  {undo}"


def chaos_schedule(seed: int, seconds: float, *, mean_gap_s: float = 3.0) -> tuple[Fault, ...]:
    """The faults of one run: every kind once first (in a drawn order), then drawn freely.

    A fault waits until the previous fault on the same process is undone, so the schedule does what
    it says; faults on different processes overlap freely.
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    first: list[Action] = list(ACTIONS)
    rng.shuffle(first)
    busy_until = dict.fromkeys(_TARGET.values(), 0.0)
    faults: list[Fault] = []
    at = rng.uniform(2.0, 4.0)  # records flowing first
    while at < seconds:
        free_now = [a for a in ACTIONS if busy_until[_TARGET[a]] <= at]
        wanted = next((a for a in first if a in free_now), None)
        action = wanted if wanted is not None else rng.choice(free_now) if free_now else None
        if action is not None:
            if action in first:
                first.remove(action)
            hold = round(rng.uniform(*_HOLD[action]), 2)
            faults.append(Fault(round(at, 2), action, hold))
            busy_until[_TARGET[action]] = at + hold + 0.5
        at += rng.expovariate(1.0 / mean_gap_s)
    return tuple(faults)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosConfig:
    seed: int
    seconds: float = 40.0  # the fault window; the drain comes after
    telemetry_interval_s: float = 0.02  # 50 records/s: a few seconds of outage fill the queue bound
    max_records: int = 300  # small, so a few seconds of outage make the drop policy (and its notices) work
    disk_bytes: int = 2 * 1024 * 1024
    drain_timeout_s: float = 60.0
    hole_s: float = 3.0  # telemetry missing this long, with the agent up, is a hole
    startup_grace_s: float = 6.0  # from process start to the first snapshot, on a loaded machine
    vin: str = DEMO_VIN
