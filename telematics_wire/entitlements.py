"""What the vehicle may do at `now`, derived from the applied provisioning file and the equipment.

The rules (a pure function; tests/services/test_sim_table.py states them as one table over every
combination), each from the ConnectedDrive terms (AGB) and their catalogue of option codes:

- Legal eCall (6AF) works on every vehicle equipped with it, whatever the file, the payment state or
  the SIM's telematics state say: it is part of the type approval (AGB 1.5, 6.1; Regulation (EU)
  2015/758). It is never "running" as a service: it is not something a contract can switch.
- A booked option code brings the services the catalogue lists for it and the vehicle's brand, each
  on its own term: the booked one where the service lists it, else the service's own
  (telematics_wire.catalogue `included_terms`). A service runs while its term runs (telematics_wire.terms);
  a code runs while any of its services runs.
- Payment default (AGB 5.5 c) suspends "die betroffenen Dienste" of the codes the file names in
  `suspended`: of each, the services with a fixed term — the paid ones, "befristeter kostenpflichtiger
  Dienst" (AGB 3.2). Its unlimited services keep running, and so does every unlimited code: the free
  Teleservices (AGB 1.3: no "Zahlungspflicht") and a separately booked, unlimited Intelligenter Notruf
  (6AC). The intelligent emergency call is suspended exactly where it comes from a suspended paid
  booking — 612 BMW Assist lists "Intelligenter Notruf [Laufzeit 3 Monate/Laufzeit 3 Jahre]": that
  is the "gegebenenfalls" of AGB 5.5 c.
- The SIM (AGB 3.3: every service runs over it) is active while a base service — Teleservices or the
  Intelligenter Notruf, from whichever booked code (6AE, 6AC, 612, 6U1/6U2/6U3, 6FP, 6UM) — runs
  unsuspended, unless the file deactivates it. Otherwise a legal-eCall vehicle is eCall-only
  (telematics_deactivated: "die SIM-Karte ... sowie der gesetzliche Notruf bleiben ... aktiv") and any
  other vehicle is fully deactivated ("Mit der Deaktivierung dieser Dienste wird auch die ... SIM-Karte
  deaktiviert"; AGB 6.1).
- Without an active SIM nothing runs: no telematics, no events, no remote measures, no intelligent
  call, and only a provisioning file that reactivates the SIM is applied (tcu.services.manager).
- A vehicle that has never received a file keeps its SIM active so that its first file can arrive.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from telematics_wire.catalogue import BASE_SERVICES, INTELLIGENT_ECALL_SERVICE, LEGAL_ECALL, Brand, Catalogue, Category
from telematics_wire.provisioning import ProvisioningFile
from telematics_wire.sim_state import SimState
from telematics_wire.terms import Booking, ServiceStatus, Term

_LOGGER = logging.getLogger(__name__)

__all__ = ["BASE_SERVICES", "Entitlements", "derive", "has_fixed_term", "is_paid"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Entitlements:
    legal_ecall: bool  # equipped with the legal 112 eCall: it works in every state below
    sim: SimState
    running: frozenset[str]  # codes with a service running; empty unless the SIM is active
    suspended: frozenset[str]  # codes with a service suspended by payment default
    statuses: Mapping[str, ServiceStatus]  # per code, of its booked term
    version: int
    payment_default: bool = False  # the file names a code in payment default
    sim_reason: str = ""  # why the SIM is in its state, in words a person can act on
    # Per code, the names of its services (catalogue) that run / are suspended; running ones only
    # while the SIM is active.
    services_running: Mapping[str, frozenset[str]] = field(default_factory=dict)
    services_suspended: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def telematics(self) -> bool:
        """Whether anything collected in the car (telemetry, events) may be sent, and remote measures run."""
        return self.sim is SimState.ACTIVE

    @property
    def base_services(self) -> frozenset[str]:
        """The base services running (Teleservices, Intelligenter Notruf), whichever code brings them."""
        return frozenset(name for names in self.services_running.values() for name in names) & BASE_SERVICES

    @property
    def intelligent_ecall(self) -> bool:
        """The manufacturer's emergency call to its call centre: the Intelligenter Notruf of any booked code
        (6AC, 612, 6U1 ...) running, not suspended, SIM active.

        tcu.ecall routes a call by this and `legal_ecall`; keep the name."""
        return self.sim is SimState.ACTIVE and INTELLIGENT_ECALL_SERVICE in self.base_services

    def inactive_reason(self) -> str | None:
        """None while the SIM is active; else why nothing but the emergency call may use it."""
        if self.sim is SimState.ACTIVE:
            return None
        return f"SIM is {self.sim.value}: {self.sim_reason}"

    def categories(self, catalogue: Catalogue) -> frozenset[Category]:
        return catalogue.categories_of(self.running)


def has_fixed_term(booking: Booking) -> bool:
    """A booking with a fixed term: the paid kind (AGB 3.2), which can be invoiced; an unlimited booking
    is of a code whose services all come with the car or the contract (AGB 1.3)."""
    return booking.term is not Term.UNLIMITED


is_paid = has_fixed_term  # the name of round one, still imported by the backend (desired_state, invoices)


@functools.cache
def _default_catalogue() -> Catalogue:
    return Catalogue.load()


def _names(items: frozenset[str]) -> str:
    return ", ".join(sorted(items)) or "none"


@dataclass(frozen=True, slots=True)
class _Services:
    """One booking's services at `now`: which run by their terms and which of those are suspended."""

    running: frozenset[str]
    suspended: frozenset[str]


