"""What the vehicle may do at `now`, derived from the applied provisioning file and the equipment.

The rules (a pure function; tests/services/test_sim_table.py states them as one table over every
combination), each from the ConnectedDrive terms (AGB):

- Legal eCall (6AF) works on every vehicle equipped with it, whatever the file, the payment state or
  the SIM's telematics state say: it is part of the type approval (AGB 1.5, 6.1; Regulation (EU)
  2015/758). It is never "running" as a service: it is not something a contract can switch.
- A booked service runs while its term runs (tcu.services.terms).
- Payment default (AGB 5.5 c) suspends "die betroffenen Dienste": the paid ones, i.e. every service
  with a fixed term (AGB 3.2, "befristeter kostenpflichtiger Dienst"), and the intelligent emergency
  call 6AC ("umfasst gegebenenfalls auch die Funktion des Dienstes Intelligenter Notruf"). Unlimited
  services — the free base service Teleservices 6AE among them (AGB 1.3) — keep running.
- The SIM (AGB 3.3: every service runs over it) is active while a base service (6AE, or 6AC not
  suspended) runs, unless the file deactivates it. Otherwise a legal-eCall vehicle is eCall-only
  (telematics_deactivated: "die SIM-Karte ... sowie der gesetzliche Notruf bleiben ... aktiv") and any
  other vehicle is fully deactivated ("Mit der Deaktivierung dieser Dienste wird auch die ... SIM-Karte
  deaktiviert"; AGB 6.1). A car without legal eCall whose intelligent call is suspended has no call for
  an eCall-only SIM to register for, so payment default alone never keeps its SIM up.
- Without an active SIM nothing runs: no telematics, no events, no remote measures, no intelligent
  call, and only a provisioning file that reactivates the SIM is applied (tcu.services.manager).
- A vehicle that has never received a file keeps its SIM active so that its first file can arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from tcu.services.catalogue import INTELLIGENT_ECALL, LEGAL_ECALL, TELESERVICES, Catalogue, Category
from tcu.services.provisioning import ProvisioningFile
from tcu.services.sim import SimState
from tcu.services.terms import Booking, ServiceStatus, Term

BASE_SERVICES = frozenset({TELESERVICES, INTELLIGENT_ECALL})


@dataclass(frozen=True, slots=True, kw_only=True)
class Entitlements:
    legal_ecall: bool  # equipped with the legal 112 eCall: it works in every state below
    sim: SimState
    running: frozenset[str]  # empty unless the SIM is active
    suspended: frozenset[str]  # by payment default
    statuses: Mapping[str, ServiceStatus]
    version: int
    payment_default: bool = False
    sim_reason: str = ""  # why the SIM is in its state, in words a person can act on

    @property
    def telematics(self) -> bool:
        """Whether anything collected in the car (telemetry, events) may be sent, and measures run."""
        return self.sim is SimState.ACTIVE

    @property
    def measures_allowed(self) -> bool:
        return self.sim is SimState.ACTIVE

    @property
    def intelligent_ecall(self) -> bool:
        """The manufacturer's emergency call (6AC) to its call centre: running, not suspended, SIM active.

        tcu.ecall routes a call by this and `legal_ecall`; keep the name."""
        return self.sim is SimState.ACTIVE and INTELLIGENT_ECALL in self.running

    def inactive_reason(self) -> str | None:
        """None while the SIM is active; else why nothing but the emergency call may use it."""
        if self.sim is SimState.ACTIVE:
            return None
        return f"SIM is {self.sim.value}: {self.sim_reason}"

    def categories(self, catalogue: Catalogue) -> frozenset[Category]:
        return catalogue.categories_of(self.running)


def is_paid(booking: Booking) -> bool:
    """A fixed term is a paid service (AGB 3.2); unlimited ones come with the car or the contract."""
    return booking.term is not Term.UNLIMITED


def _names(codes: frozenset[str]) -> str:
    return ", ".join(sorted(codes)) or "none"


def derive(file: ProvisioningFile | None, *, legal_ecall_equipped: bool, now: datetime) -> Entitlements:
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
    statuses = {b.code: b.status(now) for b in file.bookings}
    by_term = frozenset(
        code
        for code, status in statuses.items()
        if status in (ServiceStatus.ACTIVE, ServiceStatus.EXPIRING) and code != LEGAL_ECALL
    )
    # Payment default (AGB 5.5 c) suspends the paid, fixed-term bookings the backend names.
    suspended = frozenset(b.code for b in file.bookings if b.code in by_term & file.suspended and is_paid(b))
    running = by_term - suspended
    base = running & BASE_SERVICES
    if file.sim == "deactivated" and not legal_ecall_equipped:
        sim = SimState.FULLY_DEACTIVATED
        reason = "the provisioning file deactivates the SIM (AGB 6.1): no service and no emergency call"
    elif base:
        sim = SimState.ACTIVE
        reason = f"base service(s) {_names(base)} running"
    else:
        why = "no base service (6AE Teleservices, 6AC intelligent emergency call) running"
        if INTELLIGENT_ECALL in suspended:
            why += "; 6AC is suspended for payment default"
        if legal_ecall_equipped:
            sim = SimState.TELEMATICS_DEACTIVATED
            reason = f"{why}; eCall-only: the legal 112 eCall stays available"
        else:
            sim = SimState.FULLY_DEACTIVATED
            reason = f"{why}; without legal eCall the SIM is deactivated with them"
    return Entitlements(
        legal_ecall=legal_ecall_equipped,
        sim=sim,
        running=running if sim is SimState.ACTIVE else frozenset(),
        suspended=suspended,
        statuses=statuses,
        version=file.version,
        payment_default=file.payment_default,
        sim_reason=reason,
    )
