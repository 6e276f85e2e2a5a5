"""Which emergency call the vehicle makes, over every combination of equipment, SIM, 6AC and trigger.

Read a row as: a vehicle (with or without the legal 112 eCall) whose SIM is in this state and whose
intelligent emergency call (6AC) is booked and running or not, gets this trigger → it makes this call,
with or without the automatic fall-back to the 112 eCall (tcu/ecall/call_route.py says why).
"""

from __future__ import annotations

import itertools

import pytest

from tcu.ecall.call_route import CallRoute, route_call
from tcu.ecall.triggers import CallType
from tcu.services.sim import SimState

LEGAL, NO_LEGAL = True, False  # equipped with the legal 112 eCall (6AF) or not
ACTIVE, ECALL_ONLY = SimState.ACTIVE, SimState.TELEMATICS_DEACTIVATED
SIM_OFF, SIM_UNKNOWN = SimState.FULLY_DEACTIVATED, SimState.UNKNOWN
BOOKED, OFF = True, False  # 6AC running (booked, in term, not suspended) or not
AUTOMATIC, MANUAL, TEST = CallType.AUTOMATIC, CallType.MANUAL, CallType.TEST
CALL_CENTRE, ECALL_112, NO_CALL = CallRoute.CALL_CENTRE, CallRoute.ECALL_112, CallRoute.NONE
FALLBACK, DIRECT = True, False

# legal eCall, SIM,      6AC,   trigger,   → call,      112 fall-back
TABLE = [
    (LEGAL,     ACTIVE,      BOOKED, AUTOMATIC, CALL_CENTRE, FALLBACK),
    (LEGAL,     ACTIVE,      BOOKED, MANUAL,    CALL_CENTRE, FALLBACK),
    (LEGAL,     ACTIVE,      BOOKED, TEST,      ECALL_112,   DIRECT),
    (LEGAL,     ACTIVE,      OFF,    AUTOMATIC, ECALL_112,   DIRECT),
    (LEGAL,     ACTIVE,      OFF,    MANUAL,    ECALL_112,   DIRECT),
    (LEGAL,     ACTIVE,      OFF,    TEST,      ECALL_112,   DIRECT),
    (LEGAL,     ECALL_ONLY,  BOOKED, AUTOMATIC, ECALL_112,   DIRECT),
    (LEGAL,     ECALL_ONLY,  BOOKED, MANUAL,    ECALL_112,   DIRECT),
    (LEGAL,     ECALL_ONLY,  BOOKED, TEST,      ECALL_112,   DIRECT),
    (LEGAL,     ECALL_ONLY,  OFF,    AUTOMATIC, ECALL_112,   DIRECT),
    (LEGAL,     ECALL_ONLY,  OFF,    MANUAL,    ECALL_112,   DIRECT),
    (LEGAL,     ECALL_ONLY,  OFF,    TEST,      ECALL_112,   DIRECT),
    (LEGAL,     SIM_OFF,     BOOKED, AUTOMATIC, ECALL_112,   DIRECT),
    (LEGAL,     SIM_OFF,     BOOKED, MANUAL,    ECALL_112,   DIRECT),
    (LEGAL,     SIM_OFF,     BOOKED, TEST,      ECALL_112,   DIRECT),
    (LEGAL,     SIM_OFF,     OFF,    AUTOMATIC, ECALL_112,   DIRECT),
    (LEGAL,     SIM_OFF,     OFF,    MANUAL,    ECALL_112,   DIRECT),
    (LEGAL,     SIM_OFF,     OFF,    TEST,      ECALL_112,   DIRECT),
    (LEGAL,     SIM_UNKNOWN, BOOKED, AUTOMATIC, ECALL_112,   DIRECT),
    (LEGAL,     SIM_UNKNOWN, BOOKED, MANUAL,    ECALL_112,   DIRECT),
    (LEGAL,     SIM_UNKNOWN, BOOKED, TEST,      ECALL_112,   DIRECT),
    (LEGAL,     SIM_UNKNOWN, OFF,    AUTOMATIC, ECALL_112,   DIRECT),
    (LEGAL,     SIM_UNKNOWN, OFF,    MANUAL,    ECALL_112,   DIRECT),
    (LEGAL,     SIM_UNKNOWN, OFF,    TEST,      ECALL_112,   DIRECT),
    (NO_LEGAL,  ACTIVE,      BOOKED, AUTOMATIC, CALL_CENTRE, DIRECT),
    (NO_LEGAL,  ACTIVE,      BOOKED, MANUAL,    CALL_CENTRE, DIRECT),
    (NO_LEGAL,  ACTIVE,      BOOKED, TEST,      CALL_CENTRE, DIRECT),
    (NO_LEGAL,  ACTIVE,      OFF,    AUTOMATIC, NO_CALL,     DIRECT),
    (NO_LEGAL,  ACTIVE,      OFF,    MANUAL,    NO_CALL,     DIRECT),
    (NO_LEGAL,  ACTIVE,      OFF,    TEST,      NO_CALL,     DIRECT),
    (NO_LEGAL,  ECALL_ONLY,  BOOKED, AUTOMATIC, NO_CALL,     DIRECT),
    (NO_LEGAL,  ECALL_ONLY,  BOOKED, MANUAL,    NO_CALL,     DIRECT),
    (NO_LEGAL,  ECALL_ONLY,  BOOKED, TEST,      NO_CALL,     DIRECT),
    (NO_LEGAL,  ECALL_ONLY,  OFF,    AUTOMATIC, NO_CALL,     DIRECT),
    (NO_LEGAL,  ECALL_ONLY,  OFF,    MANUAL,    NO_CALL,     DIRECT),
    (NO_LEGAL,  ECALL_ONLY,  OFF,    TEST,      NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_OFF,     BOOKED, AUTOMATIC, NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_OFF,     BOOKED, MANUAL,    NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_OFF,     BOOKED, TEST,      NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_OFF,     OFF,    AUTOMATIC, NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_OFF,     OFF,    MANUAL,    NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_OFF,     OFF,    TEST,      NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_UNKNOWN, BOOKED, AUTOMATIC, NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_UNKNOWN, BOOKED, MANUAL,    NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_UNKNOWN, BOOKED, TEST,      NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_UNKNOWN, OFF,    AUTOMATIC, NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_UNKNOWN, OFF,    MANUAL,    NO_CALL,     DIRECT),
    (NO_LEGAL,  SIM_UNKNOWN, OFF,    TEST,      NO_CALL,     DIRECT),
]  # fmt: skip


