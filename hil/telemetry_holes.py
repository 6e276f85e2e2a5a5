"""Telemetry holes: stretches of an agent's life with no stored snapshot, and why each is not a loss.

Records that never got a sequence number (held in memory on a full disk, then discarded) are invisible
to the sequence audit (`hil.audit`); telemetry, one snapshot every interval, shows them as holes in time.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifetime:
    """One run of the producing agent, wall-clock seconds."""

    start: float
    end: float
    ended_by: Literal["SIGKILL", "stop"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hole:
    start: float  # wall-clock seconds
    end: float
    where: Literal["after start", "between snapshots", "before SIGKILL", "before stop"]
    explained: str | None  # why it is not a loss, or None

    @property
    def seconds(self) -> float:
        return self.end - self.start


def telemetry_holes(
    snapshots: Sequence[tuple[float, int]],
    lifetimes: Sequence[Lifetime],
    *,
    dropped: set[int],
    disk_full: Sequence[tuple[float, float]],
    hole_s: float,
    startup_grace_s: float,
    unnumbered: Sequence[tuple[float, float]] = (),
) -> list[Hole]:
    """Stretches of an agent's life with no stored snapshot.

    `snapshots` are (creation time, seq) of the stored telemetry. A hole is explained when the seqs
    on either side of it enclose one named as dropped by policy, when an overflow notice names records
    dropped before numbering (`unnumbered`: their first and last creation time) within it, or when it
    ends in a SIGKILL while the disk was full (records held in memory die with the process, as in a
    power cut).
    """
    ordered = sorted(snapshots)
    holes: list[Hole] = []

    def explain(start: float, end: float, low: int, high: int) -> str | None:
        if any(low < seq < high for seq in dropped):
            return "dropped by policy"
        if any(first < end and last > start for first, last in unnumbered):
            return "dropped before numbering, counted in an overflow notice"
        return None

    for life in lifetimes:
        inside = [(t, seq) for t, seq in ordered if life.start <= t <= life.end + 0.5]
        if not inside:
            if life.end - life.start > startup_grace_s:
                reason = explain(life.start, life.end, 0, 0)
                holes.append(Hole(start=life.start, end=life.end, where="after start", explained=reason))
            continue
        if inside[0][0] - life.start > startup_grace_s:
            reason = explain(life.start, inside[0][0], 0, 0)
            holes.append(Hole(start=life.start, end=inside[0][0], where="after start", explained=reason))
        for (t1, s1), (t2, s2) in itertools.pairwise(inside):
            if t2 - t1 > hole_s:
                reason = explain(t1, t2, min(s1, s2), max(s1, s2))
                holes.append(Hole(start=t1, end=t2, where="between snapshots", explained=reason))
        last, last_seq = inside[-1]
        if life.end - last > hole_s:
            later = [seq for t, seq in ordered if t > life.end]
            reason = explain(last, life.end, last_seq, min(later, default=last_seq + 10**9))
            full = any(low < life.end and high > last for low, high in disk_full)
            if reason is None and life.ended_by == "SIGKILL" and full:
                reason = "held in memory on a full disk at the SIGKILL"
            where: Literal["before SIGKILL", "before stop"] = (
                "before SIGKILL" if life.ended_by == "SIGKILL" else "before stop"
            )
            holes.append(Hole(start=last, end=life.end, where=where, explained=reason))
    return holes
