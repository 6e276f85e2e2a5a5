"""The eCall never waits on a disk write or a telematics listener (issue 14).

A fake modem records the commands it is given, in order, so each test states an ordering (the dial
reached the modem before X) rather than a wall-clock figure; the disk is a store that blocks until the
test releases it, after its assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from tcu.clock import ManualClock
from tcu.ecall.activity import EcallActivity
from tcu.ecall.config import EcallConfig
from tcu.ecall.reports import EcallReports
from tcu.ecall.service import EcallService
from tcu.ecall.state_machine import EcallState
from tcu.ecall.triggers import CRASH_DETECTED
from tcu.sources.modem import EcallIndication, EcallType
from tcu.sources.modem_client import ModemEvent, ModemIndication
from tcu.vehicle.state import Signal, VehicleState
from telematics_wire.records import Record
from tests.conftest import VIN

WITHIN_S = 5.0  # a bound for a hang, never a measurement


async def until(condition: Callable[[], bool]) -> None:
    """Let the engine, the drain and the disk's thread run until `condition` holds (a hang fails)."""
    async with asyncio.timeout(WITHIN_S):
        while not condition():  # noqa: ASYNC110 - what changes it runs between these yields
            await asyncio.sleep(0.001)


@dataclass
class FakeModem:
    """Answers every command at once and writes down what it was told, with what the test wants to know
    at that moment (`observe`)."""

    on_event: Callable[[ModemEvent], None]
    observe: Callable[[], object] = lambda: None
    log: list[tuple[str, object]] = field(default_factory=list)
    told: asyncio.Condition = field(default_factory=asyncio.Condition)
    calls: int = 0

    async def run(self) -> NoReturn:
        await asyncio.get_running_loop().create_future()
        raise AssertionError("never")

    async def _command(self, name: str) -> None:
        self.log.append((name, self.observe()))
        async with self.told:
            self.told.notify_all()

    async def dial(self, ecall_type: EcallType) -> None:
        await self._command(f"dial {ecall_type.name.lower()}")

    async def voice_dial(self, number: str) -> None:
        await self._command("voice_dial")

    async def send_msd(self, msd: bytes) -> None:
        await self._command("send_msd")

    async def answer(self) -> None:
        await self._command("answer")

    async def hang_up(self) -> None:
        await self._command("hang_up")

    async def set_registration(self, registered: bool) -> None:
        pass  # the SIM is active: the modem stays registered, nothing to tell

    def commands(self) -> list[str]:
        return [name for name, _ in self.log]

    async def wait_for(self, name: str) -> object:
        """What `observe` said when the modem was given `name`."""
        async with asyncio.timeout(WITHIN_S), self.told:
            await self.told.wait_for(lambda: name in self.commands())
        return next(seen for command, seen in self.log if command == name)

    def indicate(self, indication: EcallIndication) -> None:
        self.on_event(ModemIndication(indication=indication, call=self.calls))


@dataclass
class Rig:
    service: EcallService
    modem: FakeModem
    state: VehicleState
    clock: ManualClock

    def crash(self) -> None:
        self.state.update(Signal(path=CRASH_DETECTED, value=True, timestamp=self.clock.now(), source="test"))


@contextlib.asynccontextmanager
async def rig(
    *,
    store: Callable[[Record], Awaitable[None]] | None,
    reports: EcallReports | None = None,
    observe: Callable[[EcallService], object] = lambda service: None,
) -> AsyncIterator[Rig]:
    """The service on a fake modem; `store` drains its reports as telematics would (None: telematics down)."""
    clock = ManualClock()
    state = VehicleState()
    modems: list[FakeModem] = []

    def make_modem(on_event: Callable[[ModemEvent], None]) -> FakeModem:
        modems.append(FakeModem(on_event))
        return modems[0]

    service = EcallService(
        EcallConfig(port="fake", legal_ecall=True), vin=VIN, state=state, clock=clock, modem=make_modem, reports=reports
    )
    modems[0].observe = lambda: observe(service)
    async with asyncio.TaskGroup() as tasks:
        running = [tasks.create_task(service.run(), name="ecall")]
        if store is not None:
            running.append(tasks.create_task(service.reports.drain(store), name="ecall-reports"))
        await asyncio.sleep(0)  # let `run` start: it subscribes to the vehicle state in its first step
        try:
            yield Rig(service=service, modem=modems[0], state=state, clock=clock)
        finally:
            for task in running:
                task.cancel()


