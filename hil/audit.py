"""The no-loss audit: every sequence number a vehicle issued is stored exactly once at the backend,
or named as dropped by one of the vehicle's own `queue_overflow` events (docs/protocol.md): in
`dropped_seqs` (never sent) or `unconfirmed_seqs` (sent, or queued by an earlier run, then dropped
before the ack: the backend may hold some). Records dropped before they had a number are only counted
(`unnumbered`, over `unnumbered_span_ms`); the audit sums them for the caller, who can look for the
hole in time they leave.

"Exactly once" has two halves. The backend's primary key makes a *sequence number* impossible to
store twice, so a duplicate shows up as the same *record* (kind, creation time, body) stored under
two sequence numbers — what a queue that re-seals records it already stored would produce. And a
`queue_overflow` event that names a record the backend did store is a false report: the backend
would count as dropped what it has.

Sequence numbers restart with each queue epoch (a re-flashed car), so an audit covers one epoch, by
default the vehicle's current one; reading the backend is confined to `_stored`.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from backend_stub.store import BackendStore, StoredRecord
from tcu.uplink.overflow_notice import OVERFLOW
from telematics_wire.envelope import seq_ranges
from telematics_wire.records import RecordKind, to_millis


@dataclass(frozen=True, slots=True, kw_only=True)
class SeqAudit:
    """What the backend holds for one vehicle, judged against the sequence numbers it issued."""

    vin: str
    highest: int  # the audited range is 1..highest
    stored: int  # sequence numbers stored
    dropped: list[list[int]]  # named by an overflow event and not stored: gaps explained by policy
    overflow_events: int
    missing: list[list[int]]  # neither stored nor named as dropped: lost
    named_but_stored: list[list[int]]  # in `dropped_seqs` ("never sent"), yet the backend has them
    duplicates: list[list[int]]  # each: sequence numbers carrying the very same record
    malformed_overflow: list[int]  # seqs of overflow events whose seq lists cannot be read
    unnumbered: int = 0  # records dropped before they had a sequence number
    unnumbered_spans_ms: list[list[int]] = dataclasses.field(default_factory=list)  # their creation times

    @property
    def ok(self) -> bool:
        return not (self.missing or self.named_but_stored or self.duplicates or self.malformed_overflow)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}

    def describe(self) -> str:
        head = (
            f"VIN {self.vin}: seq 1..{self.highest}: {self.stored} stored, "
            f"{count_seqs(self.dropped)} dropped by policy ({self.overflow_events} queue_overflow event(s)"
            + (f", {self.unnumbered} more dropped before numbering" if self.unnumbered else "")
            + ")"
        )
        if self.ok:
            return head + ": none lost, none twice"
        lines = [head + ":"]
        if self.missing:
            lines.append(
                f"  LOST {count_seqs(self.missing)} seq(s), in no overflow event: {format_ranges(self.missing)}"
            )
        if self.named_but_stored:
            named = self.named_but_stored
            lines.append(f"  NAMED AS NEVER SENT BUT STORED {count_seqs(named)}: {format_ranges(named)}")
        if self.duplicates:
            extra = sum(len(group) - 1 for group in self.duplicates)
            shown = "; ".join(str(group) for group in self.duplicates[:10])
            lines.append(f"  STORED TWICE {extra} record(s) under other seqs: {shown}")
        if self.malformed_overflow:
            lines.append(f"  UNREADABLE overflow event(s) at seq {self.malformed_overflow}")
        return "\n".join(lines)


def audit_vehicle(
    store: BackendStore, vin: str, *, issued_through: int | None = None, epoch: bytes | None = None
) -> SeqAudit:
    """Audit `vin`'s sequence numbers 1..max(highest stored, highest named, `issued_through`) in one
    queue epoch: by default the vehicle's current one (sequence numbers restart with each epoch).

    `issued_through` is the last sequence number the vehicle issued (its queue's next number - 1),
    when known: without it a loss at the tail — after the last record the backend stored — is invisible.
    """
    records = _stored(store, vin, store.current_epoch(vin) if epoch is None else epoch)
    stored = {record.seq for record in records}
    never_sent: set[int] = set()
    unconfirmed: set[int] = set()
    unnumbered, spans, malformed = 0, [], []
    events = _overflow_events(records)
    for event in events:
        notice = _notice(event.body)
        if notice is None:
            malformed.append(event.seq)
            continue
        never_sent |= notice[0]
        unconfirmed |= notice[1]
        if notice[2]:
            unnumbered += notice[2][0]
            spans.append(notice[2][1])
    named = never_sent | unconfirmed
    highest = max([0, *stored, *named, issued_through or 0])
    return SeqAudit(
        vin=vin,
        highest=highest,
        stored=len(stored),
        dropped=seq_ranges(named - stored),
        overflow_events=len(events),
        missing=seq_ranges(set(range(1, highest + 1)) - stored - named),
        named_but_stored=seq_ranges(never_sent & stored),
        duplicates=_duplicates(records),
        malformed_overflow=malformed,
        unnumbered=unnumbered,
        unnumbered_spans_ms=sorted(spans),
    )


def _stored(store: BackendStore, vin: str, epoch: bytes) -> list[StoredRecord]:
    """Every record the backend holds for the vehicle's epoch: the one read of what "stored" means."""
    return store.records(vin, epoch=epoch)


def _overflow_events(records: Iterable[StoredRecord]) -> list[StoredRecord]:
    return [r for r in records if r.kind == "event" and r.body.get("type") == OVERFLOW]


def _notice(body: dict[str, Any]) -> tuple[set[int], set[int], tuple[int, list[int]] | None] | None:
    """(never sent, unconfirmed, (unnumbered count, [first_ms, last_ms]) or None); None if unreadable."""
    never_sent = _dropped_seqs(body.get("dropped_seqs", []))
    unconfirmed = _dropped_seqs(body.get("unconfirmed_seqs", []))
    if never_sent is None or unconfirmed is None:
        return None
    if "unnumbered" not in body:
        return never_sent, unconfirmed, None
    count, span = body.get("unnumbered"), body.get("unnumbered_span_ms")
    if not (isinstance(count, int) and _is_seq(count)):
        return None
    if not (isinstance(span, list) and len(span) == 2 and all(_is_millis(t) for t in span) and span[0] <= span[1]):
        return None
    return never_sent, unconfirmed, (count, [int(t) for t in span])


def _is_millis(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _dropped_seqs(value: object) -> set[int] | None:
    """`[[low, high], ...]` as a set; None when it is not that shape (the audit names the event)."""
    if not isinstance(value, list):
        return None
    seqs: set[int] = set()
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(_is_seq(bound) for bound in item)):
            return None
        low, high = item
        if low > high or high - low > 10_000_000:  # a bound, not a loop the size of an attacker's number
            return None
        seqs.update(range(low, high + 1))
    return seqs


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _duplicates(records: Sequence[StoredRecord]) -> list[list[int]]:
    """Groups of sequence numbers whose records are identical: one record stored more than once.

    Two telemetry snapshots may honestly be identical: a fixed-rate ticker that wakes late takes its
    next snapshot in the same millisecond, between two updates of the signals. Those carry consecutive
    sequence numbers; a record queued again gets its second number after the others written since.
    """
    by_content: defaultdict[tuple[str, int, bytes], list[int]] = defaultdict(list)
    for record in records:
        content = cbor2.dumps(record.body, canonical=True)
        by_content[(record.kind, to_millis(record.created), content)].append(record.seq)
    duplicates = []
    for (kind, _, _), seqs in by_content.items():
        if len(seqs) < 2:
            continue
        seqs.sort()
        same_tick = kind == RecordKind.TELEMETRY.value and seqs[-1] - seqs[0] == len(seqs) - 1
        if not same_tick:
            duplicates.append(seqs)
    return sorted(duplicates)


def count_seqs(ranges: Iterable[Sequence[int]]) -> int:
    return sum(high - low + 1 for low, high in ranges)


def format_ranges(ranges: Sequence[Sequence[int]], limit: int = 12) -> str:
    shown = ", ".join(f"{low}" if low == high else f"{low}-{high}" for low, high in ranges[:limit])
    return shown + (f", … ({len(ranges) - limit} more range(s))" if len(ranges) > limit else "")