@pytest.mark.parametrize(("legal", "sim", "six_ac", "trigger", "call", "fallback"), TABLE)
def test_the_call_made_in_each_state(
    legal: bool, sim: SimState, six_ac: bool, trigger: CallType, call: CallRoute, fallback: bool
) -> None:
    decision = route_call(legal_ecall=legal, sim=sim, intelligent_call=six_ac, call_type=trigger)
    assert (decision.route, decision.fallback_to_112) == (call, fallback), decision.reason


def test_the_table_covers_every_combination_once() -> None:
    inputs = [row[:4] for row in TABLE]
    every = list(itertools.product((LEGAL, NO_LEGAL), list(SimState), (BOOKED, OFF), list(CallType)))
    assert sorted(inputs, key=repr) == sorted(every, key=repr)


def test_legal_ecall_is_never_switched_off() -> None:
    for legal, sim, six_ac, trigger, call, _ in TABLE:
        if legal:
            assert call is not NO_CALL, (sim, six_ac, trigger)
            assert (
                call is ECALL_112
                or route_call(legal_ecall=legal, sim=sim, intelligent_call=six_ac, call_type=trigger).fallback_to_112
            ), "a call-centre call on a legal vehicle always falls back to 112"


def test_every_no_call_says_why_a_person_can_act_on() -> None:
    off = route_call(legal_ecall=NO_LEGAL, sim=SIM_OFF, intelligent_call=BOOKED, call_type=AUTOMATIC)
    assert "SIM is deactivated" in off.reason
    assert "AGB 6.1" in off.reason
    unbooked = route_call(legal_ecall=NO_LEGAL, sim=ACTIVE, intelligent_call=OFF, call_type=MANUAL)
    assert "6AC" in unbooked.reason
    assert "not running" in unbooked.reason
    ecall_only = route_call(legal_ecall=NO_LEGAL, sim=ECALL_ONLY, intelligent_call=BOOKED, call_type=AUTOMATIC)
    assert "telematics_deactivated" in ecall_only.reason
