"""The store's part in retention and owner change (`backend_stub.retention`): taking personal values out
of stored records and deleting personal last values, by age or before a point in a vehicle's order.

`StoreRetention` is mixed into `BackendStore`, which gives it the connection, the transactions and the
order of epochs; the methods are the store's own (`store.scrub_records(...)`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cbor2

from backend_stub.store_sql import SqlConnection
from telematics_wire.records import to_millis

# rewrite(kind, body) -> the body without its personal values, or None when it holds none.
BodyRewrite = Callable[[str, dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleOrder:
    """A point in a vehicle's own order (epoch by first sight, then sequence number): what came before a
    record is the records of earlier epochs and the lower sequence numbers of its own."""

    ordinal: int
    seq: int


class StoreRetention:
    _db: SqlConnection

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # BackendStore's

    def epoch_ordinal(self, vin: str, epoch: bytes) -> int | None:
        raise NotImplementedError  # BackendStore's

    def order_of(self, vin: str, epoch: bytes, seq: int) -> VehicleOrder | None:
        ordinal = self.epoch_ordinal(vin, epoch)
        return None if ordinal is None else VehicleOrder(ordinal=ordinal, seq=seq)

    def scrub_records(
        self,
        rewrite: BodyRewrite,
        now: datetime,
        *,
        received_by: datetime | None = None,
        vin: str | None = None,
        before: VehicleOrder | None = None,
        batch: int = 500,
    ) -> int:
        """Take the personal values out of records not scrubbed yet: those received at or before
        `received_by`, and/or those of `vin` before `before` in its own order. The record itself stays
        (its sequence number still deduplicates a resend, still closes a gap) and is marked scrubbed.
        One transaction per batch, so ingest waits at most one batch. Returns the bodies changed."""
        where, params = _selection(
            "r.scrubbed_ms IS NULL", row="r", ordinal="e.ordinal", received_by=received_by, vin=vin, before=before
        )
        query = "SELECT r.vin, r.epoch, r.seq, r.kind, r.body FROM records r "
        query += "LEFT JOIN epochs e ON e.vin = r.vin AND e.epoch = r.epoch WHERE "
        query += where + " ORDER BY r.received_ms LIMIT ?"
        changed, stamp = 0, to_millis(now)
        while True:
            with self.transaction():
                rows = self._db.execute(query, (*params, batch)).fetchall()
                for row_vin, epoch, seq, kind, body in rows:
                    scrubbed = rewrite(kind, cbor2.loads(body))
                    # `scrubbed_ms IS NULL` again: another worker's retention pass (PostgreSQL) may have
                    # scrubbed it since the SELECT; a body is rewritten and counted once.
                    if scrubbed is None:
                        self._db.execute(
                            "UPDATE records SET scrubbed_ms=? "
                            "WHERE vin=? AND epoch=? AND seq=? AND scrubbed_ms IS NULL",
                            (stamp, row_vin, epoch, seq),
                        )
                    else:
                        cursor = self._db.execute(
                            "UPDATE records SET scrubbed_ms=?, body=? "
                            "WHERE vin=? AND epoch=? AND seq=? AND scrubbed_ms IS NULL",
                            (stamp, cbor2.dumps(scrubbed), row_vin, epoch, seq),
                        )
                        changed += cursor.rowcount
            if len(rows) < batch:
                return changed

    def delete_last_values(
        self,
        personal: Callable[[str], bool],
        *,
        received_by: datetime | None = None,
        vin: str | None = None,
        before: VehicleOrder | None = None,
    ) -> int:
        """Delete the last values of personal paths received at or before `received_by`, and/or of `vin`
        before `before` in its own order. Returns how many went."""
        where, params = _selection(
            "TRUE", row="l", ordinal="l.ordinal", received_by=received_by, vin=vin, before=before
        )
        deleted = 0
        with self.transaction():
            # In (vin, path) order, the order PostgreSQL ingest workers lock last values in: no deadlock.
            query = "SELECT l.vin, l.path FROM last_values l WHERE "
            query += where + " ORDER BY l.vin, l.path"
            rows = self._db.execute(query, params).fetchall()
            # The selection again in the DELETE: a value another worker stored since the SELECT (PostgreSQL)
            # is newer than the cutoff or the change, and stays.
            delete = "DELETE FROM last_values AS l WHERE l.vin=? AND l.path=? AND "
            delete += where
            for row_vin, path in rows:
                if personal(path):
                    deleted += self._db.execute(delete, (row_vin, path, *params)).rowcount
        return deleted

    def scrubbed(self, vin: str) -> int:
        """How many of the vehicle's records have been through scrubbing."""
        (count,) = self._db.execute("SELECT count(*) FROM records WHERE vin=? AND scrubbed_ms IS NOT NULL", (vin,))
        return int(count[0])


def _selection(
    first: str,
    *,
    row: str,
    ordinal: str,
    received_by: datetime | None,
    vin: str | None,
    before: VehicleOrder | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause and its parameters for rows received at or before `received_by`, and/or of `vin`
    before `before` in its own order (`row`: the table's alias; `ordinal`: the column of its epoch's place)."""
    where, params = [first], list[Any]()
    if received_by is not None:
        where.append(f"{row}.received_ms <= ?")
        params.append(to_millis(received_by))
    if vin is not None:
        where.append(f"{row}.vin = ?")
        params.append(vin)
    if before is not None:
        where.append(f"({ordinal} < ? OR ({ordinal} = ? AND {row}.seq < ?))")
        params.extend((before.ordinal, before.ordinal, before.seq))
    return " AND ".join(where), params  # fixed conditions; every value is a parameter
