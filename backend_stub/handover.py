"""What the new owner is told on a sale (AGB 7.3): every active and every deactivated service of the car.

The rows say what the car itself derives from the same provisioning file — the backend runs the
vehicle's own rules (telematics_wire.entitlements.derive) on the head file it issued, with the car's
legal-eCall equipment and brand — so the buyer is never told a service is active that the car keeps
off. A code is "active" while the car runs one of its services: a booking whose term runs is
"deactivated" when the SIM is off or eCall-only (AGB 6.1), and a code in payment default lists which
of its services are suspended (only its fixed-term ones, AGB 5.5 c) and which keep running. Each row
carries the SIM state and why. Bookings that ended at the owner change itself (the seller's unpaid,
suspended ones: backend_stub.invoices) are listed as deactivated with the reason. Legal eCall is
listed for a car built with it: it is never deactivated.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from backend_stub.provisioning_store import ProvisioningStore
from telematics_wire.catalogue import LEGAL_ECALL, VehicleFit
from telematics_wire.entitlements import Entitlements, derive
from telematics_wire.sim_state import SimState
from telematics_wire.terms import Booking


class ServiceState(StrEnum):
    """A service's state in the handover list the new owner sees."""

    ACTIVE = "active"
    DEACTIVATED = "deactivated"


ENDED_UNPAID = "ended at the owner change: unpaid by the previous owner (AGB 5.5 c, 7.1); it can be booked again"


def entitlements(store: ProvisioningStore, vin: str, now: datetime) -> Entitlements:
    """What the car derives from the backend's newest file for `vin` at `now`."""
    record = store.vehicle(vin)
    head = store.head(vin)
    catalogue = store.catalogue.for_vehicle(VehicleFit(brand=record.brand))
    return derive(
        None if head is None else head.contents,
        legal_ecall_equipped=store.legal_ecall(vin),
        now=now,
        catalogue=catalogue,
    )


def _name(store: ProvisioningStore, code: str) -> str:
    definition = store.catalogue.services.get(code)
    return code if definition is None else definition.name


def _booking_row(store: ProvisioningStore, booking: Booking, now: datetime) -> dict[str, Any]:
    end = booking.end()
    row: dict[str, Any] = {
        "code": booking.code,
        "name": _name(store, booking.code),
        "status": booking.status(now).value,
        "term": booking.term.value,
        "end": None if end is None else end.isoformat(),
    }
    if booking.cancelled_on is not None:
        row["cancelled_on"] = booking.cancelled_on.isoformat()
    return row


def handover_list(
    store: ProvisioningStore, vin: str, now: datetime, *, ended: Iterable[Booking] = ()
) -> list[dict[str, Any]]:
    """One row per service: code, name, state (active/deactivated), the car's running and suspended
    services of the code, the SIM and why, the booked term's status, term, end; `ended`: bookings that
    ended at the owner change."""
    head = store.head(vin)
    car = entitlements(store, vin, now)
    sim = {"sim": car.sim.value, "sim_reason": car.sim_reason}
    rows: list[dict[str, Any]] = []
    for booking in () if head is None else head.contents.bookings:
        if booking.code == LEGAL_ECALL:
            continue
        code = booking.code
        running = sorted(car.services_running.get(code, ()))
        suspended = sorted(car.services_suspended.get(code, ()))
        row = _booking_row(store, booking, now) | {
            "state": ServiceState.ACTIVE if code in car.running else ServiceState.DEACTIVATED,
            "running_services": running,
            "suspended_services": suspended,
            **sim,
        }
        notes = []
        if suspended:
            notes.append(f"payment default (AGB 5.5 c): {', '.join(suspended)} suspended until paid")
        if booking.is_running(now) and car.sim is not SimState.ACTIVE:
            notes.append(f"SIM {car.sim.value}: {car.sim_reason}")
        if notes:
            row["note"] = "; ".join(notes)
        rows.append(row)
    for booking in ended:
        rows.append(
            _booking_row(store, booking, now)
            | {
                "state": ServiceState.DEACTIVATED,
                "status": "ended",
                "running_services": [],
                "suspended_services": [],
                **sim,
                "note": ENDED_UNPAID,
            }
        )
    if car.legal_ecall:
        rows.append(
            {
                "code": LEGAL_ECALL,
                "name": "Legal eCall (EU 112)",
                "state": ServiceState.ACTIVE,
                "status": "active",
                "term": "legal",
                "end": None,
                "running_services": [],
                "suspended_services": [],
                **sim,
                "note": "part of the type approval: works in every state, never deactivated (AGB 1.5, 6.1)",
            }
        )
    return sorted(rows, key=lambda row: str(row["code"]))
