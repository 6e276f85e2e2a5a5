"""A crash right after a call cleared down: the cleared call's NO CARRIER must not fail the new dial.

The real modem client and eCall service, a scripted modem on the other end of the line and a manual
clock: each test fixes the exact order in which the client reads the modem's lines. The bench found it
(`bench/bench_ecall.py`): the PSAP clears call 1 down (`+CECALLIND: 6`), a second crash dials, and call
1's `NO CARRIER`, written by the modem as it released call 1, is read after the trigger — it used to
become the new dial's failure and put the emergency call off by the 30 s redial spacing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from tcu.clock import ManualClock
from tcu.ecall.config import EcallConfig
from tcu.ecall.service import EcallService
from tcu.ecall.state_machine import EcallState
from tcu.ecall.triggers import CRASH_DETECTED
from tcu.sources.modem_client import ModemClient, ModemClientConfig, ModemEvent
from tcu.vehicle.state import Signal, VehicleState
from telematics_wire.records import Record
from tests.conftest import VIN
from tests.sources.scripted_modem import ScriptedModem, loop_until

DIAL = "AT+CECALL=3"  # the "simcom" profile's automatic eCall
CONNECTED, SEND_MSD, LL_ACK, AL_ACK, CLEARED_DOWN = (f"+CECALLIND: {code}" for code in (1, 2, 3, 4, 6))


@dataclass
class Car:
    service: EcallService
    client: ModemClient
    modem: ScriptedModem
    state: VehicleState
    clock: ManualClock
    records: list[Record] = field(default_factory=list)

    def crash(self) -> None:
        for value in (False, True):
            self.state.update(Signal(path=CRASH_DETECTED, value=value, timestamp=self.clock.now(), source="can"))

    async def moves(self, until: tuple[int, str, str]) -> list[tuple[int, str, str]]:
        """(session, from, to) of every transition reported, once `until` is (a step reports after its commands)."""

        def moves() -> list[tuple[int, str, str]]:
            bodies = [record.body for record in self.records if record.body["event"] == "transition"]
            return [(body["session"], body["from"], body["to"]) for body in bodies]

        await loop_until(lambda: until in moves(), f"the report of {until}")
        return moves()

    async def reach(self, state: EcallState) -> None:
        await loop_until(lambda: self.service.state is state, f"eCall state {state.value}")

    async def first_call_cleared_down(self) -> None:
        """Call 1 from crash to the PSAP's clear-down; the modem has not yet written call 1's NO CARRIER."""
        self.crash()
        await loop_until(lambda: self.modem.count(DIAL) == 1, "the first dial")
        self.modem.urc(CONNECTED, SEND_MSD)
        await loop_until(lambda: any(command.startswith("AT+CMSD=") for command in self.modem.sent), "the MSD")
        self.modem.urc(LL_ACK, AL_ACK)
        await self.reach(EcallState.VOICE)
        self.clock.advance(60.0)  # a minute of voice: past the re-trigger suppression
        self.modem.urc(CLEARED_DOWN)
        await self.reach(EcallState.CALLBACK_WINDOW)


@contextlib.asynccontextmanager
async def car() -> AsyncIterator[Car]:
    clock, state, modem = ManualClock(), VehicleState(), ScriptedModem()
    clients: list[ModemClient] = []

    def client(on_event: Callable[[ModemEvent], None]) -> ModemClient:
        clients.append(ModemClient(ModemClientConfig(port="scripted"), on_event=on_event, opener=modem.open))
        return clients[0]

    service = EcallService(
        EcallConfig(port="scripted", legal_ecall=True), vin=VIN, state=state, clock=clock, modem=client
    )
    records: list[Record] = []

    async def keep(record: Record) -> None:
        records.append(record)

    async with asyncio.TaskGroup() as tasks:
        running = [tasks.create_task(service.run(), name="ecall"), tasks.create_task(service.reports.drain(keep))]
        try:
            await loop_until(lambda: clients[0].ready, "the modem initialised")
            yield Car(service=service, client=clients[0], modem=modem, state=state, clock=clock, records=records)
        finally:
            for task in running:
                task.cancel()


@pytest.mark.parametrize("arrives", ["crossing the dial", "queued behind the trigger"])
async def test_the_cleared_calls_no_carrier_does_not_fail_the_next_crashs_dial(arrives: str) -> None:
    async with car() as c:
        await c.first_call_cleared_down()
        if arrives == "crossing the dial":
            # The modem releases call 1 as the new dial reaches it: NO CARRIER, then the dial's OK.
            c.modem.crossing[DIAL] = ["NO CARRIER"]
            c.crash()
        else:
            # Read before the dial went out, but the engine takes it after the trigger it queued behind.
            c.crash()
            c.modem.urc("NO CARRIER")
        await loop_until(lambda: c.client.calls == 2, "the modem accepted the second crash's dial (OK)")
        c.modem.urc(CONNECTED, SEND_MSD)
        await loop_until(lambda: sum(command.startswith("AT+CMSD=") for command in c.modem.sent) == 2, "MSD 2")
        c.modem.urc(LL_ACK, AL_ACK)
        second = await c.moves(until=(2, "msd_acknowledged", "voice"))
        assert [(before, after) for session, before, after in second if session == 2] == [
            ("callback_window", "triggered"),
            ("triggered", "dialling"),
            ("dialling", "call_established"),
            ("call_established", "msd_sent"),
            ("msd_sent", "msd_acknowledged"),
            ("msd_acknowledged", "voice"),
        ], "no dialling → triggered: the stale NO CARRIER was never the new dial's failure"
        assert c.modem.count(DIAL) == 2, "dialled once for the second crash, and no clock moved"


async def test_a_genuine_no_carrier_for_the_new_dial_still_redials_after_the_spacing() -> None:
    async with car() as c:
        await c.first_call_cleared_down()
        c.modem.urc("NO CARRIER")  # call 1's end, read before the next crash: nothing to confuse
        c.crash()
        await loop_until(lambda: c.client.calls == 2, "the modem accepted the second crash's dial (OK)")
        c.modem.urc("NO CARRIER")  # after the dial's OK: this call failed to connect
        await c.reach(EcallState.TRIGGERED)
        await c.moves(until=(2, "dialling", "triggered"))
        redial = [record.body for record in c.records if record.body.get("to") == "triggered"][-1]
        assert redial["reason"] == "NO CARRIER"
        assert redial["redial_in_s"] == 30.0
        c.clock.advance(29.9)
        c.service.wake()
        await loop_until(lambda: c.service.state is EcallState.TRIGGERED and not c.service.reports.pending, "the wake")
        assert c.modem.count(DIAL) == 2, "no redial before the spacing"
        c.clock.advance(0.1)
        c.service.wake()
        await loop_until(lambda: c.modem.count(DIAL) == 3, "the redial 30 s later")
        c.modem.urc(CONNECTED)
        await c.reach(EcallState.CALL_ESTABLISHED)


async def test_the_callbacks_own_end_is_not_taken_for_a_stale_one() -> None:
    async with car() as c:
        await c.first_call_cleared_down()
        c.modem.urc("NO CARRIER")
        c.modem.urc("RING")  # the PSAP calls back; the modem's answer (OK to ATA) makes it the latest call
        await loop_until(lambda: c.client.calls == 2, "the callback answered")
        await c.reach(EcallState.VOICE)
        c.modem.urc("NO CARRIER")
        ended = "NO CARRIER; callback call ended"
        await loop_until(lambda: any(record.body.get("reason") == ended for record in c.records), "the callback's end")
        assert c.service.state is EcallState.CALLBACK_WINDOW
