"""A transaction's last values, held back until its commit and written folded: one row per signal and
run of a vehicle's records, instead of one per signal and record (`BackendStore.transaction`).

Why folding is exact. The rule (`backend_stub.store.LAST_VALUE_RULE`) lets a row (ordinal o, seq s,
received r) replace the stored one x when o is x's ordinal and s > x.seq, or o differs and r >= x.received.
Upserting u1 then u2 of one ordinal, with s2 > s1 and r2 >= r1, ends as upserting u2 alone, whatever x is:

- x of that ordinal: each upsert keeps the higher seq, so the end is the highest of x, u1, u2: of x, u2.
- x of another ordinal: u1 replaces x when r1 >= x.received and u2 then replaces u1 (s2 > s1); otherwise
  x stays and u2 replaces it when r2 >= x.received. Both ways: u2 exactly when r2 >= x.received.
- no x: u2 both ways.

So within a run of a vehicle's records of one epoch, sequence numbers rising and received times not
falling, each signal's last row stands for all of the run's. A record of another epoch, a lower
sequence number (a resend after newer records) or an earlier received time (the clock stepped back)
starts a new run, and runs are written in order: across them the upserts stay one by one. (Two epochs
interleaved do not fold: stored (A, 10), then (B, 5) and (A, 8) one by one end at (A, 8), while folding
A's rows first would end at (A, 10).)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import cbor2


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldRecord:
    """A stored record's readings, as the last values it may move. Its `signals` are read when the rows
    are written, at the commit: nothing may change a record's body before (nothing does)."""

    vin: str
    ordinal: int
    seq: int
    received_ms: int
    signals: Mapping[str, Mapping[str, Any]]  # the record's `signals` map
    paths: Collection[str]  # those of its entries that are readings (`storable.usable_signals`)


def folded_rows(held: Iterable[HeldRecord]) -> list[tuple[Any, ...]]:
    """(vin, path, value, ts_ms, seq, ordinal, received_ms) rows which, upserted under the rule in this
    order, leave last_values as the records' readings upserted one by one, in the order held, would."""
    by_vehicle: dict[str, list[HeldRecord]] = {}
    for record in held:
        by_vehicle.setdefault(record.vin, []).append(record)  # vehicles' rows never meet: each apart
    rows: list[tuple[Any, ...]] = []
    for records in by_vehicle.values():
        latest = dict.fromkeys(records[0].paths, records[0])  # path -> the run's latest record holding it
        for previous, record in pairwise(records):
            if not _same_run(previous, record):
                rows += _rows(latest)
                latest = {}
            latest.update(dict.fromkeys(record.paths, record))
        rows += _rows(latest)
    return rows


def _same_run(previous: HeldRecord, record: HeldRecord) -> bool:
    return (
        record.ordinal == previous.ordinal and record.seq > previous.seq and record.received_ms >= previous.received_ms
    )


def _rows(latest: dict[str, HeldRecord]) -> list[tuple[Any, ...]]:
    rows = []
    for path, record in latest.items():
        item = record.signals[path]
        rows.append(
            (record.vin, path, cbor2.dumps(item["v"]), item["t"], record.seq, record.ordinal, record.received_ms)
        )
    return rows
