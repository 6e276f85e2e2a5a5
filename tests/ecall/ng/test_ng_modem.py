"""The vehicle's NG eCall user agent against a scripted PSAP on UDP loopback: what goes on the wire, and
which of the CS modem's events the eCall service hears for it (the mapping in tcu.ecall.ng.ng_modem)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tcu.ecall.config import NgConfig
from tcu.ecall.ng.ng_call import NgMsd
from tcu.ecall.ng.ng_modem import NgEcallModem
from tcu.ecall.ng.sip_transactions import SipTimers
from tcu.sources.modem import EcallIndication, EcallType
from tcu.sources.modem_client import ModemCallEnded, ModemEvent, ModemIndication, ModemRing
from tcu.virtual_time import io_timeout
from telematics_wire.msd import encode
from telematics_wire.msd_model import VehicleType, msd_from_fixes
from telematics_wire.sip.ecall_body import URN_AUTOMATIC, URN_TEST, build_control_ack, build_control_request_msd
from telematics_wire.sip.ecall_invite import read_msd
from telematics_wire.sip.pidf_lo import Location
from tests.conftest import VIN
from tests.ecall.ng.psap_peer import PsapPeer, Script, psap_peer

I = EcallIndication  # noqa: E741 - the indication names read like the table in ng_modem
WHEN = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def sample_msd(identifier: int) -> bytes:
    msd = msd_from_fixes(
        ((48.1, 11.5),),
        heading_deg=0.0,
        automatic_activation=True,
        test_call=False,
        position_can_be_trusted=True,
        vehicle_type=VehicleType.M1,
        vin=VIN,
        message_identifier=identifier,
        timestamp=WHEN,
    )
    return encode(msd, 3)


@dataclass
class Vehicle:
    ng: NgEcallModem
    events: list[ModemEvent] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def indications(self) -> list[EcallIndication]:
        return [event.indication for event in self.events if isinstance(event, ModemIndication)]

    async def wait(self, predicate: Callable[[], bool], *, within: float = 5.0) -> None:
        # io_timeout: on a fast virtual loop a bound is never shorter than a real floor, or a loaded
        # machine's stall of 25 ms real (5 s at 200x) fails the wait
        async with asyncio.timeout(io_timeout(within)):
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):  # RTP counts change without an event
                        await self.changed.wait()

    def contact(self) -> str:
        sip = self.ng.sip
        assert sip is not None
        return f"sip:ivs@{sip.advertised[0]}:{sip.advertised[1]}"


@contextlib.asynccontextmanager
async def vehicle(peer: PsapPeer, *, timers: SipTimers | None = None) -> AsyncIterator[Vehicle]:
    config = NgConfig(proxy_host=peer.address[0], proxy_port=peer.address[1])
    events: list[ModemEvent] = []
    changed = asyncio.Event()

    def heard(event: ModemEvent) -> None:
        events.append(event)
        changed.set()

    car = Vehicle(ng=NgEcallModem(config, vin=VIN, on_event=heard, timers=timers), events=events, changed=changed)
    ng = car.ng
    identifiers = iter(range(1, 256))
    location = Location(latitude=48.1, longitude=11.5, timestamp=WHEN)

    def next_msd() -> NgMsd:
        identifier = next(identifiers)
        return NgMsd(message_identifier=identifier, msd=sample_msd(identifier), location=location)

    ng.bind_service(msd=next_msd, report=lambda body: car.reports.append(dict(body)))
    task = asyncio.create_task(ng.run(), name="ecall-ng")
    try:
        yield car
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def connected(car: Vehicle) -> None:
    await car.ng.dial(EcallType.AUTOMATIC)
    await car.wait(lambda: I.CONNECTED in car.indications())


async def test_the_invite_carries_urn_msd_and_location_and_the_200_ok_maps_to_the_cs_events() -> None:
    async with psap_peer() as peer, vehicle(peer) as car:
        await connected(car)
        await car.wait(lambda: I.AL_ACK in car.indications())
        assert car.indications() == [I.CONNECTED, I.SEND_MSD, I.LL_ACK, I.AL_ACK]
        assert peer.ecall is not None
        assert peer.ecall.urn == URN_AUTOMATIC
        assert peer.ecall.msd == sample_msd(1)
        assert peer.ecall.location is not None
        assert (peer.ecall.location.latitude, peer.ecall.location.longitude) == (48.1, 11.5)
        await car.ng.send_msd(sample_msd(1))  # the machine's SendMsd for the INVITE's MSD: nothing goes out
        await peer.wait(lambda: "ACK" in peer.methods())
        assert peer.methods() == ["INVITE", "ACK"]
        assert {event.call for event in car.events if isinstance(event, ModemIndication)} == {car.ng.calls}


async def test_voice_flows_both_ways_from_the_200_ok_and_the_psap_clears_down() -> None:
    async with psap_peer(Script(ack_in_ok=None)) as peer, vehicle(peer) as car:
        await connected(car)  # no ack yet: voice does not wait for the MSD
        rtp = car.ng.rtp
        assert rtp is not None
        await car.wait(lambda: rtp.counts.sent >= 5 and rtp.counts.received >= 5)
        assert peer.rtp_in >= 5
        peer.bye()
        await car.wait(lambda: I.CLEARED_DOWN in car.indications())
        await peer.wait(lambda: any(r.status == 200 and r.cseq.method == "BYE" for r in peer.responses))
        [report] = car.reports
        assert report["event"] == "ng_call_ended"
        assert report["rtp_sent"] >= 5
        assert report["rtp_received"] >= 5
        assert report["connected"] is True
        assert not rtp.active, "voice stops with the call"


async def test_the_psap_asks_for_the_msd_again_and_gets_a_fresh_one_by_info() -> None:
    async with psap_peer(Script(ack_in_ok=None)) as peer, vehicle(peer) as car:
        await connected(car)
        await car.ng.send_msd(sample_msd(1))  # the INVITE's, owed
        peer.info(build_control_request_msd())
        await car.wait(lambda: car.indications().count(I.SEND_MSD) == 2)
        await car.ng.send_msd(sample_msd(2))
        await peer.wait(lambda: "INFO" in peer.methods())
        info = peer.requests[peer.methods().index("INFO")]
        assert info.headers.get("Info-Package") == "EmergencyCallData.eCall.MSD"
        found = read_msd(info)
        assert found is not None
        assert found[0] == sample_msd(2)
        peer.info(build_control_ack(found[1], True))  # the PSAP acks the fresh MSD later, by INFO
        await car.wait(lambda: I.AL_ACK in car.indications())
        assert car.indications()[-2:] == [I.LL_ACK, I.AL_ACK]


async def test_a_refused_msd_and_an_ack_for_another_msd() -> None:
    async with psap_peer(Script(ack_in_ok=False)) as peer, vehicle(peer) as car:
        await connected(car)
        await car.wait(lambda: I.MSD_FAILED in car.indications())
        peer.info(build_control_ack("msd9.not-ours", True))  # a ref of no MSD of this call: no AL-ACK
        await peer.wait(lambda: sum(r.cseq.method == "INFO" for r in peer.responses) == 1)
        assert I.AL_ACK not in car.indications()


async def test_a_final_error_fails_the_dial_and_is_acknowledged_on_its_branch() -> None:
    async with psap_peer(Script(final=503)) as peer, vehicle(peer) as car:
        await car.ng.dial(EcallType.AUTOMATIC)
        await car.wait(lambda: any(isinstance(event, ModemCallEnded) for event in car.events))
        [ended] = [event for event in car.events if isinstance(event, ModemCallEnded)]
        assert "503" in ended.reason
        await peer.wait(lambda: "ACK" in peer.methods())
        invite, ack = peer.requests[0], peer.requests[-1]
        assert ack.headers.get_all("Via")[0] == invite.headers.get_all("Via")[0], "a non-2xx ACK is on the branch"
        assert car.indications() == []


async def test_the_vehicle_hangs_up_a_test_call_with_bye_and_tells_nothing() -> None:
    async with psap_peer() as peer, vehicle(peer) as car:
        await car.ng.dial(EcallType.TEST)
        await car.wait(lambda: I.CONNECTED in car.indications())
        assert peer.ecall is not None
        assert peer.ecall.urn == URN_TEST
        before = list(car.events)
        await car.ng.hang_up()
        await peer.wait(lambda: "BYE" in peer.methods())
        assert car.events == before, "like ATH: hanging up reports no call end"
        assert car.reports[-1]["reason"] == "hung up in the vehicle"


async def test_a_callback_rings_is_answered_and_carries_voice() -> None:
    async with psap_peer() as peer, vehicle(peer) as car:
        await connected(car)
        peer.bye()
        await car.wait(lambda: I.CLEARED_DOWN in car.indications())
        peer.call_back(car.contact())
        await car.wait(lambda: any(isinstance(event, ModemRing) for event in car.events))
        calls_before = car.ng.calls
        await car.ng.answer()
        assert car.ng.calls == calls_before + 1, "an answered call counts, as ATA's OK does"
        await peer.wait(lambda: any(r.status == 200 and r.cseq.method == "INVITE" for r in peer.responses))
        ok = next(r for r in peer.responses if r.status == 200 and r.cseq.method == "INVITE")
        peer.ack_callback(ok)
        rtp = car.ng.rtp
        assert rtp is not None
        await car.wait(lambda: rtp.counts.sent >= 3 and rtp.counts.received >= 3)
        peer.callback_request("BYE", ok)  # only the PSAP ends it
        await car.wait(lambda: car.indications().count(I.CLEARED_DOWN) == 2)
        assert car.reports[-1]["role"] == "uas"
        assert car.reports[-1]["rtp_received"] >= 3
