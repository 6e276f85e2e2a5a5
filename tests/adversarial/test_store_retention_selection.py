"""The store's retention selection (backend_stub.store_retention): an owner change of one vehicle takes
the personal values out of that vehicle's records *before* the change, in its own order, and touches no
other vehicle's records or last values and nothing from the change on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backend_stub.store import BackendStore
from telematics_wire.records import ReceivedRecord, RecordKind

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SOLD, OTHER = "WBA00000000000001", "WBA00000000000002"
PATH = "Vehicle.CurrentLocation.Latitude"


def _telemetry(vin: str, seq: int) -> ReceivedRecord:
    millis = int((NOW + timedelta(seconds=seq)).timestamp() * 1000)
    body = {"signals": {PATH: {"v": 48.0 + seq, "t": millis}}}
    return ReceivedRecord(vin=vin, seq=seq, kind=RecordKind.TELEMETRY, epoch=b"q1", created=NOW, body=body)


def _without_position(kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
    return {"signals": {}} if body.get("signals") else None


def test_an_owner_change_scrubs_only_that_vehicle_and_only_before_the_change(tmp_path: Path) -> None:
    store = BackendStore(tmp_path / "backend.db")
    try:
        for vin in (SOLD, OTHER):
            store.enroll(vin, b"k" * 32, NOW)
            for seq in (1, 2, 3):
                with store.transaction():
                    store.add_record(_telemetry(vin, seq), NOW)
        change = store.order_of(SOLD, b"q1", 3)  # the owner change is record 3
        assert change is not None
        scrubbed = store.scrub_records(_without_position, NOW, vin=SOLD, before=change)
        assert scrubbed == 2
        bodies = {(r.vin, r.seq): r.body for r in store.records(SOLD) + store.records(OTHER)}
        assert bodies[(SOLD, 1)] == bodies[(SOLD, 2)] == {"signals": {}}
        assert PATH in bodies[(SOLD, 3)]["signals"], "the change itself and what follows are the new owner's"
        assert all(PATH in bodies[(OTHER, seq)]["signals"] for seq in (1, 2, 3)), "another vehicle is untouched"
        # The last values were set by record 3 of each car: at the change, not before it, so both stay.
        assert store.delete_last_values(lambda path: path == PATH, vin=SOLD, before=change) == 0
        later = store.order_of(SOLD, b"q1", 4)
        assert store.delete_last_values(lambda path: path == PATH, vin=SOLD, before=later) == 1
        assert store.last_value(SOLD, PATH) is None
        assert store.last_value(OTHER, PATH) == 51.0
    finally:
        store.close()
