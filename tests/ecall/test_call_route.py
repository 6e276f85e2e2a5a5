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
from telematics_wire.sim_state import SimState

LEGAL, NO_LEGAL = True, False  # equipped with the legal 112 eCall (6AF) or not
ACTIVE, ECALL_ONLY = SimState.ACTIVE, SimState.TELEMATICS_DEACTIVATED
SIM_OFF = SimState.FULLY_DEACTIVATED
BOOKED, OFF = True, False  # 6AC running (booked, in term, not suspended) or not
AUTOMATIC, MANUAL = CallType.AUTOMATIC, CallType.MANUAL
ECALL_112, NO_CALL = CallRoute.ECALL_112, CallRoute.NONE

# legal  SIM                     6AC  trigger   | call         112 fall-back
TABLE_TEXT = """
yes    active                  yes  automatic | call_centre  yes
yes    active                  yes  manual    | call_centre  yes
yes    active                  yes  test      | ecall_112    no
yes    active                  no   automatic | ecall_112    no
yes    active                  no   manual    | ecall_112    no
yes    active                  no   test      | ecall_112    no
yes    telematics_deactivated  yes  automatic | ecall_112    no
yes    telematics_deactivated  yes  manual    | ecall_112    no
yes    telematics_deactivated  yes  test      | ecall_112    no
yes    telematics_deactivated  no   automatic | ecall_112    no
yes    telematics_deactivated  no   manual    | ecall_112    no
yes    telematics_deactivated  no   test      | ecall_112    no
yes    fully_deactivated       yes  automatic | ecall_112    no
yes    fully_deactivated       yes  manual    | ecall_112    no
yes    fully_deactivated       yes  test      | ecall_112    no
yes    fully_deactivated       no   automatic | ecall_112    no
yes    fully_deactivated       no   manual    | ecall_112    no
yes    fully_deactivated       no   test      | ecall_112    no
yes    unknown                 yes  automatic | ecall_112    no
yes    unknown                 yes  manual    | ecall_112    no
yes    unknown                 yes  test      | ecall_112    no
yes    unknown                 no   automatic | ecall_112    no
yes    unknown                 no   manual    | ecall_112    no
yes    unknown                 no   test      | ecall_112    no
no     active                  yes  automatic | call_centre  no
no     active                  yes  manual    | call_centre  no
no     active                  yes  test      | call_centre  no
no     active                  no   automatic | none         no
no     active                  no   manual    | none         no
no     active                  no   test      | none         no
no     telematics_deactivated  yes  automatic | none         no
no     telematics_deactivated  yes  manual    | none         no
no     telematics_deactivated  yes  test      | none         no
no     telematics_deactivated  no   automatic | none         no
no     telematics_deactivated  no   manual    | none         no
no     telematics_deactivated  no   test      | none         no
no     fully_deactivated       yes  automatic | none         no
no     fully_deactivated       yes  manual    | none         no
no     fully_deactivated       yes  test      | none         no
no     fully_deactivated       no   automatic | none         no
no     fully_deactivated       no   manual    | none         no
no     fully_deactivated       no   test      | none         no
no     unknown                 yes  automatic | none         no
no     unknown                 yes  manual    | none         no
no     unknown                 yes  test      | none         no
no     unknown                 no   automatic | none         no
no     unknown                 no   manual    | none         no
no     unknown                 no   test      | none         no
"""


def _row(line: str) -> tuple[bool, SimState, bool, CallType, CallRoute, bool]:
    legal, sim, six_ac, trigger, call, fallback = line.replace("|", " ").split()
    return (legal == "yes", SimState(sim), six_ac == "yes", CallType(trigger), CallRoute(call), fallback == "yes")


TABLE = [_row(line) for line in TABLE_TEXT.strip().splitlines()]


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
