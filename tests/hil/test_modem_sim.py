"""The modem simulator on a real pty, spoken to in raw AT, carrying calls to the PSAP stub (also across processes)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backend_stub.psap import PsapBehaviour, PsapStub, read_psap_msds
from hil.devices.modem_sim import Coverage, ModemSimulator, ModemTiming
from tcu.sources.modem import PROFILES, SimStatus
from tests.backend_stub.psap_caller import MSD
from tests.conftest import VIN
from tests.hil.serial_port import opened

FINALS = ("OK", "ERROR", "+CME ERROR", "NO CARRIER")
URCS = ("+CREG: ", "+CECALLIND: ", "+UUECALLSTAT: ", "RING", "+CLIP: ", "RDY")


class At:
    """A raw AT terminal on the simulator's pty."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.urcs: list[str] = []

    async def line(self, within_s: float = 2.0) -> str:
        while True:
            async with asyncio.timeout(within_s):
                raw = await self.reader.readuntil(b"\r")
            text = raw.decode("ascii").strip()
            if text:
                return text

    async def ask(self, command: str) -> list[str]:
        """Lines up to and including the final result code; URCs on the way are set aside."""
        self.writer.write(command.encode("ascii") + b"\r")
        lines: list[str] = []
        while not (lines and lines[-1].startswith(FINALS)):
            line = await self.line()
            if line.startswith(URCS) and not (line.startswith("+CREG: ") and "," in line):
                self.urcs.append(line)
            else:
                lines.append(line)
        return lines

    async def urc(self, expected: str) -> None:
        """Wait for (and consume) the next `expected` URC."""
        while expected not in self.urcs:
            self.urcs.append(await self.line())
        self.urcs.remove(expected)


@contextlib.asynccontextmanager
async def terminal(path: str) -> AsyncIterator[At]:
    async with opened(path) as (reader, writer):
        at = At(reader, writer)
        assert await at.ask("ATE0") == ["ATE0", "OK"], "echo is on at power-on"
        yield at


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, behaviour: PsapBehaviour | None = None, **modem: object
) -> AsyncIterator[tuple[PsapStub, ModemSimulator, At]]:
    async with PsapStub(behaviour=behaviour, database=tmp_path / "psap.sqlite3") as psap:
        sim = ModemSimulator(psap_address=psap.address, timing=ModemTiming.instant(), **modem)
        async with sim, terminal(sim.path) as at:
            yield psap, sim, at


async def test_error_reporting_follows_cmee(tmp_path: Path) -> None:
    async with rig(tmp_path, sim=SimStatus.NOT_INSERTED) as (_, _, at):
        assert await at.ask("AT+CPIN?") == ["ERROR"]
        await at.ask("AT+CMEE=1")
        assert await at.ask("AT+CPIN?") == ["+CME ERROR: 10"]
        await at.ask("AT+CMEE=2")
        assert await at.ask("AT+CPIN?") == ["+CME ERROR: SIM not inserted"]
        assert await at.ask("AT+NONSENSE") == ["ERROR"]
        assert await at.ask("ATI") == ["TCU-SIM eCall modem", "profile simcom", "OK"]


async def test_coverage_switches_at_run_time(tmp_path: Path) -> None:
    async with rig(tmp_path) as (_, sim, at):
        await at.ask("AT+CMEE=1")
        await at.ask("AT+CREG=1")
        assert await at.ask("AT+CREG?") == ["+CREG: 1,1", "OK"]
        assert await at.ask("AT+CSQ") == ["+CSQ: 20,99", "OK"]
        await sim.set_coverage(Coverage.SEARCHING)
        await at.urc("+CREG: 2")
        assert await at.ask("AT+CSQ") == ["+CSQ: 99,99", "OK"]
        assert await at.ask("AT+CECALL=3") == ["+CME ERROR: 30"]
        await sim.set_coverage(Coverage.NO_SERVICE)
        await at.urc("+CREG: 0")
        await sim.set_coverage(Coverage.REGISTERED)
        await at.urc("+CREG: 1")
        assert await at.ask("AT+COPS=2") == ["OK"], "dormant (eCall-only)"
        await at.urc("+CREG: 0")
        assert await at.ask("AT+COPS?") == ["+COPS: 2", "OK"]
        assert await at.ask("AT+COPS=0") == ["OK"]
        assert await at.ask("AT+COPS?") == ['+COPS: 0,0,"TCU-SIM 112",7', "OK"]


async def test_an_ecall_reaches_the_psap_which_decodes_acknowledges_and_clears_down(tmp_path: Path) -> None:
    async with rig(tmp_path) as (psap, sim, at):
        assert await at.ask("AT+CMSD=" + MSD.hex()) == ["ERROR"], "no call: nothing to send on"
        assert await at.ask("AT+CECALL=3") == ["OK"]
        await at.urc("+CECALLIND: 1")
        await at.urc("+CECALLIND: 2")
        assert await at.ask("AT+CECALL?") == ["+CECALL: 3", "OK"]
        assert await at.ask("AT+CECALL=3") == ["ERROR"], "one eCall at a time"
        assert await at.ask("AT+CMSD=" + MSD.hex().upper()) == ["OK"]
        received = await psap.wait_for_msd()
        assert received.msd is not None
        assert received.msd.vin == VIN
        assert received.msd.latitude_deg == pytest.approx(48.1)
        await at.urc("+CECALLIND: 3")
        await at.urc("+CECALLIND: 4")
        call = psap.call()
        assert (call.kind, call.callback) == ("automatic", sim.callback_address)
        await psap.clear_down()
        await at.urc("+CECALLIND: 6")
        await at.urc("NO CARRIER")
        assert not sim.in_call
        assert [e for _, e in call.timeline] == [
            "call",
            "connected",
            "send-msd",
            "msd",
            "ll-ack",
            "al-ack positive",
            "cleardown",
            "ended by psap",
        ]
        await psap.archived()  # the PSAP acknowledges first and writes its row on its archive thread after
        rows = read_psap_msds(tmp_path / "psap.sqlite3")
        assert [(r["vin"], r["message_identifier"], r["position_trusted"]) for r in rows] == [(VIN, 1, 1)]
        assert psap.rows()[0]["raw_hex"] == MSD.hex()


