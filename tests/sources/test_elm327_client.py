"""Elm327Client on a real pty against the virtual ELM327, every fault, and the independent emulator."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from hil.devices.elm327_sim import DEFAULT_VIN, Elm327MemoryLink, Elm327Simulator, Elm327Timing
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from tcu.errors import DeviceGoneError
from tcu.sources.elm327_client import Elm327Client, Elm327ClientConfig
from tcu.sources.elm327_link import PromptLink
from tcu.sources.elm327_mapping import ObdMapping, PidMapping, load_obd_mapping
from tcu.sources.elm327_session import Elm327SessionConfig
from tcu.sources.obd_pids import PIDS
from tcu.vehicle.drive_cycle import DriveCycle, DriveSample
from tcu.vehicle.state import Quality, VehicleState

CRUISING = 25.0  # s into the drive cycle: 50 km/h, 2550 rpm
STOPPED = 5.0  # standing at a light: 0 km/h
DTCS = ["P0143", "U0196", "C0234"]
SETTINGS = Elm327SessionConfig(command_timeout_s=0.25, reset_timeout_s=1.0, search_timeout_s=1.0)


def fast_mapping(extra: tuple[PidMapping, ...] = ()) -> ObdMapping:
    packaged = load_obd_mapping()
    return dataclasses.replace(
        packaged,
        pids=tuple(dataclasses.replace(m, interval_s=0.05) for m in packaged.pids) + extra,
        dtc_interval_s=0.2,
    )


MAPPING = fast_mapping()


def expected(sample: DriveSample) -> dict[str, float]:
    sim = Elm327Simulator(elapsed=lambda: sample.elapsed_s)
    return {m.path: sim.pid_value(m.pid, sample) for m in MAPPING.pids}


class Rig:
    """A simulator on a pty with a stable path, and a client with fast settings."""

    def __init__(self, tmp_path: Path) -> None:
        self.elapsed = CRUISING
        self.sim = Elm327Simulator(
            elapsed=lambda: self.elapsed,
            timing=Elm327Timing.instant(),
            dtcs=DTCS,
            link_path=str(tmp_path / "ttyOBD"),
        )
        self.state = VehicleState()
        self.clock = ManualClock()
        self.sleeps: list[float] = []
        self._slept = asyncio.Event()
        self.client = self.make_client()

    def make_client(
        self,
        *,
        mapping: ObdMapping = MAPPING,
        opener: Callable[[], Awaitable[PromptLink]] | None = None,
        **config: object,
    ) -> Elm327Client:
        async def record_sleep(delay: float) -> None:
            self.sleeps.append(delay)
            self._slept.set()
            await asyncio.sleep(0.01)  # the reconnect wait, shortened; the delay itself is asserted

        options: dict[str, object] = {
            "port": self.sim.path,
            "settings": SETTINGS,
            "backoff": Backoff(base_s=0.01, cap_s=0.05),
            "max_timeouts": 2,
        }
        options.update(config)
        return Elm327Client(
            Elm327ClientConfig(**options),  # type: ignore[arg-type]
            state=self.state,
            clock=self.clock,
            mapping=mapping,
            opener=opener,
            sleep=record_sleep,
        )

    async def reconnect_attempts(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.sleeps) < count:
                self._slept.clear()
                await self._slept.wait()

    def fresh(self, path: str) -> bool:
        signal = self.state.get(path)
        return signal is not None and signal.quality is Quality.GOOD and signal.timestamp == self.clock.now()

    def quality(self, path: str) -> Quality | None:
        signal = self.state.get(path)
        return None if signal is None else signal.quality

    def all_good(self) -> bool:
        return all(self.quality(m.path) is Quality.GOOD for m in MAPPING.pids)

    async def until(self, predicate: Callable[[], bool], wait_s: float = 5.0) -> None:
        await until(self.state, predicate, wait_s)


async def until(state: VehicleState, predicate: Callable[[], bool], wait_s: float = 5.0) -> None:
    """Wait for a state update after which `predicate` holds (polls keep updating; no fixed sleeps)."""
    event = asyncio.Event()
    unsubscribe = state.subscribe(lambda _: event.set() if predicate() else None)
    try:
        if not predicate():
            async with asyncio.timeout(wait_s):
                await event.wait()
    finally:
        unsubscribe()


@contextlib.asynccontextmanager
async def running(client: Elm327Client) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(client.run(), name="obd")
        try:
            yield
        finally:
            task.cancel()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path)
    async with rig.sim:
        yield rig


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="tcu"):
        yield caplog


def assert_matches(state: VehicleState, sample: DriveSample) -> None:
    for m in MAPPING.pids:
        value = state.value(m.path)
        assert isinstance(value, float), m.path
        assert value == pytest.approx(expected(sample)[m.path], abs=PIDS[m.pid].resolution / 2 + 1e-9), m.path


async def test_initialise_discover_and_poll_into_the_vehicle_state(rig: Rig) -> None:
    async with running(rig.client):
        await rig.until(lambda: rig.all_good() and rig.state.value("Vehicle.OBD.Status.DTCCount") == 3)
        info = rig.client.info
        assert info is not None
        assert info.version == "1.5"
        assert (info.protocol.protocol.value, info.protocol.auto, info.ecus) == (6, True, ("7E8", "7E9"))
        assert {m.pid for m in MAPPING.pids} <= info.supported_pids
        assert_matches(rig.state, DriveCycle().at(CRUISING))
        assert rig.state.value("Vehicle.VehicleIdentification.VIN") == DEFAULT_VIN == rig.client.vin
        assert rig.client.dtcs == tuple(DTCS)
        assert await rig.client.read_dtcs() == tuple(DTCS)
        assert await rig.client.read_vin() == DEFAULT_VIN
        speed = rig.state.get("Vehicle.Speed")
        assert speed is not None
        assert (speed.source, speed.timestamp) == ("obd", rig.clock.now())
    assert rig.sim.requests[:8] == ["ATZ", "ATE0", "ATL0", "ATS0", "ATH1", "ATSP0", "0100", "ATDPN"]
    assert "ATZ" not in rig.sim.requests[1:], "one initialisation, no reconnect"
    assert rig.client.info is None


async def test_each_pid_is_polled_at_its_own_rate(rig: Rig) -> None:
    pids = (
        PidMapping(pid=0x0D, path="Vehicle.Speed", interval_s=0.02),
        PidMapping(pid=0x05, path="Vehicle.Powertrain.CombustionEngine.ECT", interval_s=10.0),
    )
    client = rig.make_client(mapping=dataclasses.replace(MAPPING, pids=pids, dtc_count_path=None))
    async with running(client):
        await rig.until(lambda: rig.sim.requests.count("010D") >= 10)
    assert rig.sim.requests.count("0105") == 1


async def test_a_pid_the_vehicle_lacks_is_not_polled(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    extra = (PidMapping(pid=0x04, path="Vehicle.OBD.EngineLoad", interval_s=0.05),)
    async with running(rig.make_client(mapping=fast_mapping(extra))):
        await rig.until(rig.all_good)
    assert "0104" not in rig.sim.requests
    assert "vehicle does not support 0104 (Vehicle.OBD.EngineLoad)" in logs.text


async def test_garbage_is_logged_and_polling_goes_on(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    async with running(rig.client):
        await rig.until(rig.all_good)
        await rig.sim.inject_garbage(24)  # unasked, between two requests
        rig.sim.prefix_next_write(b"\xfc\xff\x13")  # glued to the next answer's first line
        rig.clock.advance(1)
        await rig.until(lambda: "garbage on the serial line" in logs.text)
        await rig.until(lambda: all(rig.fresh(m.path) for m in MAPPING.pids))
    assert rig.all_good()
    assert rig.sim.requests.count("ATZ") == 1


async def test_a_cut_line_is_logged_and_polling_goes_on(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    async with running(rig.client):
        await rig.until(rig.all_good)
        rig.sim.truncate_next_write(7, tail=b"\r\r>")
        await rig.until(lambda: "unusable answer to" in logs.text)
        rig.sim.truncate_next_write(7)  # and this time no prompt at all
        await rig.until(lambda: "no '>' prompt within 0.25 s" in logs.text)
        rig.clock.advance(1)
        await rig.until(lambda: rig.fresh("Vehicle.Speed"))
    assert rig.sim.requests.count("ATZ") == 1, "one timeout is not a reason to reconnect"


async def test_question_mark_is_logged_and_polling_goes_on(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    async with running(rig.client):
        await rig.until(rig.all_good)
        rig.sim.truncate_next_write(0, tail=b"?\r\r>")
        await rig.until(lambda: "the adapter did not understand the command" in logs.text)
        rig.clock.advance(1)
        await rig.until(lambda: rig.fresh("Vehicle.Speed"))


async def test_no_data_makes_signals_stale_until_answers_return(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    async with running(rig.client):
        await rig.until(rig.all_good)
        rig.sim.ecu_online = False  # ignition off: every request gets NO DATA
        await rig.until(lambda: all(rig.quality(m.path) is Quality.STALE for m in MAPPING.pids))
        assert "no ECU answered" in logs.text
        rig.sim.ecu_online = True
        await rig.until(rig.all_good)
    assert "answering again after" in logs.text


async def test_unplug_marks_stale_and_replug_brings_fresh_values(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    async with running(rig.client):
        await rig.until(rig.all_good)
        rig.sim.unplug()
        await rig.until(lambda: all(rig.quality(m.path) is Quality.STALE for m in MAPPING.pids))
        assert rig.client.info is None
        with pytest.raises(DeviceGoneError, match="not connected"):
            await rig.client.read_dtcs()
        await rig.reconnect_attempts(4)  # the client keeps trying the vanished path, backing off
        rig.elapsed = STOPPED
        rig.clock.advance(1)
        rig.sim.replug()
        await rig.until(lambda: rig.all_good() and rig.state.value("Vehicle.Speed") == 0.0)
        assert_matches(rig.state, DriveCycle().at(STOPPED))
        assert all(rig.fresh(m.path) for m in MAPPING.pids)
    assert rig.sim.requests.count("ATZ") == 2
    for attempt, delay in enumerate(rig.sleeps[:4]):  # doubling from the base, capped, jittered
        ceiling = min(0.05, 0.01 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert "OBD signal(s) marked stale" in logs.text  # once; the retries that could not open are debug lines
    assert "is back after" in logs.text


async def test_an_adapter_reset_is_noticed_and_undone(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    async with running(rig.client):
        await rig.until(rig.all_good)
        await rig.sim.reset()
        await rig.until(lambda: rig.sim.requests.count("ATZ") == 2)
        rig.clock.advance(1)
        await rig.until(lambda: all(rig.fresh(m.path) for m in MAPPING.pids))
    assert "ELM327 reset itself" in logs.text
    assert rig.sleeps == [], "re-initialised in place, without reconnecting"


async def test_a_hung_adapter_is_reopened(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    async with running(rig.client):
        await rig.until(rig.all_good)
        rig.sim.mute = True
        await rig.until(lambda: all(rig.quality(m.path) is Quality.STALE for m in MAPPING.pids))
        assert "2 requests in a row went unanswered" in logs.text
        rig.sim.mute = False
        rig.clock.advance(1)
        await rig.until(lambda: all(rig.fresh(m.path) for m in MAPPING.pids))
    assert rig.sim.requests.count("ATZ") >= 2


async def test_the_in_memory_twin_feeds_the_same_values(rig: Rig) -> None:
    async def open_memory() -> PromptLink:
        return Elm327MemoryLink(rig.sim)

    async with running(rig.make_client(opener=open_memory)):
        await rig.until(rig.all_good)
    assert_matches(rig.state, DriveCycle().at(CRUISING))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="baud rate 0"):
        Elm327ClientConfig(port="/dev/null", baudrate=0)
    with pytest.raises(ValueError, match="at least 1"):
        Elm327ClientConfig(port="/dev/null", max_timeouts=0)


# -- against the independent elm327-emulator (test-time tool, CC-BY-NC-SA: never vendored) -------


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    elm = pytest.importorskip("elm", reason="elm327-emulator is not installed: pip install elm327-emulator")
    # Its thread calls logging.config.dictConfig on start: by default that replaces the root handlers
    # (pytest's capture included) and writes elm.log into the working directory. An incremental
    # config named by its ELM_LOG_CFG variable changes nothing.
    quiet = tmp_path / "elm-logging.yaml"
    quiet.write_text("version: 1\nincremental: true\n")
    monkeypatch.setenv("ELM_LOG_CFG", str(quiet))
    obd_message = pytest.importorskip("elm.obd_message")
    saved = list(obd_message.DTC_STORED)
    obd_message.DTC_STORED[:] = ["0143", "C196"]  # its 'car' scenario stores none by default
    try:
        with elm.Elm(batch_mode=True) as emu:
            emu.set_sorted_obd_msg("car")
            # Its thread opens the pty; on a loaded machine get_pty() is still None for a moment.
            deadline = time.monotonic() + 10
            while emu.get_pty() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if emu.get_pty() is None:
                pytest.fail("elm327-emulator opened no pty within 10 s")
            yield emu.get_pty()
    finally:
        obd_message.DTC_STORED[:] = saved


async def test_against_elm327_emulator(emulator: str, logs: pytest.LogCaptureFixture) -> None:
    state, clock = VehicleState(), ManualClock()
    config = Elm327ClientConfig(
        port=emulator,
        # It sleeps about 0.5 s on ATZ and ATDPN and 1.5 s on its search.
        settings=Elm327SessionConfig(command_timeout_s=2.0, reset_timeout_s=5.0, search_timeout_s=5.0),
        backoff=Backoff(base_s=0.05, cap_s=0.2),
    )
    client = Elm327Client(config, state=state, clock=clock, mapping=MAPPING)
    # Its 'car' scenario does not list 0146; its 01A6 answer is refused (below).
    paths = {m.path for m in MAPPING.pids if m.pid not in (0x46, 0xA6)}
    async with running(client):
        await until(state, lambda: all(state.get(p) for p in paths) and client.dtcs is not None, wait_s=20)
        assert "vehicle does not support 0146" in logs.text
        # Its odometer answer uses service byte 0x61: reported precisely, never fatal.
        await until(state, lambda: "service byte 0x61, expected 0x41" in logs.text)
        assert client.info is not None
        assert client.info.protocol.protocol.value == 6
    assert client.vin in {"WP0ZZZ99ZTS390000", "MAT403096BNL00000", "SB1ZS3JE60E282102"}
    assert client.dtcs == ("P0143", "U0196")
    assert "without the DTC count byte" in logs.text
    speed, rpm = state.value("Vehicle.Speed"), state.value("Vehicle.Powertrain.CombustionEngine.Speed")
    assert isinstance(speed, float)
    assert isinstance(rpm, float)
    assert 0 <= speed <= 255
    assert 0 <= rpm <= 16383.75
    assert state.value("Vehicle.Powertrain.FuelSystem.RelativeLevel") == pytest.approx(66.67, abs=0.01)
    assert state.get("Vehicle.TraveledDistance") is None
