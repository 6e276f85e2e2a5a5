"""NG eCall against real SIP software (issue 17): Kamailio as the proxy on the path (the IMS core / ESInet
stand-in, routing urn:service:sos.* to the PSAP), SIPp as the PSAP checking our INVITE, SIPp as the
vehicle calling our PSAP with a binary MSD. One Kamailio for the module; each SIPp runs one call (-m 1).

The MSD that crossed SIP is compared bit for bit with the same crash's MSD over the circuit-switched call,
and decoded by our codec and by asn1tools over the EN 15722 modules alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asn1tools
import pytest
import pytest_asyncio

from backend_stub.psap import PsapBehaviour, PsapStub
from backend_stub.psap_ng import PsapNg
from hil.sip_peers import SCENARIOS, Kamailio, Sipp, free_udp_port
from tcu.ecall.config import NgConfig
from tcu.ecall.ng.ng_call import NgMsd
from tcu.ecall.ng.ng_modem import NgEcallModem
from tcu.sources.modem import EcallIndication, EcallType
from tcu.sources.modem_client import ModemEvent, ModemIndication
from telematics_wire import msd_uper
from telematics_wire.msd import compilable_module_text, decode
from telematics_wire.sip.ecall_body import (
    URN_AUTOMATIC,
    URN_TEST,
    ControlAck,
    ControlRequest,
    msd_call_info,
)
from telematics_wire.sip.ecall_invite import read_control
from telematics_wire.sip.message import SipRequest
from telematics_wire.sip.pidf_lo import Location
from tests.backend_stub.psap_caller import MSD, emergency_call, send_msd
from tests.backend_stub.sip_vehicle import FIX_TIME, SipVehicle
from tests.conftest import VIN, running_task

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def psap_port() -> int:
    """Where Kamailio sends emergency calls: SIPp's PSAP or ours, one after the other."""
    return free_udp_port()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxy(psap_port: int) -> AsyncIterator[Kamailio]:
    for reason in (Kamailio.missing(), Sipp.missing()):
        if reason is not None:
            pytest.skip(reason)
    async with Kamailio(psap=("127.0.0.1", psap_port)) as kamailio:
        yield kamailio


def asn1_decoded(msd: bytes) -> object:
    """The MSD as asn1tools decodes it over the module of its version (the oracle, not our codec)."""
    version, inner = msd_uper.decode_ecall_message(msd)
    spec = asn1tools.compile_string(compilable_module_text(version), "uper", numeric_enums=True)
    return spec.decode("MSDMessage", inner)


@pytest.mark.parametrize("urn", [URN_AUTOMATIC, URN_TEST])
async def test_our_ecall_invite_passes_the_sipp_psap_through_kamailio(
    proxy: Kamailio, psap_port: int, urn: str
) -> None:
    async with Sipp(SCENARIOS / "psap_uas.xml", port=psap_port) as sipp_psap, SipVehicle() as vehicle:
        invite = vehicle.build_invite(urn=urn)
        ok = await vehicle.call(proxy.address, invite)
        assert ok.headers.get_all("Record-Route"), "Kamailio stays on the path"
        ack = read_control(ok)
        assert isinstance(ack, ControlAck)
        assert ack.received
        assert invite.headers.get("Call-Info") == msd_call_info(ack.ref).format()
        bye = await vehicle.receive_request("BYE")  # the PSAP clears down, through the proxy
        vehicle.reply(bye)
        assert await sipp_psap.finished() == 0, sipp_psap.report()


async def ng_modem_events(events: asyncio.Queue[ModemEvent], count: int) -> list[EcallIndication]:
    heard: list[EcallIndication] = []
    async with asyncio.timeout(10):
        while len(heard) < count:
            event = await events.get()
            if isinstance(event, ModemIndication):
                heard.append(event.indication)
    return heard


def ng_modem(proxy: Kamailio, events: asyncio.Queue[ModemEvent]) -> NgEcallModem:
    """The agent's own NG eCall modem (tcu.ecall.ng), pointed at Kamailio as its P-CSCF."""
    modem = NgEcallModem(NgConfig(proxy_host="127.0.0.1", proxy_port=proxy.port), vin=VIN, on_event=events.put_nowait)
    location = Location(latitude=48.1, longitude=11.5, radius_m=10.0, timestamp=FIX_TIME)
    modem.bind_service(msd=lambda: NgMsd(message_identifier=1, msd=MSD, location=location), report=lambda body: None)
    return modem