async def test_the_psap_asks_again_for_an_msd_it_cannot_decode(tmp_path: Path) -> None:
    async with rig(tmp_path) as (psap, _, at):
        await at.ask("AT+CECALL=2")
        await at.urc("+CECALLIND: 2")
        await at.ask("AT+CMSD=00FF")
        await at.urc("+CECALLIND: 3")
        await at.urc("+CECALLIND: 2")
        assert psap.msds[0].error is not None
        assert "+CECALLIND: 4" not in at.urcs, "no AL-ACK for an MSD that does not decode"


async def test_ath_and_network_drops_end_the_call_on_both_sides(tmp_path: Path) -> None:
    async with rig(tmp_path) as (psap, sim, at):
        await at.ask("AT+CECALL=0")
        await at.urc("+CECALLIND: 1")
        assert await at.ask("ATH") == ["OK"]
        await psap.wait_for(lambda: psap.call().ended_by == "ivs", what="HANGUP")
        await at.ask("AT+CECALL=0")
        await at.urc("+CECALLIND: 1")
        await sim.drop_call()
        await at.urc("NO CARRIER")
        await psap.wait_for(lambda: psap.call().ended_by == "network", what="drop")
        assert psap.call().kind == "test"


async def test_a_reset_mid_call_drops_it_and_restores_power_on_settings(tmp_path: Path) -> None:
    async with rig(tmp_path) as (psap, sim, at):
        await at.ask("AT+CECALL=3")
        await at.urc("+CECALLIND: 1")
        await sim.reset()
        await at.urc("RDY")
        await psap.wait_for(lambda: psap.call().ended_by == "network", what="the PSAP sees the drop")
        assert await at.ask("AT") == ["AT", "OK"], "echo is back on"
        assert sim.resets == 1
        assert await at.ask("AT+CFUN=1,1") == ["AT+CFUN=1,1", "OK"]
        await at.urc("RDY")


async def test_the_psap_calls_back_and_the_modem_rings(tmp_path: Path) -> None:
    async with rig(tmp_path) as (psap, sim, at):
        await at.ask("AT+CLIP=1")
        assert await at.ask("ATA") == ["NO CARRIER"], "nothing is ringing"
        await at.ask("AT+CECALL=3")
        await at.urc("+CECALLIND: 1")
        await psap.clear_down()
        await at.urc("NO CARRIER")
        callback = await psap.call_back()
        await at.urc("RING")
        await at.urc('+CLIP: "112",129')
        assert await at.ask("ATA") == ["OK"]
        await psap.wait_for(lambda: callback.at("connected") is not None, what="answered")
        await psap.request_msd()
        await at.urc("+CECALLIND: 2")
        await sim.set_coverage(Coverage.NO_SERVICE)
        await psap.wait_for(lambda: not callback.active, what="lost with coverage")
        refused = await psap.call_back(1)
        await psap.wait_for(lambda: refused.ended_by == "network", what="unreachable without coverage")


@pytest.mark.parametrize("clear", [False, True])
async def test_psap_behaviour_and_the_ublox_dialect(tmp_path: Path, clear: bool) -> None:
    behaviour = PsapBehaviour(clear_down_with_ack=clear)
    async with rig(tmp_path, behaviour, profile=PROFILES["ublox"]) as (psap, _, at):
        await at.ask("AT+CECALL=2")
        await at.urc("+UUECALLSTAT: 2")
        assert await at.ask("AT+UECALLDATA=1," + MSD.hex()) == ["OK"]
        await at.urc("+UUECALLSTAT: 6" if clear else "+UUECALLSTAT: 5")
        assert psap.msds[0].msd is not None


def test_the_112_network_is_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        PsapStub(host="0.0.0.0")


_OTHER_PROCESS = """
import asyncio, sys
from hil.devices.modem_sim import ModemSimulator, ModemTiming
async def main():
    async with ModemSimulator(psap_address=("127.0.0.1", int(sys.argv[1])), timing=ModemTiming.instant()) as sim:
        print(sim.path, flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_the_psap_takes_calls_from_a_modem_in_another_process(tmp_path: Path) -> None:
    async with PsapStub() as psap:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _OTHER_PROCESS, str(psap.address[1]), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            async with asyncio.timeout(20):
                path = (await process.stdout.readline()).decode().strip()
            async with terminal(path) as at:
                await at.ask("AT+CECALL=3")
                await at.urc("+CECALLIND: 2")
                await at.ask("AT+CMSD=" + MSD.hex())
                assert (await psap.wait_for_msd()).msd is not None
        finally:
            process.kill()
            await process.wait()
