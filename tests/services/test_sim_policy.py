"""The eCall cannot be deactivated: the SIM policy table, the SIM state holder, and the eCall still completing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcu.clock import ManualClock
from tcu.ecall.config import EcallTimers
from tcu.ecall.state_machine import EcallState
from tcu.errors import EcallDeactivationRefusedError
from tcu.services.sim import Sim, SimPolicy, registration_wanted
from telematics_wire.sim_state import SimState
from tests.conftest import eventually
from tests.ecall.test_service import ecall_rig

A, T, F = SimState.ACTIVE, SimState.TELEMATICS_DEACTIVATED, SimState.FULLY_DEACTIVATED
STATES = (A, T, F)

# (legal eCall, current, requested) → allowed. Only "fully deactivated" on a legal-eCall vehicle is refused.
TABLE = [
    (legal, current, requested, not (legal and requested is F))
    for legal in (True, False)
    for current in STATES
    for requested in STATES
]


@pytest.mark.parametrize(("legal", "current", "requested", "allowed"), TABLE)
def test_policy_table(legal: bool, current: SimState, requested: SimState, allowed: bool) -> None:
    decision = SimPolicy(legal_ecall=legal).decide(current, requested)
    assert decision.allowed is allowed
    assert (decision.current, decision.requested) == (current, requested)
    assert decision.reason
    if not allowed:
        assert "legal 112 eCall" in decision.reason
        assert "Regulation (EU) 2015/758" in decision.reason
        assert "eCall-only" in decision.reason, "the refusal says what is possible instead"


@pytest.mark.parametrize("legal", [True, False])
def test_an_unknown_requested_state_is_refused(legal: bool) -> None:
    assert not SimPolicy(legal_ecall=legal).decide(A, SimState("suspended-by-carrier")).allowed


# A legal-eCall SIM is never fully deactivated to start from (see the coercion test).
@pytest.mark.parametrize(("legal", "current", "requested", "allowed"), [r for r in TABLE if not (r[0] and r[1] is F)])
def test_the_sim_applies_the_policy_and_tells_listeners(
    legal: bool, current: SimState, requested: SimState, allowed: bool
) -> None:
    sim = Sim(SimPolicy(legal_ecall=legal), current)
    heard: list[SimState] = []
    sim.subscribe(heard.append)
    if allowed:
        sim.request(requested)
        assert sim.state is requested
        assert heard == ([] if requested is current else [requested])
    else:
        with pytest.raises(EcallDeactivationRefusedError, match="cannot be deactivated"):
            sim.request(requested)
        assert sim.state is current
        assert heard == []
    assert sim.ecall_available is (sim.state is not F)


def test_a_stored_fully_deactivated_state_on_a_legal_vehicle_falls_back_to_ecall_only() -> None:
    sim = Sim(SimPolicy(legal_ecall=True), F)
    assert sim.state is T
    assert sim.coerced is not None
    assert "eCall-only" in sim.coerced


@pytest.mark.parametrize(
    ("state", "engaged", "wanted"),
    [(A, False, True), (A, True, True), (T, False, False), (T, True, True), (F, False, False), (F, True, False)],
)
def test_modem_registration_per_sim_state(state: SimState, engaged: bool, wanted: bool) -> None:
    assert registration_wanted(state, ecall_engaged=engaged) is wanted


@pytest.mark.parametrize(("current", "requested"), [(c, r) for c in (A, T) for r in STATES])
async def test_after_any_request_the_legal_ecall_still_completes(
    tmp_path: Path, current: SimState, requested: SimState
) -> None:
    sim = Sim(SimPolicy(legal_ecall=True), current)
    try:
        sim.request(requested)
    except EcallDeactivationRefusedError:
        assert requested is F
    assert sim.state in (A, T)
    async with ecall_rig(tmp_path, sim=sim) as rig:
        rig.crash()
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert msd.automatic_activation


async def test_ecall_only_mode_registers_for_the_call_and_stays_registered_for_t9(tmp_path: Path) -> None:
    clock = ManualClock()
    sim = Sim(SimPolicy(legal_ecall=True), A)
    async with ecall_rig(tmp_path, sim=sim, clock=clock, timers=EcallTimers(t9_s=3600.0)) as rig:
        sim.request(T)  # telematics contract ended: the modem goes dormant
        await eventually(lambda: not rig.modem.registered, what="dormant modem")
        assert "AT+COPS=2" in rig.modem.requests
        rig.crash()
        assert (await rig.psap.wait_for_msd()).msd is not None
        assert rig.modem.requests.index("AT+COPS=0", rig.modem.requests.index("AT+COPS=2")) > 0
        await rig.psap.clear_down()
        await rig.until(EcallState.CALLBACK_WINDOW)
        rig.advance(1800.0)
        await rig.psap.call_back()  # reachable during T9
        await rig.until(EcallState.VOICE)
        await rig.psap.clear_down()
        await rig.until(EcallState.CALLBACK_WINDOW)
        assert rig.modem.registered
        rig.advance(3600.0)
        await rig.until(EcallState.IDLE)
        await eventually(lambda: not rig.modem.registered, what="dormant again after T9")


async def test_a_vehicle_without_legal_ecall_and_a_deactivated_sim_makes_no_call(tmp_path: Path) -> None:
    sim = Sim(SimPolicy(legal_ecall=False), A)
    sim.request(F)
    async with ecall_rig(tmp_path, sim=sim, legal_ecall=False) as rig:
        rig.crash()
        await eventually(lambda: "ecall_unavailable" in rig.events(), what="reported")
        assert rig.psap.calls == []
        assert not rig.modem.registered
