"""The eCall service end to end, in process: VehicleState → service → modem simulator on a pty → PSAP stub.

Time: the service runs on a ManualClock, so timers (redial spacing, T9) move only when a test advances
it; what is left is waiting for real I/O on the pty and the loopback 112 network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backend_stub.psap import PsapBehaviour, PsapStub
from hil.devices.modem_sim import Coverage, ModemSimulator, ModemTiming
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from tcu.ecall.activity import EcallActivity
from tcu.ecall.config import EcallConfig, EcallTimers, load_ecall_config
from tcu.ecall.service import EcallService
from tcu.ecall.state_machine import EcallState
from tcu.ecall.triggers import CRASH_DETECTED, SOS_BUTTON
from tcu.errors import ConfigError
from tcu.services.sim import Sim
from tcu.sources.modem import PROFILES, RegistrationStatus
from tcu.sources.modem_client import ModemClient, ModemClientConfig, ModemEvent
from tcu.sources.nmea_track import GnssPosition, GnssTrack
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN, eventually

PROFILE = replace(PROFILES["simcom"], dial_timeout_s=0.5)


@dataclass
class Rig:
    psap: PsapStub
    modem: ModemSimulator
    client: ModemClient
    service: EcallService
    state: VehicleState
    clock: ManualClock
    records: list[Record]
    activity: list[EcallActivity] = field(default_factory=list)

    def signal(self, path: str, value: Any, quality: Quality = Quality.GOOD) -> None:
        self.state.update(Signal(path=path, value=value, timestamp=self.clock.now(), source="test", quality=quality))

    def crash(self) -> None:
        self.signal(CRASH_DETECTED, True)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.service.wake()

    def moves(self) -> list[tuple[str, str]]:
        return [(r.body["from"], r.body["to"]) for r in self.records if r.body["event"] == "transition"]

    def events(self) -> list[str]:
        return [str(r.body["event"]) for r in self.records]

    async def fast_forward(self, condition: Callable[[], bool], *, what: str, step_s: float = 5.0) -> None:
        """Let service time pass in steps (the modem's own I/O runs in real time) until `condition` holds."""
        for _ in range(200):
            if condition():
                return
            self.advance(step_s)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {what} after {200 * step_s:g} s of service time")

    async def until(self, state: EcallState) -> None:
        await eventually(lambda: self.service.state is state, what=f"eCall state {state.value}")


@contextlib.asynccontextmanager
async def ecall_rig(
    tmp_path: Path,
    *,
    sim: Sim | None = None,
    behaviour: PsapBehaviour | None = None,
    coverage: Coverage = Coverage.REGISTERED,
    track: GnssTrack | None = None,
    timers: EcallTimers | None = None,
    clock: ManualClock | None = None,
    legal_ecall: bool = True,
    store: Callable[[Record], Awaitable[None]] | None = None,
    numbers: dict[str, tuple[str, int]] | None = None,
    intelligent_call_available: Callable[[], bool] | None = None,
    **config_changes: Any,
) -> AsyncIterator[Rig]:
    clock = clock or ManualClock()
    state = VehicleState()
    records: list[Record] = []

    async def keep(record: Record) -> None:
        records.append(record)

    async with PsapStub(behaviour=behaviour) as psap:
        modem = ModemSimulator(
            psap_address=psap.address,
            coverage=coverage,
            timing=ModemTiming.instant(),
            link_path=tmp_path / "ttyECALL",
            numbers=numbers,
        )
        async with modem:
            config = EcallConfig(
                port=modem.path,
                profile=PROFILE,
                command_timeout_s=0.3,
                legal_ecall=legal_ecall,
                timers=timers or EcallTimers(),
                **config_changes,
            )
            clients: list[ModemClient] = []

            def client(on_event: Callable[[ModemEvent], None]) -> ModemClient:
                backoff = Backoff(base_s=0.05, cap_s=0.2)
                settings = ModemClientConfig(
                    port=config.port,
                    profile=PROFILE,
                    command_timeout_s=0.3,
                    poll_interval_s=0.2,
                    max_timeouts=2,
                    backoff=backoff,
                )
                clients.append(ModemClient(settings, on_event=on_event))
                return clients[-1]

            service = EcallService(
                config,
                vin=VIN,
                state=state,
                clock=clock,
                track=track,
                sim=sim,
                modem=client,
                intelligent_call_available=intelligent_call_available,
            )
            rig = Rig(
                psap=psap, modem=modem, client=clients[0], service=service, state=state, clock=clock, records=records
            )
            service.subscribe(rig.activity.append)
            async with asyncio.TaskGroup() as tasks:
                task = tasks.create_task(service.run(), name="ecall")
                drain = tasks.create_task(service.reports.drain(store or keep), name="ecall-reports")
                try:
                    await eventually(lambda: rig.client.ready, what="modem initialised")
                    yield rig
                finally:
                    task.cancel()
                    drain.cancel()


def munich_track(clock: ManualClock) -> GnssTrack:
    track = GnssTrack(min_spacing_m=10.0)
    for seconds, lat in ((-20, 48.1000), (-10, 48.1010), (-1, 48.1020)):  # driving north, ~110 m per step
        track.add(GnssPosition(timestamp=clock.now() + timedelta(seconds=seconds), latitude=lat, longitude=11.5))
    return track


async def test_a_crash_reaches_the_psap_with_vin_position_and_track(tmp_path: Path) -> None:
    clock = ManualClock()
    async with ecall_rig(tmp_path, clock=clock, track=munich_track(clock)) as rig:
        crash_time = clock.now()
        rig.crash()
        received = await rig.psap.wait_for_msd()
        msd = received.msd
        assert msd is not None
        assert msd.vin == VIN
        assert (msd.automatic_activation, msd.test_call, msd.position_can_be_trusted) == (True, False, True)
        assert (msd.latitude_deg, msd.longitude_deg) == (pytest.approx(48.102), pytest.approx(11.5))
        assert msd.recent_n1 is not None
        assert msd.recent_n2 is not None
        assert (msd.recent_n1.latitude, msd.recent_n2.latitude) == (-36, -36), "0.001° = 36 units, south"
        assert msd.direction == 0, "heading north"
        assert msd.timestamp == crash_time
        assert msd.message_identifier == 1
        assert rig.psap.call().kind == "automatic"
        await rig.until(EcallState.VOICE)
        assert rig.service.active.is_set()
        await rig.psap.clear_down()
        await rig.until(EcallState.CALLBACK_WINDOW)
        assert not rig.service.active.is_set()
        assert rig.moves() == [
            ("idle", "triggered"),
            ("triggered", "dialling"),
            ("dialling", "call_established"),
            ("call_established", "msd_sent"),
            ("msd_sent", "msd_acknowledged"),
            ("msd_acknowledged", "voice"),
            ("voice", "cleared"),
            ("cleared", "callback_window"),
        ]
        assert all(r.kind is RecordKind.ECALL for r in rig.records)
        first = rig.records[0].body
        assert (first["reason"], first["call_type"], first["session"]) == ("crash detected", "automatic", 1)
        assert [(a.started, a.call_type.value) for a in rig.activity] == [(True, "automatic"), (False, "automatic")]
        assert "lat" not in str(rig.records), "reports carry no position"


async def test_position_unknown_still_calls_and_says_the_position_cannot_be_trusted(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path) as rig:
        rig.signal(SOS_BUTTON, True)
        rig.advance(1.0)  # held past sos_hold_s
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert (msd.latitude_mas, msd.longitude_mas, msd.position_can_be_trusted) == (None, None, False)
        assert (msd.automatic_activation, rig.psap.call().kind) == (False, "manual")


async def test_a_stale_position_is_sent_but_not_trusted(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path) as rig:
        rig.signal("Vehicle.CurrentLocation.Latitude", 52.52)
        rig.signal("Vehicle.CurrentLocation.Longitude", 13.40)
        rig.signal("Vehicle.CurrentLocation.Heading", 91.0)
        rig.clock.advance(120.0)
        rig.crash()
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert (msd.latitude_deg, msd.direction, msd.position_can_be_trusted) == (pytest.approx(52.52), 46, False)


async def test_no_network_at_the_trigger_keeps_trying_until_coverage_returns(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path, coverage=Coverage.NO_SERVICE) as rig:
        rig.crash()
        await rig.until(EcallState.TRIGGERED)
        refused = [r.body for r in rig.records if r.body["to"] == "triggered" and r.body["from"] == "dialling"]
        assert "+CME ERROR: 30 (no network service)" in str(refused[0]["reason"])
        rig.advance(30.0)
        await eventually(lambda: rig.moves().count(("dialling", "triggered")) == 2, what="second refused attempt")
        await rig.modem.set_coverage(Coverage.REGISTERED)
        await eventually(lambda: rig.client.registration is RegistrationStatus.HOME, what="registered")
        rig.advance(2.0)  # the minimum gap after the last attempt
        assert (await rig.psap.wait_for_msd()).msd is not None
        assert sum(1 for r in rig.records if r.body.get("attempt")) == 3


async def test_a_modem_reset_mid_call_is_survived_and_the_call_re_established(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path, behaviour=PsapBehaviour(request_msd_on_connect=False)) as rig:
        rig.crash()
        await rig.until(EcallState.CALL_ESTABLISHED)
        await rig.modem.reset()
        await rig.psap.wait_for(lambda: len(rig.psap.calls) == 2, what="the call re-established")
        await rig.until(EcallState.CALL_ESTABLISHED)
        await rig.psap.request_msd()
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert msd.message_identifier == 1
        assert ("call_established", "triggered") in rig.moves()
        assert rig.modem.requests.count("ATE0") == 2, "the modem was initialised again"


async def test_a_modem_that_stops_answering_at_the_trigger_is_retried(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path) as rig:
        rig.modem.mute = True
        rig.crash()
        await eventually(lambda: any("did not answer" in str(r.body["reason"]) for r in rig.records), what="timeout")
        rig.modem.mute = False
        await rig.fast_forward(lambda: bool(rig.psap.msds), what="MSD after the modem recovered")
        assert rig.psap.msds[0].msd is not None
        assert "ATH" in rig.modem.requests, "the orphan call the mute modem placed was hung up first"
        assert rig.psap.calls[0].ended_by == "ivs"


async def test_garbage_on_the_line_does_not_stop_the_call(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path) as rig:
        await rig.modem.inject_garbage(200)
        rig.crash()
        await rig.modem.inject_garbage(50)
        assert (await rig.psap.wait_for_msd()).msd is not None
        assert rig.client.garbage_lines > 0


async def test_a_second_trigger_is_reported_and_the_callback_answered(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path) as rig:
        rig.crash()
        await rig.until(EcallState.VOICE)
        rig.signal(SOS_BUTTON, True)
        rig.advance(15.0)  # past the SOS hold time and the re-trigger suppression
        await eventually(lambda: "trigger_ignored" in rig.events(), what="second trigger reported")
        rig.service.request_hang_up("occupant pressed end")
        await eventually(lambda: "hangup_refused" in rig.events(), what="hang-up refused")
        assert len(rig.psap.calls) == 1
        await rig.psap.clear_down()
        await rig.until(EcallState.CALLBACK_WINDOW)
        await rig.psap.call_back()
        await rig.until(EcallState.VOICE)
        await rig.psap.request_msd()
        msd = (await rig.psap.wait_for_msd(2)).msd
        assert msd is not None
        assert msd.message_identifier == 2
        assert "ATA" in rig.modem.requests


async def test_a_test_call_on_command(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path) as rig:
        rig.service.trigger_test_call()
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert msd.test_call
        assert rig.psap.call().kind == "test"
        rig.service.request_hang_up("test done")
        await rig.until(EcallState.IDLE)
        await rig.psap.wait_for(lambda: rig.psap.call().ended_by == "ivs", what="hang-up")


async def test_a_failing_backend_report_never_touches_the_call(tmp_path: Path) -> None:
    async def broken(record: Record) -> None:
        raise OSError("disk full")

    async with ecall_rig(tmp_path, store=broken) as rig:
        rig.crash()
        assert (await rig.psap.wait_for_msd()).msd is not None


# -- refusing to start ------------------------------------------------------------------------------------
def test_a_legal_ecall_vehicle_refuses_to_start_without_a_usable_ecall_config() -> None:
    with pytest.raises(ConfigError, match=r"ecall.port: missing.*legal 112 eCall.*will not start"):
        load_ecall_config(None, vin=VIN)
    with pytest.raises(ConfigError, match=r"ecall.profile: got 'nokia'.*will not start"):
        load_ecall_config({"port": "/dev/ttyUSB2", "profile": "nokia"}, vin=VIN)
    with pytest.raises(ConfigError, match=r"vin: VIN 'WMWZZZ3CZ2E12345I'.*will not start"):
        load_ecall_config({"port": "/dev/ttyUSB2"}, vin="WMWZZZ3CZ2E12345I")
    with pytest.raises(ConfigError, match=r"ecall.timers.t9_s: 50000.0 exceeds t10_s"):
        load_ecall_config({"port": "x", "timers": {"t9_s": 50000}}, vin=VIN)


def test_a_vehicle_without_legal_ecall_may_have_none_but_not_a_broken_one() -> None:
    assert load_ecall_config({"legal_ecall": False}, vin=VIN) is None
    with pytest.raises(ConfigError, match=r"ecall\.baudrate"):
        load_ecall_config({"legal_ecall": False, "port": "x", "baudrate": "fast"}, vin=VIN)


def test_the_ecall_section_parses_into_typed_config() -> None:
    config = load_ecall_config(
        {
            "port": "socket://127.0.0.1:7000",
            "profile": "ublox",
            "vehicle_type": "N1",
            "msd_version": 3,
            "propulsion": ["diesel", "electric"],
            "timers": {"max_dial_attempts": 10, "redial_interval_s": 15},
        },
        vin=VIN,
    )
    assert config is not None
    assert (config.profile.name, config.vehicle_type.value, config.msd_version) == ("ublox", "N1", 3)
    assert config.timers.max_dial_attempts == 10
    assert config.timers.redial_interval_s == 15.0
    assert str(config.propulsion) == "Propulsion.DIESEL|ELECTRIC"
    with pytest.raises(ConfigError, match="unknown key"):
        load_ecall_config({"port": "x", "colour": "red"}, vin=VIN)
    with pytest.raises(ConfigError, match=r"ecall\.propulsion: got 'steam'"):
        load_ecall_config({"port": "x", "propulsion": ["steam"]}, vin=VIN)


def test_the_service_refuses_an_invalid_vin() -> None:
    def no_modem(on_event: Any) -> Any:
        raise AssertionError("not reached")

    with pytest.raises(ConfigError, match="vin:"):
        EcallService(
            EcallConfig(port="x"),
            vin="SHORT",
            state=VehicleState(),
            clock=ManualClock(),
            modem=no_modem,
        )


async def test_a_position_value_nobody_expected_does_not_stop_the_call(tmp_path: Path) -> None:
    async with ecall_rig(tmp_path) as rig:
        rig.signal("Vehicle.CurrentLocation.Latitude", "n/a")
        rig.signal("Vehicle.CurrentLocation.Longitude", 13.4)
        rig.crash()
        msd = (await rig.psap.wait_for_msd()).msd
        assert msd is not None
        assert (msd.latitude_mas, msd.position_can_be_trusted) == (None, False)
