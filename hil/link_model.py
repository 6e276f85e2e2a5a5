"""The emulated link's model, without I/O: its shape per direction, each chunk's delay and losses,
bandwidth pacing, and how a tunnel cuts it. `hil.netem.NetworkEmulator` applies it to TCP traffic.

`up` is client → upstream (vehicle → broker), `down` the other way; each is a frozen `LinkShape` read
for every chunk. A chunk waits `latency_s` plus a uniform draw from [0, `jitter_s`] (latency is a
floor), never overtakes the one before it, and is paced by an optional token bucket (`bandwidth_bps`).

Loss, honestly: the proxy sits above TCP, and removing bytes would corrupt the MQTT stream, which a
real network never does: TCP retransmits. To an application, loss is delay and, if it goes on, a dead
connection. So `loss` is the probability that a chunk (one socket read, not an IP packet) is lost on
each transmission: each loss adds a retransmission timeout (`rto_s`, Linux's minimum 0.2 s, doubling
each time) and holds back everything behind it (head-of-line blocking); a chunk lost
`max_retransmits + 1` times in a row cuts the connection (both sides closed), as a stack, a NAT gateway
or the keepalive would; `max_retransmits=0`: every loss cuts. Not modelled: lost ACKs, duplicates.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


class CutMode(enum.StrEnum):
    BLACKHOLE = "blackhole"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkShape:
    """One direction of the emulated link; replace it as a whole to change the link at run time."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0  # per chunk and transmission; see the module docstring
    rto_s: float = 0.2
    max_retransmits: int = 3
    bandwidth_bps: float | None = None  # bits per second; None = unlimited
    burst_bytes: int = 16384

    def __post_init__(self) -> None:
        if min(self.latency_s, self.jitter_s, self.rto_s, self.max_retransmits) < 0:
            raise ValueError(f"LinkShape: latency_s, jitter_s, rto_s, max_retransmits must be >= 0 in {self!r}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"LinkShape.loss: a probability from 0 to 1, got {self.loss!r}")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ValueError(f"LinkShape.bandwidth_bps: must be > 0 or None, got {self.bandwidth_bps!r}")
        if self.burst_bytes < 1:
            raise ValueError(f"LinkShape.burst_bytes: must be >= 1, got {self.burst_bytes!r}")


def transit_delay(shape: LinkShape, rng: random.Random) -> tuple[float, int]:
    """A chunk's delay and its losses on the way; more than `shape.max_retransmits` losses cut the link."""
    delay = shape.latency_s + (rng.uniform(0.0, shape.jitter_s) if shape.jitter_s else 0.0)
    rto, losses = shape.rto_s, 0
    while losses <= shape.max_retransmits and shape.loss and rng.random() < shape.loss:
        delay += rto
        rto *= 2
        losses += 1
    return delay, losses


@dataclass(slots=True, kw_only=True)
class TokenBucket:
    """Pacing at `rate_bps`, `burst_bytes` deep; tokens may go negative, a debt later chunks wait out."""

    rate_bps: float
    burst_bytes: int
    tokens: float = field(init=False)
    updated: float | None = None

    def __post_init__(self) -> None:
        self.tokens = float(self.burst_bytes)

    def wait_s(self, nbytes: int, now: float) -> float:
        """Take `nbytes` at `now`; returns how long they must wait before they are on the wire."""
        if self.updated is not None:
            self.tokens = min(self.burst_bytes, self.tokens + max(0.0, now - self.updated) * self.rate_bps / 8)
        self.updated = now
        self.tokens -= nbytes
        return max(0.0, -self.tokens * 8 / self.rate_bps)
