"""The NG twins of the CS eCall's "cannot be deactivated" tests (tests/services/test_sim_policy.py and the
rules of tests/ecall/test_service.py): the same EcallService and state machine, the transport chosen by
TransportModem, the NG leg over UDP to a scripted PSAP, the CS leg a fake modem reporting IMS support.

Whatever the SIM was asked to do, a legal-eCall vehicle's crash reaches the PSAP over NG; in eCall-only
mode the modem registers for the call and stays registered for the callback window, and the PSAP's
callback is answered over NG; only the PSAP clears an automatic NG eCall; a failed NG attempt falls back
to CS at once; a vehicle without legal eCall and with its SIM off makes no call on either transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from tcu.clock import ManualClock
from tcu.ecall.config import EcallConfig, NgConfig
from tcu.ecall.ng.dual_modem import TransportModem
from tcu.ecall.ng.ng_call import CallPhase
from tcu.ecall.ng.ng_modem import NgEcallModem
from tcu.ecall.ng.transport import EcallTransport, Transport
from tcu.ecall.service import EcallService
from tcu.ecall.state_machine import EcallState
from tcu.ecall.triggers import CRASH_DETECTED
from tcu.errors import EcallDeactivationRefusedError
from tcu.services.sim import Sim, SimPolicy
from tcu.sources.modem import EcallIndication, EcallType, RegistrationStatus, SimStatus
from tcu.sources.modem_client import ModemEvent, ModemIndication, ModemStatus
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.msd import decode
from telematics_wire.records import Record
from telematics_wire.sim_state import SimState
from telematics_wire.sip.ecall_body import URN_AUTOMATIC, build_control_request_msd
from telematics_wire.sip.ecall_invite import read_msd
from tests.conftest import VIN, eventually
from tests.ecall.ng.psap_peer import PsapPeer, Script, psap_peer

A, T, F = SimState.ACTIVE, SimState.TELEMATICS_DEACTIVATED, SimState.FULLY_DEACTIVATED


@dataclass
class FakeCsModem:
    """The CS leg: a modem on an LTE network with IMS emergency support (and 2G/3G if `legacy`)."""

    on_event: Callable[[ModemEvent], None]
    legacy: bool = False
    registered: bool = True
    dials: list[EcallType] = field(default_factory=list)
    registrations: list[bool] = field(default_factory=list)
    calls: int = 0

    def status(self) -> ModemStatus:
        registration = RegistrationStatus.HOME if self.registered and self.legacy else RegistrationStatus.NOT_SEARCHING
        return ModemStatus(
            ready=True, registration=registration, sim=SimStatus.READY, ims_emergency=self.registered, reason="fake"
        )

    async def run(self) -> NoReturn:
        self.on_event(self.status())
        await asyncio.Event().wait()
        raise AssertionError("never")

    async def dial(self, ecall_type: EcallType) -> None:
        self.dials.append(ecall_type)
        self.calls += 1
        for indication in (EcallIndication.CONNECTED, EcallIndication.SEND_MSD):  # the PSAP answers, asks
            self.on_event(ModemIndication(indication=indication, call=self.calls))

    async def voice_dial(self, number: str) -> None:
        raise AssertionError("no intelligent call here")

    async def send_msd(self, msd: bytes) -> None:
        for indication in (EcallIndication.LL_ACK, EcallIndication.AL_ACK):
            self.on_event(ModemIndication(indication=indication, call=self.calls))

    async def answer(self) -> None:
        raise AssertionError("the CS leg never rings here")

    async def hang_up(self) -> None:
        pass

    async def set_registration(self, registered: bool) -> None:
        self.registered = registered
        self.registrations.append(registered)
        self.on_event(self.status())


@dataclass
class Rig:
    peer: PsapPeer
    service: EcallService
    modem: TransportModem
    cs: FakeCsModem
    state: VehicleState
    clock: ManualClock
    records: list[Record]

    def crash(self) -> None:
        self.state.update(
            Signal(path=CRASH_DETECTED, value=True, timestamp=self.clock.now(), source="test", quality=Quality.GOOD)
        )

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.service.wake()

    async def until(self, state: EcallState) -> None:
        await eventually(lambda: self.service.state is state, what=f"eCall state {state.value}", within=5.0)

    def events(self) -> list[str]:
        return [str(record.body["event"]) for record in self.records]


@contextlib.asynccontextmanager
async def ng_rig(
    *, sim: Sim | None = None, legal_ecall: bool = True, legacy: bool = False, script: Script | None = None
) -> AsyncIterator[Rig]:
    clock, state, records = ManualClock(), VehicleState(), list[Record]()
    async with psap_peer(script) as peer:
        config = EcallConfig(
            port="fake-modem",
            legal_ecall=legal_ecall,
            transport=EcallTransport.AUTO,
            ng=NgConfig(proxy_host=peer.address[0], proxy_port=peer.address[1]),
        )
        legs: list[FakeCsModem] = []

        def cs(on_event: Callable[[ModemEvent], None]) -> FakeCsModem:
            legs.append(FakeCsModem(on_event=on_event, legacy=legacy))
            return legs[0]

        def factory(on_event: Callable[[ModemEvent], None]) -> TransportModem:
            return TransportModem(
                on_event,
                configured=EcallTransport.AUTO,
                cs=cs,
                ng=lambda leg: NgEcallModem(config.ng, vin=VIN, on_event=leg),
            )

        service = EcallService(config, vin=VIN, state=state, clock=clock, sim=sim, modem=factory)
        assert isinstance(service.modem, TransportModem)
        rig = Rig(
            peer=peer, service=service, modem=service.modem, cs=legs[0], state=state, clock=clock, records=records
        )

        async def keep(record: Record) -> None:
            records.append(record)

        async with asyncio.TaskGroup() as tasks:
            running = tasks.create_task(service.run(), name="ecall")
            drain = tasks.create_task(service.reports.drain(keep), name="ecall-reports")
            try:
                # The engine runs once it applied the SIM's registration wish (its first step, always).
                await eventually(lambda: bool(rig.cs.registrations), what="the engine's first step", within=5.0)
                yield rig
            finally:
                running.cancel()
                drain.cancel()


@pytest.mark.parametrize(("current", "requested"), [(c, r) for c in (A, T) for r in (A, T, F)])
async def test_after_any_request_the_legal_ecall_still_completes_over_ng(
    current: SimState, requested: SimState
) -> None:
    sim = Sim(SimPolicy(legal_ecall=True), current)
    try:
        sim.request(requested)
    except EcallDeactivationRefusedError:
        assert requested is F
    assert sim.state in (A, T)
    async with ng_rig(sim=sim) as rig:
        rig.crash()
        await rig.peer.wait(lambda: rig.peer.ecall is not None)
        assert rig.peer.ecall is not None
        assert rig.peer.ecall.urn == URN_AUTOMATIC
        msd = decode(rig.peer.ecall.msd)
        assert msd.automatic_activation
        assert msd.vin == VIN
        assert msd.message_identifier == 1
        await rig.until(EcallState.VOICE)
        assert rig.modem.carrier is Transport.NG
        assert rig.cs.dials == [], "NG carried it: no CS dial"


async def test_ecall_only_mode_registers_for_the_ng_call_and_answers_the_callback_in_t9() -> None:
    sim = Sim(SimPolicy(legal_ecall=True), A)
    async with ng_rig(sim=sim) as rig:
        sim.request(T)  # telematics contract ended: the modem goes dormant
        await eventually(lambda: not rig.cs.registered, what="dormant modem")
        rig.crash()
        await rig.peer.wait(lambda: rig.peer.ecall is not None)
        assert rig.cs.registered, "registered for the eCall"
        await rig.until(EcallState.VOICE)
        rig.peer.bye()
        await rig.until(EcallState.CALLBACK_WINDOW)
        rig.advance(1800.0)
        ng = rig.modem.ng
        assert ng.sip is not None
        rig.peer.call_back(f"sip:ivs@{ng.sip.advertised[0]}:{ng.sip.advertised[1]}")
        await rig.until(EcallState.VOICE)  # answered automatically
        await rig.peer.wait(lambda: any(r.status == 200 and r.cseq.method == "INVITE" for r in rig.peer.responses))
        ok = next(r for r in rig.peer.responses if r.status == 200 and r.cseq.method == "INVITE")
        rig.peer.ack_callback(ok)
        rig.peer.callback_request("BYE", ok)
        await rig.until(EcallState.CALLBACK_WINDOW)
        assert rig.cs.registered
        rig.advance(3600.0)
        await rig.until(EcallState.IDLE)
        await eventually(lambda: not rig.cs.registered, what="dormant again after T9")


async def test_only_the_psap_clears_an_automatic_ng_ecall() -> None:
    async with ng_rig() as rig:
        rig.crash()
        await rig.until(EcallState.VOICE)
        rig.service.request_hang_up("occupant pressed the button")
        await eventually(lambda: "hangup_refused" in rig.events(), what="refusal reported")
        call = rig.modem.ng.call  # a BYE would have ended it in the same step as the refusal
        assert call is not None
        assert call.phase is CallPhase.CONFIRMED, "the vehicle kept the call"
        rig.peer.bye()
        await rig.until(EcallState.CALLBACK_WINDOW)
        # The vehicle's 200 OK to that BYE left its socket after anything it sent before: no BYE came first.
        await rig.peer.wait(lambda: any(r.cseq.method == "BYE" for r in rig.peer.responses))
        assert "BYE" not in rig.peer.methods(), "the vehicle sent no BYE"


async def test_the_psap_asks_again_and_the_next_msd_identifier_goes_by_info() -> None:
    async with ng_rig(script=Script(ack_in_ok=True)) as rig:
        rig.crash()
        await rig.until(EcallState.VOICE)
        rig.peer.info(build_control_request_msd())
        await rig.peer.wait(lambda: "INFO" in rig.peer.methods())
        info = rig.peer.requests[rig.peer.methods().index("INFO")]
        found = read_msd(info)
        assert found is not None
        assert decode(found[0]).message_identifier == 2, "the INVITE carried 1"


async def test_a_failed_ng_attempt_falls_back_to_cs_at_once() -> None:
    async with ng_rig(legacy=True, script=Script(final=503)) as rig:
        rig.crash()
        await eventually(lambda: rig.cs.dials == [EcallType.AUTOMATIC], what="the CS fall-back dial", within=5.0)
        await rig.until(EcallState.VOICE)  # the CS leg connected and delivered the MSD
        assert rig.modem.carrier is Transport.CS
        await eventually(lambda: len([r for r in rig.records if r.body["event"] == "transport"]) >= 2, what="reports")
        transports = [r.body["transport"] for r in rig.records if r.body["event"] == "transport"]
        assert transports[:2] == ["ng", "cs"]
        redials = [r for r in rig.records if (r.body.get("from"), r.body.get("to")) == ("dialling", "triggered")]
        assert redials == [], "no failed dial, so no redial spacing"


async def test_a_vehicle_without_legal_ecall_and_a_deactivated_sim_makes_no_ng_call() -> None:
    sim = Sim(SimPolicy(legal_ecall=False), A)
    sim.request(F)
    async with ng_rig(sim=sim, legal_ecall=False) as rig:
        rig.crash()
        await eventually(lambda: "ecall_unavailable" in rig.events(), what="reported")
        assert rig.peer.requests == []
        assert rig.cs.dials == []
