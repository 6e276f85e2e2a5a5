"""The `queue_overflow` event: every record the queue dropped, so that no gap is ever silent.

docs/protocol.md defines the body. Sequence numbers the backend cannot have (never sent) and those it
may have (sent, or queued by an earlier run, then dropped before their ack) are named apart; records
dropped from memory before they had a number are named by count and time span.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tcu.uplink.memory_hold import Shed
from telematics_wire.envelope import seq_ranges

OVERFLOW = "queue_overflow"
# Ranges named per notice: about 12 bytes each, so a notice stays far below the 64 KiB payload limit;
# the rest wait for the next notice.
MAX_NOTICE_RANGES = 2000


def notice_body(ranges: Sequence[tuple[int, int, bool]], shed: Shed) -> dict[str, Any]:
    """`ranges` are (low, high, unconfirmed) rows of the queue's `dropped` table."""
    never_sent = [seq for low, high, maybe in ranges if not maybe for seq in range(low, high + 1)]
    unconfirmed = [seq for low, high, maybe in ranges if maybe for seq in range(low, high + 1)]
    body: dict[str, Any] = {
        "type": OVERFLOW,
        "dropped": len(never_sent) + len(unconfirmed) + shed.count,
        "dropped_seqs": seq_ranges(never_sent),
    }
    if unconfirmed:
        body["unconfirmed_seqs"] = seq_ranges(unconfirmed)
    if shed.count:
        body["unnumbered"] = shed.count
        body["unnumbered_span_ms"] = [shed.first_ms, shed.last_ms]
    return body