class SlowDisk:
    """A store whose write blocks (in a thread, as the outbox's writer does) until `release()`."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.started: list[str] = []
        self.stored: list[str] = []

    async def store(self, record: Record) -> None:
        self.started.append(str(record.body["event"]))
        await asyncio.to_thread(self.released.wait, WITHIN_S)
        self.stored.append(str(record.body["to"]))

    def release(self) -> None:
        self.released.set()


async def test_a_crash_dials_and_sends_the_msd_while_the_disk_is_still_blocked() -> None:
    disk = SlowDisk()
    try:
        async with rig(store=disk.store, observe=lambda service: (len(disk.started), service.reports.pending)) as r:
            r.crash()
            # The dial reached the modem before any report was handed to telematics, let alone written.
            assert await r.modem.wait_for("dial automatic") == (0, 0)
            r.modem.indicate(EcallIndication.CONNECTED)
            r.modem.indicate(EcallIndication.SEND_MSD)
            await r.modem.wait_for("send_msd")
            assert disk.started == ["transition"], "the first report is on the disk, still being written"
            assert disk.stored == [], "and the disk has not finished it: the call went on regardless"
            r.modem.indicate(EcallIndication.AL_ACK)
            await until(lambda: r.service.state is EcallState.VOICE)
            disk.release()
            await until(lambda: not r.service.reports.pending and len(disk.stored) == len(disk.started))
            expected = ["triggered", "dialling", "call_established", "msd_sent", "msd_acknowledged", "voice"]
            assert disk.stored == expected, "every report stored, in the order the call made them"
    finally:
        disk.release()


async def test_a_listener_that_raises_or_blocks_is_told_after_the_dial_and_delays_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told: list[tuple[str, list[str]]] = []

    async with rig(store=None) as r:

        def raises(activity: EcallActivity) -> None:
            raise RuntimeError("a telematics bug")

        def blocks(activity: EcallActivity) -> None:
            told.append(("blocks", r.modem.commands()))
            time.sleep(0.2)  # a provisioning apply with its fsyncs, on the loop

        def records(activity: EcallActivity) -> None:
            told.append(("records", r.modem.commands()))

        for listener in (raises, blocks, records):
            r.service.subscribe(listener)
        r.crash()
        await r.modem.wait_for("dial automatic")
        assert told == [], "listeners are scheduled on the loop, never called inside the engine's step"
        await until(lambda: len(told) == 2)
        assert told == [("blocks", ["dial automatic"]), ("records", ["dial automatic"])]
        assert "eCall activity listener" in caplog.text
        assert "a telematics bug" in caplog.text
        r.modem.indicate(EcallIndication.CONNECTED)
        r.modem.indicate(EcallIndication.SEND_MSD)
        await r.modem.wait_for("send_msd")  # the engine goes on after a listener raised


async def test_a_full_report_queue_drops_the_oldest_reports_never_the_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tcu.ecall.reports")
    reports = EcallReports(capacity=2)
    async with rig(store=None, reports=reports) as r:  # telematics is down: nobody drains the queue
        r.crash()
        await r.modem.wait_for("dial automatic")
        r.modem.indicate(EcallIndication.CONNECTED)
        r.modem.indicate(EcallIndication.SEND_MSD)
        await r.modem.wait_for("send_msd")
        r.modem.indicate(EcallIndication.AL_ACK_CLEAR_DOWN)
        await r.modem.wait_for("hang_up")
        assert r.modem.commands() == ["dial automatic", "send_msd", "hang_up"], "the call ran to its end"
        await until(lambda: r.service.state is EcallState.CALLBACK_WINDOW and reports.pending == 2)
        # idle→triggered→dialling→call_established→msd_sent→msd_acknowledged→cleared→callback_window
        assert (reports.pending, reports.dropped) == (2, 5)
        assert caplog.text.count("eCall report queue full") == 5
        assert "dropped the oldest, 'transition'" in caplog.text
        kept: list[str] = []

        async def keep(record: Record) -> None:
            kept.append(str(record.body["to"]))

        async with asyncio.TaskGroup() as tasks:  # telematics is back: the newest reports are there
            drain = tasks.create_task(reports.drain(keep))
            await until(lambda: len(kept) == 2)
            drain.cancel()
        assert kept == ["cleared", "callback_window"]


async def test_the_radio_is_held_from_the_trigger_until_the_al_ack() -> None:
    async with rig(store=None, observe=lambda service: service.radio_free.is_set()) as r:
        assert r.service.radio_free.is_set(), "no call: telematics may use the radio"
        r.crash()
        assert await r.modem.wait_for("dial automatic") is False, "held before the dial reaches the modem"
        r.modem.indicate(EcallIndication.CONNECTED)
        r.modem.indicate(EcallIndication.SEND_MSD)
        assert await r.modem.wait_for("send_msd") is False
        released = asyncio.create_task(r.service.radio_free.wait())
        r.modem.indicate(EcallIndication.AL_ACK)
        async with asyncio.timeout(WITHIN_S):
            await released  # woken by the AL-ACK itself: nobody polls
        assert r.service.state is EcallState.VOICE


def test_the_report_queue_refuses_to_be_built_without_room() -> None:
    with pytest.raises(ValueError, match="at least one report"):
        EcallReports(capacity=0)
