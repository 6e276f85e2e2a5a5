"""Diagnostics that reach the backend: the stored DTC codes as a list, a VIN read over OBD that is not
the configured one, GNSS without a fix, an unplugged ELM327 (issue 11)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nacl.public import Box, PrivateKey

from backend_stub.cli import main as backend_cli
from backend_stub.ingest import Ingest
from backend_stub.store import BackendStore, signal_problem
from hil.devices.elm327_sim import Elm327MemoryLink, Elm327Simulator, Elm327Timing
from hil.devices.nmea_sim import NmeaSimulator
from hil.layout import BenchLayout
from tcu.app import Agent
from tcu.backoff import Backoff
from tcu.clock import ManualClock
from tcu.config import load_agent_config
from tcu.sources.elm327_client import Elm327Client, Elm327ClientConfig
from tcu.sources.elm327_link import PromptLink
from tcu.sources.elm327_mapping import ObdMapping, load_obd_mapping
from tcu.sources.elm327_session import Elm327SessionConfig
from tcu.sources.nmea import NmeaStream, frame_sentence
from tcu.sources.nmea_fix import (
    ALTITUDE,
    FIX_QUALITY,
    HDOP,
    HORIZONTAL_ACCURACY,
    LATITUDE,
    LONGITUDE,
    PDOP,
    VDOP,
    VERTICAL_ACCURACY,
)
from tcu.sources.nmea_reader import NmeaConfig, NmeaReader
from tcu.telemetry.snapshots import encode_signals
from tcu.telemetry.vin_check import VIN_PATH, VinCheck
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.envelope import open_ack, open_record, seal_record
from telematics_wire.keys import load_private_key, load_public_key
from telematics_wire.records import Record, RecordKind, to_millis
from telematics_wire.signal_values import MAX_LIST_ITEM_CHARS, MAX_LIST_ITEMS
from tests.conftest import VIN

DTC_LIST = "Vehicle.OBD.DTCList"
DTCS = ["P0143", "U0196", "C0234"]
SETTINGS = Elm327SessionConfig(command_timeout_s=0.25, reset_timeout_s=1.0, search_timeout_s=1.0)


def fast_mapping() -> ObdMapping:
    packaged = load_obd_mapping()
    return dataclasses.replace(
        packaged, pids=tuple(dataclasses.replace(m, interval_s=0.05) for m in packaged.pids), dtc_interval_s=0.05
    )


async def until(state: VehicleState, predicate: Callable[[], bool], wait_s: float = 5.0) -> None:
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


def memory_client(sim: Elm327Simulator, state: VehicleState, clock: ManualClock, **options: Any) -> Elm327Client:
    async def open_memory() -> PromptLink:
        return Elm327MemoryLink(sim)

    config = Elm327ClientConfig(port="/dev/ttyOBD", settings=SETTINGS, backoff=Backoff(base_s=0.01, cap_s=0.05))
    return Elm327Client(config, state=state, clock=clock, mapping=fast_mapping(), opener=open_memory, **options)


# -- 1. stored DTC codes, as a list ------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path, vehicle_key: PrivateKey, clock: ManualClock) -> Path:
    """A backend config whose store has the vehicle enrolled; yields the config path."""
    config = tmp_path / "backend.toml"
    config.write_text('database = "backend.sqlite3"\n\n[keys]\nprivate_key = "backend.key"\n')
    store = BackendStore(tmp_path / "backend.sqlite3")
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    store.close()
    return config


def deliver(config: Path, backend_key: PrivateKey, vehicle_box: Box, clock: ManualClock, seq: int, body: dict) -> None:
    """One telemetry record through the backend's real ingest, acknowledged."""
    store = BackendStore(config.parent / "backend.sqlite3")
    try:
        ingest = Ingest(store, backend_key, clock, max_payload_bytes=64 * 1024)
        record = Record(kind=RecordKind.TELEMETRY, created=clock.now(), body=body)
        with store.transaction():
            ingest.handle(f"vehicles/{VIN}/up/records", seal_record(vehicle_box, VIN, seq, record))
        acked = {s for _, ack in ingest.take_acks() for s in open_ack(vehicle_box, ack, vin=VIN).seqs}
        assert acked == {seq}
        assert store.rejections(VIN) == []  # taken as a last value, not merely stored
    finally:
        store.close()


