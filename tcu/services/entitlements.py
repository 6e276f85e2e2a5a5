"""What the vehicle may do at `now`, derived from the applied provisioning file and the equipment.

The rules (a pure function, table-tested over every combination):

- Legal eCall (6AF) works on every vehicle equipped with it, whatever the file, the payment state,
  the privacy settings or the SIM's telematics state say. It is never "running" as a service: it is
  not something a contract can switch.
- A booked service runs while its term runs (tcu.services.terms) — unless the customer is in payment
  default, which suspends every booked service, the manufacturer's intelligent emergency call (6AC)
  included.
- SIM: with Teleservices (6AE) or the intelligent emergency call (6AC) running it is active.
  Without them, a legal-eCall vehicle keeps its SIM in eCall-only mode (telematics deactivated,
  registering only for an eCall); so does any vehicle in payment default (suspension is reversible);
  otherwise the SIM is deactivated, and nothing that needs it runs.
- A vehicle that has never received a file keeps its SIM active so that its first file can arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from tcu.services.catalogue import INTELLIGENT_ECALL, LEGAL_ECALL, TELESERVICES, Catalogue, Category
from tcu.services.provisioning import ProvisioningFile
from tcu.services.sim import SimState
from tcu.services.terms import ServiceStatus

BASE_SERVICES = frozenset({TELESERVICES, INTELLIGENT_ECALL})


@dataclass(frozen=True, slots=True, kw_only=True)
class Entitlements:
    legal_ecall: bool
    sim: SimState
    running: frozenset[str]
    suspended: frozenset[str]
    statuses: Mapping[str, ServiceStatus]
    version: int

    @property
    def telematics(self) -> bool:
        return TELESERVICES in self.running

    @property
    def intelligent_ecall(self) -> bool:
        return INTELLIGENT_ECALL in self.running

    def categories(self, catalogue: Catalogue) -> frozenset[Category]:
        return catalogue.categories_of(self.running)


def derive(file: ProvisioningFile | None, *, legal_ecall_equipped: bool, now: datetime) -> Entitlements:
    if file is None:
        return Entitlements(
            legal_ecall=legal_ecall_equipped,
            sim=SimState.ACTIVE,
            running=frozenset(),
            suspended=frozenset(),
            statuses={},
            version=0,
        )
    statuses = {b.code: b.status(now) for b in file.bookings}
    by_term = frozenset(
        code
        for code, status in statuses.items()
        if status in (ServiceStatus.ACTIVE, ServiceStatus.EXPIRING) and code != LEGAL_ECALL
    )
    suspended = by_term if file.payment_default else frozenset()
    running = by_term - suspended
    if file.sim == "deactivated" and not legal_ecall_equipped:
        sim = SimState.FULLY_DEACTIVATED
    elif running & BASE_SERVICES:
        sim = SimState.ACTIVE
    elif legal_ecall_equipped or file.payment_default:
        sim = SimState.TELEMATICS_DEACTIVATED
    else:
        sim = SimState.FULLY_DEACTIVATED
    return Entitlements(
        legal_ecall=legal_ecall_equipped,
        sim=sim,
        running=running if sim is SimState.ACTIVE else frozenset(),
        suspended=suspended,
        statuses=statuses,
        version=file.version,
    )