def _services(booking: Booking, file: ProvisioningFile, catalogue: Catalogue, brand: Brand, now: datetime) -> _Services:
    entry = catalogue.services.get(booking.code)
    if entry is None:  # the parser refuses unknown codes; a file built in code may still carry one
        _LOGGER.warning("booked code %s is not in the catalogue: it brings no service", booking.code)
        return _Services(frozenset(), frozenset())
    running: set[str] = set()
    suspended: set[str] = set()
    included = entry.included_terms(brand, booking.term)
    if not any(booking.term in service.terms for service, _ in included):
        # A term none of its services lists (no catalogue check on a vehicle without a [vehicle] build):
        # the file's word is the only one there is, and a term that ends must end.
        included = tuple((service, booking.term) for service, _ in included)
    for service, term in included:
        try:
            runs = booking.for_term(term, first_registration=file.first_registration).is_running(now)
        except ValueError as exc:  # the parser refuses such a file: defence in depth
            _LOGGER.warning("service %r of %s cannot run on %s: %s", service.name, booking.code, term, exc)
            continue
        if not runs:
            continue
        if booking.code in file.suspended and term is not Term.UNLIMITED:
            suspended.add(service.name)  # paid: "befristeter kostenpflichtiger Dienst" (AGB 3.2, 5.5 c)
        else:
            running.add(service.name)
    return _Services(frozenset(running), frozenset(suspended))


def derive(
    file: ProvisioningFile | None,
    *,
    legal_ecall_equipped: bool,
    now: datetime,
    catalogue: Catalogue | None = None,
) -> Entitlements:
    """The entitlements at `now`. `catalogue` says which services each code brings for the vehicle's brand
    (its `vehicle.brand`; BMW when it names no vehicle); by default the shipped catalogue, for a BMW."""
    if file is None:
        return Entitlements(
            legal_ecall=legal_ecall_equipped,
            sim=SimState.ACTIVE,
            running=frozenset(),
            suspended=frozenset(),
            statuses={},
            version=0,
            sim_reason="never provisioned: the SIM stays active so that the first provisioning file can arrive",
        )
    catalogue = catalogue if catalogue is not None else _default_catalogue()
    brand = catalogue.vehicle.brand if catalogue.vehicle is not None else Brand.BMW
    statuses = {b.code: b.status(now) for b in file.bookings}
    per_code = {b.code: _services(b, file, catalogue, brand, now) for b in file.bookings if b.code != LEGAL_ECALL}
    running = {code: s.running for code, s in per_code.items() if s.running}
    suspended = {code: s.suspended for code, s in per_code.items() if s.suspended}
    base = frozenset(name for names in running.values() for name in names) & BASE_SERVICES
    if file.sim == "deactivated" and not legal_ecall_equipped:
        sim = SimState.FULLY_DEACTIVATED
        reason = "the provisioning file deactivates the SIM (AGB 6.1): no service and no emergency call"
    elif base:
        sim = SimState.ACTIVE
        bringing = frozenset(code for code, names in running.items() if names & BASE_SERVICES)
        reason = f"base service(s) {_names(base)} running (from {_names(bringing)})"
    else:
        # A suspended paid package may hold the intelligent call (612), never Teleservices: those are
        # unlimited in every code that has them, so payment default alone never takes the SIM.
        why = "no base service (Teleservices, Intelligenter Notruf) running"
        if legal_ecall_equipped:
            sim = SimState.TELEMATICS_DEACTIVATED
            reason = f"{why}; eCall-only: the legal 112 eCall stays available"
        else:
            sim = SimState.FULLY_DEACTIVATED
            reason = f"{why}; without legal eCall the SIM is deactivated with them"
    active = sim is SimState.ACTIVE
    return Entitlements(
        legal_ecall=legal_ecall_equipped,
        sim=sim,
        running=frozenset(running) if active else frozenset(),
        suspended=frozenset(suspended),
        statuses=statuses,
        version=file.version,
        payment_default=file.payment_default,
        sim_reason=reason,
        services_running=running if active else {},
        services_suspended=suspended,
    )
