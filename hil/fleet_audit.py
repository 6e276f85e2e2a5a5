"""The fleet's no-loss audit: every record each vehicle queued, in every fleet process, is in the
backend's store, whichever ingest worker stored it.

A fleet's queues are fresh, so a vehicle that queued n records issued sequence numbers 1..n of one
epoch; each one missing from the store is a lost record. (`hil.audit` is the full audit of one
vehicle's run, overflow notices and duplicates included; a fleet run has neither.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backend_stub.store import BackendStore

_NAMED = 10  # vehicles named in the result; the count covers the rest


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetAudit:
    queued: int
    stored: int
    lost: int
    short: tuple[str, ...]  # the first VINs with a record missing

    @property
    def passed(self) -> bool:
        return self.lost == 0


def audit_fleet(database: Path, queued: Mapping[str, int]) -> FleetAudit:
    """Compare what each VIN queued (`queued[vin]` records, seq 1..n) with what `database` stored."""
    store = BackendStore(database, read_only=True)
    try:
        stored = lost = 0
        short: list[str] = []
        for vin, count in sorted(queued.items()):
            seqs = set(store.seqs(vin))
            missing = count - len(seqs & set(range(1, count + 1)))
            stored += len(seqs)
            lost += missing
            if missing and len(short) < _NAMED:
                short.append(vin)
    finally:
        store.close()
    return FleetAudit(queued=sum(queued.values()), stored=stored, lost=lost, short=tuple(short))