async def test_the_cars_ng_modem_passes_the_sipp_psap_through_kamailio(proxy: Kamailio, psap_port: int) -> None:
    """Issue 17's done-when end to end: the vehicle's real UA → Kamailio → SIPp as the PSAP, which checks the
    URN, Call-Info, MSD and PIDF-LO, acks the MSD in its 200 OK and clears down; only SIPp ends the call."""
    events: asyncio.Queue[ModemEvent] = asyncio.Queue()
    modem = ng_modem(proxy, events)
    async with Sipp(SCENARIOS / "psap_uas.xml", port=psap_port) as sipp_psap, running_task(modem.run(), name="ng"):
        await modem.dial(EcallType.AUTOMATIC)
        connected = [EcallIndication.CONNECTED, EcallIndication.SEND_MSD]
        assert await ng_modem_events(events, 4) == [*connected, EcallIndication.LL_ACK, EcallIndication.AL_ACK]
        assert await ng_modem_events(events, 1) == [EcallIndication.CLEARED_DOWN]  # SIPp's BYE, via Kamailio
        assert await sipp_psap.finished() == 0, sipp_psap.report()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Call-Info", msd_call_info("elsewhere@ivs.invalid").format()),  # the MSD is not the part it names
        ("Geolocation", "<cid:elsewhere@ivs.invalid>"),  # the PIDF-LO is not the part it names
        ("Recv-Info", "nothing"),  # no INFO package for a fresh MSD
    ],
)
async def test_the_sipp_psap_fails_an_invite_that_breaks_a_check(
    proxy: Kamailio, psap_port: int, header: str, value: str
) -> None:
    """The scenario's checks bite: a reference to the wrong part or a missing INFO package fails the call
    (exit code 1). SIPp marks the call failed and plays the scenario to its end (answer, BYE)."""
    async with Sipp(SCENARIOS / "psap_uas.xml", port=psap_port) as sipp_psap, SipVehicle() as vehicle:
        invite = vehicle.build_invite()
        wrong = invite.headers.replaced(header, value)
        await vehicle.call(proxy.address, SipRequest(method="INVITE", uri=invite.uri, headers=wrong, body=invite.body))
        vehicle.reply(await vehicle.receive_request("BYE"))
        assert await sipp_psap.finished() == 1, sipp_psap.report()
        assert "Failed regexp match" in sipp_psap.report()


async def test_a_sipp_vehicle_reaches_our_psap_through_kamailio_and_its_msd_decodes_bit_for_bit(
    proxy: Kamailio, psap_port: int
) -> None:
    ivs = Sipp(SCENARIOS / "ivs_uac.xml", remote=proxy.address, service="sos.ecall.automatic", files={"msd.bin": MSD})
    async with PsapNg(port=psap_port, behaviour=PsapBehaviour(voice_s=0.0)) as psap, ivs:
        assert await ivs.finished() == 0, ivs.report()  # acked received=true, then our BYE answered
        ng = await psap.wait_for_msd()
        call = psap.call()
        assert (call.kind, call.ended_by) == ("automatic", "psap")
        assert call.location is not None
        assert (call.location.latitude, call.location.longitude, call.location.radius_m) == (48.1, 11.5, 15.0)
    async with PsapStub() as cs_psap:  # the same crash's MSD over the circuit-switched call
        async with emergency_call(cs_psap) as (reader, writer):
            await send_msd(reader, writer)
        cs = await cs_psap.wait_for_msd()
    assert ng.raw == cs.raw == MSD
    assert ng.msd == cs.msd == decode(MSD)
    assert asn1_decoded(ng.raw) == asn1_decoded(cs.raw)


async def test_our_psap_asks_again_and_clears_down_through_kamailio(proxy: Kamailio, psap_port: int) -> None:
    """In-dialog requests from the PSAP follow the route set Kamailio recorded."""
    async with PsapNg(port=psap_port) as psap, SipVehicle() as vehicle:
        await vehicle.call(proxy.address)
        asking = asyncio.create_task(psap.request_msd())
        info = await vehicle.receive_request("INFO")
        assert vehicle.source == proxy.address
        assert isinstance(read_control(info), ControlRequest)
        vehicle.reply(info)
        await asking
        clearing = asyncio.create_task(psap.clear_down())
        bye = await vehicle.receive_request("BYE")
        assert vehicle.source == proxy.address
        vehicle.reply(bye)
        await clearing
        assert psap.call().ended_by == "psap"


async def test_the_cars_ng_modem_reaches_our_psap_through_kamailio(proxy: Kamailio, psap_port: int) -> None:
    """The agent's own SIP user agent (tcu.ecall.ng, S2) on the proxy path: the modem events the eCall
    state machine relies on come out of a real proxy's routing, and only our PSAP ends the call."""
    events: asyncio.Queue[ModemEvent] = asyncio.Queue()
    modem = ng_modem(proxy, events)

    async with PsapNg(port=psap_port) as psap, running_task(modem.run(), name="ecall-ng"):
        await modem.dial(EcallType.AUTOMATIC)
        connected = [EcallIndication.CONNECTED, EcallIndication.SEND_MSD]
        assert await ng_modem_events(events, 4) == [*connected, EcallIndication.LL_ACK, EcallIndication.AL_ACK]
        assert (await psap.wait_for_msd()).raw == MSD
        await psap.clear_down()
        assert await ng_modem_events(events, 1) == [EcallIndication.CLEARED_DOWN]
        assert psap.call().ended_by == "psap"
