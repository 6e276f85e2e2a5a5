"""The intelligent emergency call (6AC) end to end, in process: VehicleState → service → modem simulator on a
pty → the call-centre stub's voice line (and the PSAP stub for the 112 fall-back).

The data record the call centre reads goes through the uplink in the product; here it is the eCall report
queue drained into `rig.records`, and `parse_case` (the call centre's reader) is applied to it as the backend would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend_stub.call_centre import CallCentreBehaviour, CallCentreStub, parse_case
from tcu.ecall.call_centre_call import CallCentreState
from tcu.ecall.call_centre_data import EVENT
from tcu.ecall.state_machine import EcallState
from tcu.ecall.triggers import AIRBAG_DEPLOYED, SOS_BUTTON
from tcu.services.sim import Sim, SimPolicy
from telematics_wire.sim_state import SimState
from tests.conftest import VIN, eventually
from tests.ecall.test_service import Rig, ecall_rig

NUMBER = "+498912345678"
BELT_DRIVER = "Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted"
BELT_PASSENGER = "Vehicle.Cabin.Seat.Row1.PassengerSide.IsBelted"


@contextlib.asynccontextmanager
async def rig_with_centre(
    tmp_path: Path,
    *,
    behaviour: CallCentreBehaviour | None = None,
    six_ac: Callable[[], bool] = lambda: True,
    reachable: bool = True,
    **options: Any,
) -> AsyncIterator[tuple[Rig, CallCentreStub]]:
    async with CallCentreStub(behaviour=behaviour) as centre:
        numbers = {NUMBER: centre.address} if reachable else {}
        async with ecall_rig(
            tmp_path,
            numbers=numbers,
            intelligent_call_available=six_ac,
            call_centre_number=NUMBER,
            vehicle_model="BMW 320d Touring",
            vehicle_colour="Mineralgrau",
            **options,
        ) as rig:
            yield rig, centre


async def engine_caught_up(rig: Rig) -> None:
    """Wait until the eCall engine has taken everything queued so far (during an automatic call).

    The engine takes its queue in order and awaits each modem command's answer, so once an occupant's
    hang-up request queued now has been refused (an automatic call, to the call centre or 112, is not
    theirs to end) every earlier item is done and any command it sent has reached the modem: a definite
    point for negative assertions.
    """

    def refusals() -> int:
        return sum(event in {"call_centre_hangup_refused", "hangup_refused"} for event in rig.events())

    before = refusals()
    rig.service.request_hang_up("occupant")
    await eventually(lambda: refusals() > before, what="the engine caught up")


def data_records(rig: Rig) -> list[dict[str, Any]]:
    return [dict(r.body) for r in rig.records if r.body["event"] == EVENT]


def call_centre_moves(rig: Rig) -> list[tuple[str, str]]:
    return [(r.body["from"], r.body["to"]) for r in rig.records if r.body["event"] == "call_centre_transition"]


async def test_a_crash_calls_the_call_centre_with_the_msd_and_the_additional_data(tmp_path: Path) -> None:
    async with rig_with_centre(tmp_path) as (rig, centre):
        rig.signal("Vehicle.CurrentLocation.Latitude", 48.1374)
        rig.signal("Vehicle.CurrentLocation.Longitude", 11.5755)
        rig.signal(BELT_DRIVER, True)
        rig.signal(BELT_PASSENGER, False)
        rig.signal("Vehicle.Speed", 87.0)
        rig.signal(AIRBAG_DEPLOYED, True)  # an automatic trigger of its own
        await centre.wait_for(lambda: bool(centre.calls) and centre.calls[0].at("answered") is not None)
        await eventually(lambda: rig.service.intelligent.machine.state is CallCentreState.CONNECTED, what="answer")
        assert rig.service.active.is_set(), "an emergency call pre-empts remote measures, whichever it is"
        assert f"ATD{NUMBER};" in rig.modem.requests
        assert rig.psap.calls == [], "the 112 eCall was not dialled: the call centre stands in for it"
        assert rig.service.state is EcallState.IDLE
        [data] = data_records(rig)
        case = parse_case(VIN, data, datetime.now(UTC))
        assert case.problems == ()
        assert (case.call_type, case.trigger, case.severity) == ("automatic", "airbag deployed", "airbag_deployed")
        assert (case.occupants_belted, case.seats_known) == (1, 2)
        assert (case.model, case.colour, case.vehicle_type) == ("BMW 320d Touring", "Mineralgrau", "M1")
        assert case.signals["Vehicle.Speed"] == 87.0
        assert case.fallback_to_112 is True
        assert case.msd is not None
        assert (case.msd.vin, case.msd.automatic_activation, case.msd.number_of_passengers) == (VIN, True, 1)
        assert case.msd.latitude_deg == pytest.approx(48.1374)
        await centre.clear_down()
        await eventually(lambda: not rig.service.intelligent.active, what="call ended")
        assert not rig.service.active.is_set()
        assert call_centre_moves(rig) == [("idle", "dialling"), ("dialling", "connected"), ("connected", "idle")]
        assert [(a.started, a.call_type.value) for a in rig.activity] == [(True, "automatic"), (False, "automatic")]


async def test_no_answer_in_time_falls_back_to_the_112_ecall(tmp_path: Path) -> None:
    async with rig_with_centre(tmp_path, behaviour=CallCentreBehaviour(answer=False)) as (rig, centre):
        rig.crash()
        await centre.wait_for(lambda: bool(centre.calls), what="ringing")
        assert rig.psap.calls == []
        rig.advance(19.0)
        await engine_caught_up(rig)
        assert rig.service.intelligent.machine.state is CallCentreState.DIALLING, "still ringing at 19 s"
        assert not any(r.startswith("AT+CECALL") for r in rig.modem.requests)
        rig.advance(1.0)  # call_centre_answer_s = 20 by default
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert (msd.vin, msd.automatic_activation) == (VIN, True)
        assert "ATH" in rig.modem.requests[rig.modem.requests.index(f"ATD{NUMBER};") :]
        await centre.wait_for(lambda: centre.calls[0].ended_by is not None, what="ringing stopped")
        first = next(r.body for r in rig.records if r.body["event"] == "transition")
        assert (
            str(first["reason"])
            == "crash detected; intelligent emergency call failed: the call centre did not answer within 20 s"
        )
        assert rig.psap.call().kind == "automatic"


async def test_an_unreachable_call_centre_falls_back_to_112_at_once(tmp_path: Path) -> None:
    async with rig_with_centre(tmp_path, reachable=False) as (rig, _):
        rig.signal(SOS_BUTTON, True)
        rig.advance(1.0)
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert rig.psap.call().kind == "manual"
        assert ("dialling", "idle") in call_centre_moves(rig)


async def test_without_6ac_a_legal_vehicle_makes_the_112_ecall_and_never_dials_the_centre(tmp_path: Path) -> None:
    async with rig_with_centre(tmp_path, six_ac=lambda: False) as (rig, centre):
        rig.crash()
        assert (await rig.psap.wait_for_msd()).msd is not None
        assert not any(r.startswith("ATD") for r in rig.modem.requests)
        assert centre.calls == []
        assert data_records(rig) == []


async def test_a_failing_entitlement_check_never_stops_the_112_ecall(tmp_path: Path) -> None:
    def broken() -> bool:
        raise RuntimeError("services not loaded")

    async with rig_with_centre(tmp_path, six_ac=broken) as (rig, centre):
        rig.crash()
        assert (await rig.psap.wait_for_msd()).msd is not None
        assert centre.calls == []


async def test_an_ecall_only_sim_makes_the_112_ecall_even_if_6ac_says_running(tmp_path: Path) -> None:
    sim = Sim(SimPolicy(legal_ecall=True), SimState.TELEMATICS_DEACTIVATED)
    async with rig_with_centre(tmp_path, sim=sim) as (rig, centre):
        rig.crash()
        assert (await rig.psap.wait_for_msd()).msd is not None
        assert centre.calls == []


async def test_a_test_call_on_a_legal_vehicle_tests_the_112_ecall(tmp_path: Path) -> None:
    async with rig_with_centre(tmp_path) as (rig, centre):
        rig.service.trigger_test_call()
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert msd.test_call
        assert centre.calls == []


async def test_without_legal_ecall_the_call_centre_is_redialled_and_112_never_dialled(tmp_path: Path) -> None:
    behaviour = CallCentreBehaviour(answer=False)
    async with rig_with_centre(tmp_path, behaviour=behaviour, legal_ecall=False, sim=_no_legal_sim()) as (rig, c):
        rig.crash()
        await c.wait_for(lambda: len(c.calls) == 1, what="first call")
        rig.advance(20.0)  # no answer: hung up, waiting to redial
        await eventually(lambda: rig.service.intelligent.machine.state is CallCentreState.WAITING, what="waiting")
        rig.advance(30.0)
        await c.wait_for(lambda: len(c.calls) == 2, what="second call")
        assert rig.psap.calls == []
        assert not any(r.startswith("AT+CECALL") for r in rig.modem.requests)
        rig.service.request_hang_up("occupant")
        await eventually(lambda: "call_centre_hangup_refused" in rig.events(), what="automatic call not ended")


async def test_without_legal_ecall_and_without_6ac_there_is_no_call_and_it_is_reported(tmp_path: Path) -> None:
    async with rig_with_centre(tmp_path, six_ac=lambda: False, legal_ecall=False, sim=_no_legal_sim()) as (rig, c):
        rig.crash()
        await eventually(lambda: "ecall_unavailable" in rig.events(), what="reported")
        [report] = [r.body for r in rig.records if r.body["event"] == "ecall_unavailable"]
        assert "no legal eCall" in str(report["reason"])
        assert "6AC" in str(report["reason"])
        assert c.calls == []
        assert rig.psap.calls == []
        assert not any(r.startswith(("ATD", "AT+CECALL")) for r in rig.modem.requests)


async def test_a_manual_call_may_be_ended_before_the_centre_answers(tmp_path: Path) -> None:
    behaviour = CallCentreBehaviour(answer=False)
    async with rig_with_centre(tmp_path, behaviour=behaviour, legal_ecall=False, sim=_no_legal_sim()) as (rig, c):
        rig.signal(SOS_BUTTON, True)
        rig.advance(1.0)
        await c.wait_for(lambda: bool(c.calls), what="ringing")
        rig.service.request_hang_up("pressed by mistake")
        await eventually(lambda: not rig.service.intelligent.active, what="ended")
        await c.wait_for(lambda: c.calls[0].ended_by == "vehicle", what="hung up")
        assert not rig.service.active.is_set()


def _no_legal_sim() -> Sim:
    return Sim(SimPolicy(legal_ecall=False))


async def test_a_sim_going_ecall_only_mid_call_keeps_the_call_until_it_ends(tmp_path: Path) -> None:
    sim = Sim(SimPolicy(legal_ecall=True))
    async with rig_with_centre(tmp_path, sim=sim) as (rig, centre):
        rig.crash()
        await eventually(lambda: rig.service.intelligent.machine.state is CallCentreState.CONNECTED, what="answer")
        sim.request(SimState.TELEMATICS_DEACTIVATED)  # e.g. a payment default arriving mid-call
        await engine_caught_up(rig)
        assert "AT+COPS=2" not in rig.modem.requests
        assert rig.modem.registered
        assert centre.calls[0].ended_by is None, "the call to the call centre goes on"
        await centre.clear_down()
        await eventually(lambda: not rig.modem.registered, what="dormant once the call is over")
