"""The modem client against the modem simulator on a real pty, with the PSAP stub on the 112 loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from backend_stub.psap import PsapStub
from hil.devices.modem_sim import Coverage, ModemSimulator, ModemTiming
from tcu.backoff import Backoff
from tcu.errors import DeviceGoneError, DeviceTimeoutError, ModemCommandError
from tcu.sources.modem import PROFILES, EcallIndication, EcallType, RegistrationStatus, SimStatus
from tcu.sources.modem_client import (
    ModemCallEnded,
    ModemClient,
    ModemClientConfig,
    ModemEvent,
    ModemIndication,
    ModemRing,
    ModemStatus,
)
from tests.conftest import eventually

MSD = bytes.fromhex("021E000681D55D82080332008E0420C4146006B0412DF8A5236408277B6C0FF0")


@dataclass
class Bench:
    psap: PsapStub
    modem: ModemSimulator
    client: ModemClient
    events: list[ModemEvent] = field(default_factory=list)

    def indications(self) -> list[EcallIndication]:
        return [e.indication for e in self.events if isinstance(e, ModemIndication)]

    def statuses(self) -> list[ModemStatus]:
        return [e for e in self.events if isinstance(e, ModemStatus)]

    async def ready(self, count: int = 1) -> None:
        initialised = lambda: sum(s.reason == "initialised" for s in self.statuses())  # noqa: E731
        await eventually(lambda: initialised() >= count and self.client.ready, what=f"initialisation {count}")


@contextlib.asynccontextmanager
async def bench(tmp_path: Path, *, profile: str = "simcom", **modem: object) -> AsyncIterator[Bench]:
    async with PsapStub() as psap:
        sim = ModemSimulator(
            psap_address=psap.address,
            profile=PROFILES[profile],
            timing=ModemTiming.instant(),
            link_path=tmp_path / "ttyMODEM",
            **modem,
        )
        async with sim:
            events: list[ModemEvent] = []
            config = ModemClientConfig(
                port=sim.path,
                profile=replace(PROFILES[profile], dial_timeout_s=0.3),
                command_timeout_s=0.3,
                poll_interval_s=30.0,
                max_timeouts=2,
                backoff=Backoff(base_s=0.05, cap_s=0.2),
            )
            client = ModemClient(config, on_event=events.append)
            async with asyncio.TaskGroup() as tasks:
                task = tasks.create_task(client.run(), name="modem-client")
                try:
                    yield Bench(psap=psap, modem=sim, client=client, events=events)
                finally:
                    task.cancel()


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_initialises_and_carries_an_ecall_to_the_psap(tmp_path: Path, profile: str) -> None:
    async with bench(tmp_path, profile=profile) as b:
        await b.ready()
        assert b.modem.requests[:9] == [
            "AT",
            "ATE0",
            "AT+CMEE=1",
            "AT+CPIN?",
            "AT+CREG=1",
            "AT+CLIP=1",
            "AT+COPS=0",
            "AT+CREG?",
            "AT+CSQ",
        ]
        status = b.statuses()[-1]
        assert (status.sim, status.registration, status.rssi_dbm) == (SimStatus.READY, RegistrationStatus.HOME, -73)
        await b.client.dial(EcallType.AUTOMATIC)
        await eventually(lambda: EcallIndication.SEND_MSD in b.indications(), what="SEND MSD")
        await b.client.send_msd(MSD)
        received = await b.psap.wait_for_msd()
        assert received.raw == MSD
        assert b.psap.call().kind == "automatic"
        await eventually(lambda: EcallIndication.AL_ACK in b.indications(), what="AL-ACK")
        assert b.indications()[:4] == [
            EcallIndication.CONNECTED,
            EcallIndication.SEND_MSD,
            EcallIndication.LL_ACK,
            EcallIndication.AL_ACK,
        ]
        await b.psap.clear_down()
        await eventually(lambda: any(isinstance(e, ModemCallEnded) for e in b.events), what="NO CARRIER")
        await b.psap.call_back()
        await eventually(lambda: any(isinstance(e, ModemRing) for e in b.events), what="RING")
        await b.client.answer()
        await b.client.hang_up()
        await b.psap.wait_for(lambda: b.psap.call().ended_by == "ivs", what="hang-up")


async def test_no_network_at_the_trigger_then_coverage_returns(tmp_path: Path) -> None:
    async with bench(tmp_path, coverage=Coverage.NO_SERVICE) as b:
        await b.ready()
        assert b.client.registration is RegistrationStatus.NOT_SEARCHING
        with pytest.raises(ModemCommandError, match=r"\+CME ERROR: 30 \(no network service\)") as refused:
            await b.client.dial(EcallType.MANUAL)
        assert refused.value.code == 30
        await b.modem.set_coverage(Coverage.SEARCHING)
        await b.modem.set_coverage(Coverage.REGISTERED)
        await eventually(lambda: b.client.registration is RegistrationStatus.HOME, what="+CREG: 1")
        assert [s.registration for s in b.statuses()[-2:]] == [RegistrationStatus.SEARCHING, RegistrationStatus.HOME]
        await b.client.dial(EcallType.MANUAL)
        await b.psap.wait_for(lambda: bool(b.psap.calls), what="call")


async def test_a_modem_that_stops_answering_times_out_and_is_reopened(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.ready()
        b.modem.mute = True
        with pytest.raises(DeviceTimeoutError, match="did not answer AT\\+CECALL=3"):
            await b.client.dial(EcallType.AUTOMATIC)
        with pytest.raises((DeviceTimeoutError, DeviceGoneError)):
            await b.client.dial(EcallType.AUTOMATIC)
        await eventually(lambda: not b.client.ready, what="connection given up")
        b.modem.mute = False
        await b.ready(count=2)
        # The hung modem did place the first call while saying nothing: it refuses another until hung up.
        with pytest.raises(ModemCommandError) as busy:
            await b.client.dial(EcallType.AUTOMATIC)
        assert busy.value.code == 3
        await b.client.hang_up()
        await b.client.dial(EcallType.AUTOMATIC)
        await b.psap.wait_for(lambda: len(b.psap.calls) == 2, what="the call placed again")


async def test_a_modem_reset_mid_call_ends_the_call_and_the_modem_is_initialised_again(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.ready()
        await b.client.dial(EcallType.AUTOMATIC)
        await eventually(lambda: EcallIndication.SEND_MSD in b.indications(), what="connected")
        await b.modem.reset()
        await eventually(
            lambda: any(isinstance(e, ModemCallEnded) and e.reason == "modem restarted" for e in b.events),
            what="reset noticed",
        )
        await b.ready(count=2)
        assert b.modem.requests.count("ATE0") == 2, "initialised again on the same port"
        await b.psap.wait_for(lambda: b.psap.call().ended_by == "network", what="PSAP sees the drop")
        await b.client.dial(EcallType.AUTOMATIC)
        await b.psap.wait_for(lambda: len(b.psap.calls) == 2, what="second call")


async def test_garbage_is_counted_and_never_taken_for_an_answer(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.ready()
        await b.modem.inject_garbage(64)
        await b.modem.inject(b"\r\n\xfe\xffOK\r\n")
        b.modem.prefix_next_write(b"\x93\x07noise\r\n")
        await b.client.set_registration(True)
        assert b.client.garbage_lines >= 2
        b.modem.truncate_next_write(3, tail=b"\xff\r\n")  # the answer itself is mangled: a timeout, not a crash
        with pytest.raises(DeviceTimeoutError):
            await b.client.hang_up()
        await b.client.hang_up()


async def test_an_unplugged_modem_is_reopened_by_its_path(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.ready()
        b.modem.unplug()
        await eventually(lambda: not b.client.ready, what="unplug noticed")
        with pytest.raises(DeviceGoneError):
            await b.client.dial(EcallType.AUTOMATIC)
        b.modem.plug()
        await b.ready(count=2)
        assert any(isinstance(e, ModemCallEnded) and e.reason.startswith("modem lost") for e in b.events)


async def test_refusals_carry_the_modem_error(tmp_path: Path) -> None:
    async with bench(tmp_path, sim=SimStatus.NOT_INSERTED) as b:
        await b.ready()
        assert b.client.sim is SimStatus.NOT_INSERTED
        with pytest.raises(ModemCommandError) as no_sim:
            await b.client.dial(EcallType.AUTOMATIC)
        assert no_sim.value.code == 10
        with pytest.raises(ModemCommandError) as no_call:
            await b.client.send_msd(MSD)
        assert no_call.value.code == 3


async def test_dormant_registration_for_ecall_only_mode(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        await b.ready()
        await b.client.set_registration(False)
        assert "AT+COPS=2" in b.modem.requests
        await eventually(lambda: b.client.registration is RegistrationStatus.NOT_SEARCHING, what="+CREG: 0")
        await b.modem.reset()
        await b.ready(count=2)
        assert b.modem.requests[-3] == "AT+COPS=2", "the wish survives a modem reset"
        await b.client.set_registration(True)
        await eventually(lambda: b.client.registration is RegistrationStatus.HOME, what="+CREG: 1")
