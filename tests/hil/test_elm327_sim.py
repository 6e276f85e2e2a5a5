"""The virtual ELM327: protocol behaviour through its core and over a real pty."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from hil.devices.elm327_sim import DEFAULT_VIN, Elm327MemoryLink, Elm327Simulator, Elm327Timing, isotp_frames
from tcu.sources import obd_pids
from tcu.sources.elm327 import parse_reply
from tcu.sources.elm327_frames import HeaderFormat
from tcu.vehicle.drive_cycle import DriveCycle
from tests.hil.serial_port import Streams, opened

T = 25.0  # cruising: 50 km/h, 2550 rpm
SAMPLE = DriveCycle().at(T)


def make_sim(**kwargs: object) -> Elm327Simulator:
    return Elm327Simulator(elapsed=lambda: T, timing=Elm327Timing.instant(), **kwargs)  # type: ignore[arg-type]


def say(sim: Elm327Simulator, command: str) -> bytes:
    """The whole answer of the core to one command line."""
    return b"".join(chunk for _, chunk in sim.respond(command.encode()))


def configure(sim: Elm327Simulator, *commands: str) -> None:
    for command in commands:
        say(sim, command)


def test_power_up_echo_and_banner() -> None:
    sim = make_sim()
    assert say(sim, "ATZ") == b"ATZ\r\n\r\n\r\nELM327 v1.5\r\n\r\n>"
    assert say(sim, "AT E0") == b"AT E0\r\nOK\r\n\r\n>", "ATE0 still echoes itself"
    assert say(sim, "ATL0") == b"OK\r\r>", "ATL0 takes effect at once"
    assert say(sim, "ati") == b"ELM327 v1.5\r\r>"
    assert say(sim, "ATXYZ") == b"?\r\r>"
    assert say(sim, "AT@1") == b"OBDII to RS232 Interpreter\r\r>"
    assert say(sim, "ATRV") == f"{SAMPLE.battery_v:.1f}V\r\r>".encode()


def test_search_once_after_atsp0_then_protocol_reported() -> None:
    sim = make_sim()
    configure(sim, "ATE0", "ATL0")
    assert say(sim, "ATDPN") == b"A0\r\r>"
    first = say(sim, "010D")
    assert first.startswith(b"SEARCHING...\r")
    assert b"SEARCHING" not in say(sim, "010D")
    assert say(sim, "ATDPN") == b"A6\r\r>"
    assert say(sim, "ATDP") == b"AUTO, ISO 15765-4 (CAN 11/500)\r\r>"
    configure(sim, "ATSP0")
    assert say(sim, "010D").startswith(b"SEARCHING...")
    configure(sim, "ATSP6")
    assert not say(sim, "010D").startswith(b"SEARCHING...")
    assert say(sim, "ATDPN") == b"6\r\r>"


def test_values_come_from_the_drive_cycle_with_and_without_headers() -> None:
    sim = make_sim()
    configure(sim, "ATE0", "ATL0", "ATSP6")
    assert say(sim, "010C") == b"41 0C 27 D8\r\r>"  # 2550 rpm * 4 = 0x27D8
    assert say(sim, "010D") == b"41 0D 32\r41 0D 32\r\r>", "engine and transmission both answer"
    configure(sim, "ATH1", "ATS0")
    assert say(sim, "010D") == b"7E803410D32\r7E903410D32\r\r>"
    for pid, expected in [
        (0x05, SAMPLE.coolant_c),
        (0x2F, SAMPLE.fuel_level_pct),
        (0x42, SAMPLE.battery_v),
        (0x46, SAMPLE.ambient_c),
        (0xA6, SAMPLE.odometer_km),
        (0x31, 120.0 + SAMPLE.odometer_km - DriveCycle().start_odometer_km),
    ]:
        reply = parse_reply(say(sim, f"01{pid:02X}"), command=f"01{pid:02X}", headers=HeaderFormat.CAN_11)
        value = obd_pids.decode_mode01(reply.messages[0].payload, pid)
        assert value == pytest.approx(expected, abs=obd_pids.PIDS[pid].resolution / 2 + 1e-9)


def test_no_data_and_unknown_commands() -> None:
    sim = make_sim()
    configure(sim, "ATE0", "ATL0", "ATSP6")
    assert say(sim, "0104") == b"NO DATA\r\r>"
    assert say(sim, "0C") == b"NO DATA\r\r>"
    assert say(sim, "01G1") == b"?\r\r>"


def test_vin_in_every_layout() -> None:
    sim = make_sim()
    configure(sim, "ATE0", "ATL0", "ATSP6")
    payload = obd_pids.encode_vin(DEFAULT_VIN)
    for settings, headers in [
        ((), HeaderFormat.NONE),
        (("ATS0",), HeaderFormat.NONE),
        (("ATCAF0",), HeaderFormat.NONE),
        (("ATCAF1", "ATH1"), HeaderFormat.CAN_11),
        (("ATS1",), HeaderFormat.CAN_11),
    ]:
        configure(sim, *settings)
        reply = parse_reply(say(sim, "0902"), command="0902", headers=headers)
        assert [m.payload for m in reply.messages] == [payload], settings
    configure(sim, "ATH0", "ATCAF1", "ATS1")
    assert say(sim, "0902").startswith(b"014\r0: 49 02 01 57 41 55\r1: 5A 5A 5A")


def test_supported_pid_ranges_are_chained() -> None:
    sim = make_sim()
    configure(sim, "ATE0", "ATL0", "ATH1", "ATSP6")
    found: set[int] = set()
    for base in obd_pids.SUPPORTED_PID_BASES:
        if base and base not in found:
            break
        reply = parse_reply(say(sim, f"01{base:02X}"), command="", headers=HeaderFormat.CAN_11)
        for message in reply.messages:
            found |= obd_pids.decode_supported(message.payload)
    assert {0x05, 0x0C, 0x0D, 0x2F, 0x31, 0x42, 0x46, 0xA6} <= found
    assert say(sim, "01C0") == b"NO DATA\r\r>"


def test_dtcs_multi_frame_and_clear() -> None:
    sim = make_sim(dtcs=["P0143", "U0196", "C0234"])
    configure(sim, "ATE0", "ATL0", "ATH1", "ATSP6")
    raw = say(sim, "03")
    assert raw.startswith(b"7E8 10 08 43 03 01 43 C1 96\r7E8 21 42 34 00 00 00 00 00\r")
    reply = parse_reply(raw, command="03", headers=HeaderFormat.CAN_11)
    assert obd_pids.decode_dtcs(reply.messages[0].payload).codes == ("P0143", "U0196", "C0234")
    assert say(sim, "04") == b"7E8 01 44\r\r>"
    assert say(sim, "03") == b"7E8 02 43 00\r\r>"
    assert say(sim, "0131") == b"7E8 04 41 31 00 00\r\r>", "distance since clear restarts"


def test_ignition_off_and_unmodelled_protocols() -> None:
    sim = make_sim()
    configure(sim, "ATE0", "ATL0")
    sim.ecu_online = False
    assert say(sim, "0100") == b"SEARCHING...\rUNABLE TO CONNECT\r\r>"
    sim.ecu_online = True
    configure(sim, "0100")
    sim.ecu_online = False
    assert say(sim, "010D") == b"NO DATA\r\r>"
    sim.ecu_online = True
    configure(sim, "ATSP3")
    assert say(sim, "010D") == b"BUS INIT: ...ERROR\r\r>"
    configure(sim, "ATSP8")
    assert say(sim, "010D") == b"CAN ERROR\r\r>"


def test_lone_cr_repeats_the_last_command() -> None:
    sim = make_sim()
    configure(sim, "ATE0", "ATL0", "ATSP6", "010D")
    assert say(sim, "") == say(sim, "010D")
    assert sim.requests[-3:] == ["010D", "010D", "010D"]


def test_isotp_frames() -> None:
    assert isotp_frames(b"\x41\x0d\x32") == [b"\x03\x41\x0d\x32"]
    frames = isotp_frames(bytes(range(20)))
    assert [frame[0] for frame in frames] == [0x10, 0x21, 0x22]
    assert frames[0][1] == 20
    assert all(len(frame) == 8 for frame in frames)


# -- over a pty ----------------------------------------------------------------------------------


def port(path: str) -> contextlib.AbstractAsyncContextManager[Streams]:
    return opened(path, baudrate=38400)  # the ELM327's default


async def command(streams: Streams, text: bytes) -> bytes:
    reader, writer = streams
    writer.write(text + b"\r")
    async with asyncio.timeout(2):
        return await reader.readuntil(b">")


async def test_conversation_over_a_pty(tmp_path: Path) -> None:
    async with make_sim(link_path=str(tmp_path / "elm")) as sim, port(sim.path) as streams:
        assert (await command(streams, b"ATZ")).endswith(b"ELM327 v1.5\r\n\r\n>")
        assert await command(streams, b"ATE0") == b"ATE0\r\nOK\r\n\r\n>"
        assert await command(streams, b"ATL0") == b"OK\r\r>"
        assert (await command(streams, b"0100")).startswith(b"SEARCHING...\r41 00 ")
        assert await command(streams, b"010D") == b"41 0D 32\r41 0D 32\r\r>"


async def test_sending_before_the_prompt_stops_the_adapter() -> None:
    timing = Elm327Timing(reset_s=0.0, search_s=0.0, request_s=0.2)
    async with Elm327Simulator(elapsed=lambda: T, timing=timing) as sim, port(sim.path) as (reader, writer):
        writer.write(b"ATE0\r")
        await reader.readuntil(b">")
        writer.write(b"010D\r")
        await asyncio.sleep(0.05)  # inside the adapter's 0.2 s answer time, on purpose
        writer.write(b"010C\r")
        async with asyncio.timeout(2):
            assert await reader.readuntil(b">") == b"STOPPED\r\n\r\n>"
            assert (await reader.readuntil(b">")).endswith(b"41 0C 27 D8\r\n\r\n>"), "010C is answered"


async def test_reset_fault_prints_the_banner_and_forgets_settings() -> None:
    async with make_sim() as sim, port(sim.path) as (reader, writer):
        writer.write(b"ATE0\r")
        await reader.readuntil(b">")
        await sim.reset()
        async with asyncio.timeout(2):
            assert await reader.readuntil(b">") == b"\r\n\r\nELM327 v1.5\r\n\r\n>"
        assert await command((reader, writer), b"ATI") == b"ATI\r\nELM327 v1.5\r\n\r\n>", "echo is back on"


async def test_memory_link_drives_the_same_core() -> None:
    sim = make_sim()
    link = Elm327MemoryLink(sim)
    link.send(b"ATE0\r")
    assert await link.reply() == b"ATE0\r\nOK\r\n\r\n"
    link.send(b"ATL0\rATSP6\r")
    assert await link.reply() == b"OK\r\r"
    assert link.discard() == b"OK\r\r>"
    await link.aclose()
    with pytest.raises(Exception, match="unplugged"):
        link.send(b"010D\r")
