"""What the new owner is told on a sale (AGB 7.3): every active and every deactivated service of the car.

Read from the provisioning desired state (the head file the backend issued): a service is "active"
while its term runs, "deactivated" when it has not started, has run out or ended. The SIM state and
a payment default are said with it, and legal eCall is listed for a car built with it: it is never
deactivated.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backend_stub.provisioning_store import ProvisioningStore
from tcu.services.catalogue import LEGAL_ECALL

ACTIVE = "active"
DEACTIVATED = "deactivated"


def handover_list(store: ProvisioningStore, vin: str, now: datetime) -> list[dict[str, Any]]:
    """One row per service: code, name, state (active/deactivated), status, term, end, and why."""
    head = store.head(vin)
    rows: list[dict[str, Any]] = []
    if head is not None:
        file = head.contents
        for booking in file.bookings:
            definition = store.catalogue.services.get(booking.code)
            running = booking.is_running(now)
            end = booking.end()
            row: dict[str, Any] = {
                "code": booking.code,
                "name": booking.code if definition is None else definition.name,
                "state": ACTIVE if running else DEACTIVATED,
                "status": booking.status(now).value,
                "term": booking.term.value,
                "end": None if end is None else end.isoformat(),
            }
            if booking.cancelled_on is not None:
                row["cancelled_on"] = booking.cancelled_on.isoformat()
            if file.sim != "active" and booking.code != LEGAL_ECALL:
                row["state"], row["note"] = DEACTIVATED, f"SIM {file.sim}"
            elif file.payment_default and running and booking.code != LEGAL_ECALL:
                row["note"] = "payment default: paid services are suspended"
            rows.append(row)
    if store.legal_ecall(vin) and not any(row["code"] == LEGAL_ECALL for row in rows):
        rows.append(
            {"code": LEGAL_ECALL, "name": "Legal eCall (EU 112)", "state": ACTIVE, "status": "active", "term": "legal"}
        )
    return rows