def last(config: Path, capsys: pytest.CaptureFixture[str], *options: str) -> str:
    capsys.readouterr()
    assert backend_cli(["last", VIN, "--config", str(config), *options]) == 0
    return capsys.readouterr().out


async def test_stored_dtc_codes_reach_the_backend_as_a_list(
    backend: Path,
    backend_key: PrivateKey,
    vehicle_box: Box,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = Elm327Simulator(elapsed=lambda: 25.0, timing=Elm327Timing.instant(), dtcs=DTCS)
    state = VehicleState()
    async with running(memory_client(sim, state, clock)):
        await until(state, lambda: state.value(DTC_LIST) == tuple(DTCS))
        assert state.value("Vehicle.OBD.Status.DTCCount") == 3
        deliver(backend, backend_key, vehicle_box, clock, 1, {"signals": encode_signals(state.snapshot())})
        assert '"value": [\n      "P0143",\n      "U0196",\n      "C0234"\n    ]' in last(backend, capsys, "--json")
        assert "path=Vehicle.OBD.DTCList  value=['P0143', 'U0196', 'C0234']" in last(backend, capsys)
        # Cleared codes reach the backend too: an empty list, not a value that stays at the old codes.
        sim.dtcs.clear()
        clock.advance(1)
        await until(state, lambda: state.value(DTC_LIST) == ())
        deliver(backend, backend_key, vehicle_box, clock, 2, {"signals": encode_signals(state.snapshot())})
    assert "path=Vehicle.OBD.DTCList  value=[]" in last(backend, capsys)


async def test_more_dtcs_than_a_list_carries_send_the_first_ones_and_the_full_count(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    codes = [f"P{n:04X}" for n in range(1, MAX_LIST_ITEMS + 6)]
    sim = Elm327Simulator(elapsed=lambda: 25.0, timing=Elm327Timing.instant(), dtcs=codes)
    state = VehicleState()
    async with running(memory_client(sim, state, clock)):
        await until(state, lambda: state.value(DTC_LIST) is not None)
    assert state.value(DTC_LIST) == tuple(codes[:MAX_LIST_ITEMS])
    assert state.value("Vehicle.OBD.Status.DTCCount") == len(codes)
    assert f"{len(codes)} stored DTCs; only the first {MAX_LIST_ITEMS} are sent as a list" in caplog.text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1], "value is an array whose item 0 is 1, not text"),
        (["P0143", True], "value is an array whose item 1 is True, not text"),
        ([["P0143"]], "value is an array whose item 0 is a list, not text"),
        ([""], f"value is an array whose item 0 is '', not 1..{MAX_LIST_ITEM_CHARS} characters"),
        (["P" * 33], f"not 1..{MAX_LIST_ITEM_CHARS} characters"),
        (["P0143"] * (MAX_LIST_ITEMS + 1), f"an array of {MAX_LIST_ITEMS + 1} items, more than {MAX_LIST_ITEMS}"),
        ({"P0143": 1}, "value is a dict, not bool, int, float or text, nor an array of text"),
    ],
)
def test_the_backend_refuses_other_arrays_as_last_values_with_the_reason(value: object, reason: str) -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    problem = signal_problem(DTC_LIST, {"v": value, "t": to_millis(now)})
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize("value", [[], ["P0143"], ["P0143"] * MAX_LIST_ITEMS, ["X" * MAX_LIST_ITEM_CHARS]])
def test_the_backend_takes_short_text_arrays_as_last_values(value: list[str]) -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert signal_problem(DTC_LIST, {"v": value, "t": to_millis(now)}) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (["P0143"], "must be a tuple"),
        (("P0143", 7), "item 1 (7) is not text"),
        (("",), "item 0 ('') is not text"),
        (("P0143",) * (MAX_LIST_ITEMS + 1), f"more than {MAX_LIST_ITEMS}"),
    ],
)
def test_a_list_signal_is_an_immutable_bounded_tuple_of_text(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        Signal(path=DTC_LIST, value=value, timestamp=datetime.now(UTC), source="obd")  # type: ignore[arg-type]


# -- 3. GNSS without a fix ----------------------------------------------------------------------------

GNSS_START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
ACCURACIES = (HORIZONTAL_ACCURACY, VERTICAL_ACCURACY, HDOP, PDOP, VDOP)
POSITION = (LATITUDE, LONGITUDE, ALTITUDE)


def gnss_rig(clock: ManualClock) -> tuple[VehicleState, NmeaReader, NmeaSimulator]:
    state = VehicleState()
    return (
        state,
        NmeaReader(NmeaConfig(port="/dev/ttyGNSS"), state=state, clock=clock),
        NmeaSimulator(start_utc=GNSS_START),
    )


def quality(state: VehicleState, path: str) -> Quality | None:
    signal = state.get(path)
    return None if signal is None else signal.quality


def test_a_lost_fix_makes_accuracy_invalid_and_the_last_position_stale(clock: ManualClock) -> None:
    state, reader, sim = gnss_rig(clock)
    reader.handle(NmeaStream().feed(sim.epoch(30.0)))
    assert all(quality(state, path) is Quality.GOOD for path in ACCURACIES + POSITION)
    where = (state.value(LATITUDE), state.value(LONGITUDE))
    sim.lose_fix()
    clock.advance(1)
    reader.handle(NmeaStream().feed(sim.epoch(31.0)))
    assert {path: quality(state, path) for path in ACCURACIES} == dict.fromkeys(ACCURACIES, Quality.INVALID)
    assert state.value(HORIZONTAL_ACCURACY) == 499.95  # what HDOP 99.99 says, and not to be believed
    assert {path: quality(state, path) for path in POSITION} == dict.fromkeys(POSITION, Quality.STALE)
    assert (state.value(LATITUDE), state.value(LONGITUDE)) == where  # where the vehicle was last seen
    assert (state.value(FIX_QUALITY), quality(state, FIX_QUALITY)) == (0, Quality.GOOD)  # true: no fix
    wire = encode_signals(state.snapshot())
    assert wire[HORIZONTAL_ACCURACY]["q"] == "invalid"
    assert wire[LATITUDE]["q"] == "stale"
    # Every further second without a fix writes nothing new about the old position.
    updates: list[Signal] = []
    state.subscribe(updates.append)
    reader.handle(NmeaStream().feed(sim.epoch(32.0)))
    assert not {s.path for s in updates} & set(POSITION)
    sim.regain_fix()
    reader.handle(NmeaStream().feed(sim.epoch(33.0)))
    assert all(quality(state, path) is Quality.GOOD for path in ACCURACIES + POSITION)


@pytest.mark.parametrize(
    "sentence",
    [
        "GPGGA,090000.00,,,,,0,00,99.99,,,,,,",
        "GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99",
        "GPRMC,090000.00,V,,,,,,,231126,,,N",
    ],
)
def test_no_sentence_without_a_fix_reports_a_good_accuracy_or_position(clock: ManualClock, sentence: str) -> None:
    state, reader, sim = gnss_rig(clock)
    reader.handle(NmeaStream().feed(sim.epoch(30.0)))
    clock.advance(1)
    reader.handle(NmeaStream().feed(frame_sentence(sentence)))
    for path in ACCURACIES + POSITION:
        assert quality(state, path) is not Quality.GOOD, path


def test_a_receiver_that_never_had_a_fix_never_reports_an_accuracy_as_good(clock: ManualClock) -> None:
    state, reader, sim = gnss_rig(clock)
    sim.lose_fix()
    reader.handle(NmeaStream().feed(sim.epoch(0.0)))
    assert state.get(LATITUDE) is None
    assert {path: quality(state, path) for path in ACCURACIES} == dict.fromkeys(ACCURACIES, Quality.INVALID)


# -- 4. an unplugged ELM327 ---------------------------------------------------------------------------


async def test_an_unplugged_elm327_logs_one_clear_line_per_outage_and_no_traceback(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The pty is closed under the reader, twice; every logger at INFO (what `tcu run` shows)."""
    sim = Elm327Simulator(elapsed=lambda: 25.0, timing=Elm327Timing.instant(), link_path=str(tmp_path / "ttyOBD"))
    state = VehicleState()
    retries: list[float] = []
    retried = asyncio.Event()

    async def record_sleep(delay: float) -> None:
        retries.append(delay)
        retried.set()
        await asyncio.sleep(0.01)

    config = Elm327ClientConfig(port=sim.path, settings=SETTINGS, backoff=Backoff(base_s=0.01, cap_s=0.05))
    client = Elm327Client(config, state=state, clock=clock, mapping=fast_mapping(), sleep=record_sleep)

    def speed_is(quality: Quality) -> Callable[[], bool]:
        return lambda: (signal := state.get("Vehicle.Speed")) is not None and signal.quality is quality

    with caplog.at_level(logging.INFO):
        async with sim, running(client):
            for outage in (1, 2):
                await until(state, speed_is(Quality.GOOD))
                sim.unplug()
                await until(state, speed_is(Quality.STALE))
                async with asyncio.timeout(5):
                    while len(retries) < 4 * outage:  # several failed attempts to reopen the vanished path
                        retried.clear()
                        await retried.wait()
                clock.advance(1)
                sim.replug()
            await until(state, speed_is(Quality.GOOD))
        gc.collect()  # a failed background task of the serial library is reported when collected
    assert "Traceback" not in caplog.text
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 2, loud  # one per outage, not one per retry
    for line in loud:
        assert line.startswith(f"ELM327 on {sim.path} is unavailable (")
        assert "Check that the adapter is plugged in and the port path is right" in line
    assert caplog.text.count("is back after") == 2


# -- 2. a VIN read over OBD that is not the configured one --------------------------------------------

OBD_VIN = "WBA3A5C51CF256985"  # another car's (a valid check digit, as the simulator insists)


async def test_a_differing_obd_vin_is_one_event_with_both_vins_and_one_log_line(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = Elm327Simulator(elapsed=lambda: 25.0, timing=Elm327Timing.instant(), vin=OBD_VIN)
    state, records = VehicleState(), list[Record]()
    state.subscribe(VinCheck(configured=VIN, clock=clock, report=records.append, allowed=lambda _: True).on_signal)
    client = memory_client(sim, state, clock)
    async with running(client):
        await until(state, lambda: state.value(VIN_PATH) == OBD_VIN)
        for _ in range(3):  # what every reconnect does
            clock.advance(1)
            assert await client.read_vin() == OBD_VIN
    [event] = records
    assert event.kind is RecordKind.EVENT
    assert event.body == {"type": "vin_mismatch", "configured_vin": VIN, "read_vin": OBD_VIN, "source": "obd"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"VIN read over obd is {OBD_VIN}, but this agent is configured for {VIN}: its data is filed under {VIN}. "
        "Check that the adapter is in the right vehicle or correct `vin` in the agent config"
    ]


def vin_reading(value: str, clock: ManualClock, quality: Quality = Quality.GOOD) -> Signal:
    return Signal(path=VIN_PATH, value=value, timestamp=clock.now(), source="obd", quality=quality)


def test_the_right_vin_ends_a_mismatch_and_a_new_one_is_reported_again(clock: ManualClock) -> None:
    records: list[Record] = []
    check = VinCheck(configured=VIN, clock=clock, report=records.append, allowed=lambda _: True)
    for value in (VIN, OBD_VIN, OBD_VIN, VIN, VIN, OBD_VIN):
        check.on_signal(vin_reading(value, clock))
    check.on_signal(vin_reading("WBA3A5C51CF256999", clock, Quality.STALE))  # not a reading: the adapter went
    assert [r.body["read_vin"] for r in records] == [OBD_VIN, OBD_VIN]


def test_a_vin_mismatch_the_data_policy_blocks_is_logged_but_not_sent(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    records: list[Record] = []
    asked: list[str] = []
    check = VinCheck(configured=VIN, clock=clock, report=records.append, allowed=lambda p: bool(asked.append(p)))
    with caplog.at_level(logging.INFO):
        check.on_signal(vin_reading(OBD_VIN, clock))
    assert records == []
    assert asked == [VIN_PATH]  # judged as the VIN signal's own data category
    assert "vin_mismatch event not sent: the data policy does not allow" in caplog.text
    assert OBD_VIN in caplog.text


async def test_the_agent_queues_the_vin_mismatch_event_for_the_backend(tmp_path: Path) -> None:
    bench = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1")
    bench.create_backend()
    bench.add_vehicle(VIN)
    agent = Agent(load_agent_config(bench.agent_config(VIN), env={}))
    box = Box(load_private_key(bench.keys / "backend.x25519.key"), load_public_key(bench.keys / f"{VIN}.x25519.pub"))
    async with agent.outbox:
        agent.state.update(vin_reading(OBD_VIN, agent.clock))
        agent.state.update(vin_reading(OBD_VIN, agent.clock))
        bodies = [open_record(box, queued.envelope, topic_vin=VIN).body for queued in await agent.outbox.next_batch(10)]
    assert [b for b in bodies if b.get("type") == "vin_mismatch"] == [
        {"type": "vin_mismatch", "configured_vin": VIN, "read_vin": OBD_VIN, "source": "obd"}
    ]
