"""Which emergency call the vehicle makes: a pure function of the equipment, the SIM, 6AC and the trigger.

    route_call(legal_ecall=True, sim=SimState.ACTIVE, intelligent_call=True, call_type=CallType.AUTOMATIC)
    → RouteDecision(route=CallRoute.CALL_CENTRE, fallback_to_112=True, reason="...")

Two different calls exist, and the terms keep them apart:

- the legal 112 eCall (6AF, Regulation (EU) 2015/758): part of the vehicle's type approval, so no
  contract, payment default or SIM deactivation switches it off (AGB 1.5, 6.1; "Wie kann ich die Dienste
  deaktivieren": "Die SIM-Karte des Fahrzeugs sowie der gesetzliche Notruf bleiben ... aktiv");
- the intelligent emergency call (6AC, "Intelligenter Notruf"): a ConnectedDrive base service (AGB 1.3)
  — a voice call to the carmaker's call centre with the MSD and additional data. It is a contract
  service (privacy part B), so it stops when 6AC is not running: not booked, expired, suspended for
  payment default (AGB 5.5 c: "umfasst gegebenenfalls auch die Funktion des Dienstes Intelligenter
  Notruf") or with the SIM not fully active (AGB 6.1: "auch der Notruf im Fahrzeug ohne Funktion").

The rules, in order:

1. The intelligent call is usable only while 6AC runs *and* the SIM is fully active (an eCall-only SIM
   carries the 112 eCall and nothing else); the caller's "available" is not trusted alone.
2. A test call on a legal-eCall vehicle tests the 112 eCall (workshop, periodic inspection): the
   intelligent call must never hide a broken legal system. Without legal eCall, the test goes to the
   call centre when 6AC is usable, else nothing.
3. Legal eCall vehicle: crash or SOS goes to the call centre when usable — a third-party-service (TPS)
   eCall, which Delegated Regulation (EU) 2017/79 Annex IV allows to stand in for the 112 system only
   while it is active and working — so it falls back to the 112 eCall automatically when the call
   centre cannot be reached or does not answer in time. Otherwise the 112 eCall, whatever the SIM
   says (the SIM policy never lets a legal vehicle's SIM go fully off; if it did, we still dial).
4. Vehicle without legal eCall: the call centre when usable, with no fall-back (there is no 112 system
   to fall back to); otherwise no call at all — logged and reported, the occupants get no call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tcu.ecall.triggers import CallType
from telematics_wire.sim_state import SimState


class CallRoute(StrEnum):
    CALL_CENTRE = "call_centre"  # the intelligent emergency call (6AC) to the carmaker's call centre
    ECALL_112 = "ecall_112"  # the legal eCall to the PSAP
    NONE = "none"  # no call: no legal eCall and no usable 6AC


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDecision:
    route: CallRoute
    fallback_to_112: bool  # only for CALL_CENTRE on a legal-eCall vehicle
    reason: str


def route_call(*, legal_ecall: bool, sim: SimState, intelligent_call: bool, call_type: CallType) -> RouteDecision:
    """The call to make for this trigger; total over every combination (see the module docstring)."""
    usable = intelligent_call and sim is SimState.ACTIVE
    if legal_ecall:
        if call_type is CallType.TEST:
            return RouteDecision(
                route=CallRoute.ECALL_112, fallback_to_112=False, reason="a test call tests the legal 112 eCall"
            )
        if usable:
            return RouteDecision(
                route=CallRoute.CALL_CENTRE,
                fallback_to_112=True,
                reason="intelligent emergency call (6AC) to the call centre; the 112 eCall if it fails",
            )
        return RouteDecision(
            route=CallRoute.ECALL_112,
            fallback_to_112=False,
            reason=f"legal 112 eCall ({_why_not(intelligent_call, sim)})",
        )
    if usable:
        return RouteDecision(
            route=CallRoute.CALL_CENTRE,
            fallback_to_112=False,
            reason="intelligent emergency call (6AC); no legal eCall in this vehicle, so no 112 fall-back",
        )
    return RouteDecision(
        route=CallRoute.NONE,
        fallback_to_112=False,
        reason=f"no emergency call: this vehicle has no legal eCall and {_why_not(intelligent_call, sim)}",
    )


def _why_not(intelligent_call: bool, sim: SimState) -> str:
    if sim is SimState.FULLY_DEACTIVATED:
        return "the SIM is deactivated, so the intelligent emergency call has no function (AGB 6.1)"
    if sim is not SimState.ACTIVE:
        return f"the SIM is {sim.value}, so the intelligent emergency call (6AC) cannot run"
    if not intelligent_call:
        return "the intelligent emergency call (6AC) is not running (not booked, expired or suspended)"
    return "the intelligent emergency call is not used for this trigger"
