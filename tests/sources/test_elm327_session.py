"""Elm327Session against scripted adapters: golden init conversations and the recovery rules."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tomllib
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from tcu.errors import AdapterStatusError, DeviceGoneError, DeviceTimeoutError, ProtocolError
from tcu.sources.elm327 import PromptFramer
from tcu.sources.elm327_frames import HeaderFormat
from tcu.sources.elm327_session import Elm327Session, Elm327SessionConfig

DATA = Path(__file__).parents[1] / "data" / "elm327"
FAST = Elm327SessionConfig(command_timeout_s=0.05, reset_timeout_s=0.05, search_timeout_s=0.05)


class ScriptedLink:
    """A PromptLink that checks each command against a script and plays the scripted reply.

    A reply of None means the adapter stays silent; `unsolicited` bytes arrive before a command.
    """

    def __init__(self, script: list[tuple[str, bytes | None]]) -> None:
        self.script = deque(script)
        self.sent: list[bytes] = []
        self._framer = PromptFramer()
        self._replies: deque[bytes] = deque()
        self._arrived = asyncio.Event()
        self._lost = asyncio.Event()

    def arrive(self, data: bytes) -> None:
        self._replies.extend(self._framer.feed(data))
        self._arrived.set()

    def send(self, data: bytes) -> None:
        if self._lost.is_set():
            raise DeviceGoneError("scripted link lost")
        self.sent.append(data)
        expected, reply = self.script.popleft()
        assert data == expected.encode() + b"\r", f"sent {data!r}, script expected {expected!r}"
        if reply is not None:
            self.arrive(reply)

    async def reply(self) -> bytes:
        while not self._replies:
            if self._lost.is_set():
                raise DeviceGoneError("scripted link lost")
            self._arrived.clear()
            await self._arrived.wait()
        return self._replies.popleft()

    def discard(self) -> bytes:
        dropped = b"".join(r + b">" for r in self._replies) + self._framer.take_partial()
        self._replies.clear()
        return dropped

    async def wait_lost(self) -> None:
        await self._lost.wait()

    async def aclose(self) -> None:
        self._lost.set()
        self._arrived.set()


def _sessions() -> list[Any]:
    doc = tomllib.loads((DATA / "sessions.toml").read_text("utf-8"))
    return [pytest.param(s, id=s["name"]) for s in doc["session"]]


@pytest.mark.parametrize("golden", _sessions())
async def test_golden_initialisation(golden: dict[str, Any]) -> None:
    script = [
        (x["send"], bytes.fromhex(x["reply_hex"]) if "reply_hex" in x else x["reply"].encode("latin-1"))
        for x in golden["exchange"]
    ]
    link = ScriptedLink(script)
    session = Elm327Session(link, dataclasses.replace(FAST, **golden["settings"]))
    expect = golden["expect"]
    if "raises" in expect:
        with pytest.raises(AdapterStatusError) as failure:
            await session.initialise()
        assert failure.value.status == expect["raises"]
        assert not link.script, "the session stopped before the end of the transcript"
        return
    info = await session.initialise()
    assert not link.script, f"the session never sent {[c for c, _ in link.script]}"
    assert info.version == (expect["version"] or None)
    assert info.protocol.protocol == expect["protocol"]
    assert info.protocol.auto == expect["auto"]
    assert info.header_format is HeaderFormat(expect["header_format"])
    assert list(info.ecus) == expect["ecus"]
    assert info.supported_pids == frozenset(expect["supported"])
    assert not session.needs_reinit


INIT = [
    ("ATZ", b"ATZ\r\r\rELM327 v1.5\r\r>"),
    ("ATE0", b"ATE0\rOK\r\r>"),
    ("ATL0", b"OK\r\r>"),
    ("ATS0", b"OK\r\r>"),
    ("ATH1", b"OK\r\r>"),
    ("ATSP0", b"OK\r\r>"),
    ("0100", b"SEARCHING...\r7E8064100BE3FA812\r7E906410098188000\r\r>"),
    ("ATDPN", b"A6\r\r>"),
]


async def _ready(extra: list[tuple[str, bytes | None]]) -> tuple[Elm327Session, ScriptedLink]:
    link = ScriptedLink([*INIT, *extra])
    session = Elm327Session(link, FAST)
    await session.initialise()
    return session, link


async def test_read_pid_prefers_the_engine_ecu() -> None:
    session, _ = await _ready([("010D", b"7E9 03 41 0D 33\r7E8 03 41 0D 32\r\r>")])
    reading = await session.read_pid(0x0D)
    assert (reading.value, reading.ecu) == (50.0, "7E8")


async def test_read_pid_falls_back_to_an_ecu_that_answers_properly() -> None:
    session, _ = await _ready([("010D", b"7E8 03 7F 01 31\r7E9 03 41 0D 33\r\r>")])
    reading = await session.read_pid(0x0D)
    assert (reading.value, reading.ecu) == (51.0, "7E9")


async def test_read_pid_explains_why_nothing_was_usable() -> None:
    session, _ = await _ready([("01A6", b"7EA0661A60000EA5C\r\r>")])
    with pytest.raises(ProtocolError, match=r"no usable answer to 01A6: ECU 7EA: .*service byte 0x61"):
        await session.read_pid(0xA6)


async def test_no_data_is_an_adapter_status() -> None:
    session, _ = await _ready([("012F", b"NO DATA\r\r>")])
    with pytest.raises(AdapterStatusError, match="no ECU answered") as info:
        await session.read_pid(0x2F)
    assert info.value.status == "NO DATA"


async def test_vin_and_dtcs_with_the_emulator_quirk_noted() -> None:
    session, _ = await _ready(
        [
            ("0902", b"7E81014490201574155\r7E8215A5A5A3856304B\r7E82241303030313230\r\r>"),
            ("03", b"7E807430143C1964234\r7E9024300\r\r>"),
        ]
    )
    assert await session.read_vin() == "WAUZZZ8V0KA000120"
    stored = await session.read_dtcs()
    assert stored.codes == ("P0143", "U0196", "C0234")
    assert len(stored.notes) == 1
    assert "ECU 7E8 answered mode 03 without the DTC count byte" in stored.notes[0]


async def test_unsolicited_bytes_are_dropped_before_sending(caplog: pytest.LogCaptureFixture) -> None:
    session, link = await _ready([("010D", b"7E8 03 41 0D 32\r\r>")])
    link.arrive(b"\xfc\xfe late 7E8 03 41 0D 99\r\r>junk")
    with caplog.at_level(logging.INFO):
        reading = await session.read_pid(0x0D)
    assert reading.value == 50.0
    assert "dropped" in caplog.text
    assert not session.needs_reinit


async def test_a_reset_banner_asks_for_reinitialisation(caplog: pytest.LogCaptureFixture) -> None:
    session, link = await _ready([("010D", b"010D\r41 0D 32\r\r>")])
    link.arrive(b"\r\rELM327 v1.5\r\r>")
    with caplog.at_level(logging.WARNING), pytest.raises(ProtocolError, match="odd number of hex digits"):
        await session.read_pid(0x0D)  # settings lost: headers off now, echo on
    assert session.needs_reinit
    assert "reset itself" in caplog.text


async def test_an_echo_after_ate0_means_the_adapter_reset() -> None:
    session, _ = await _ready([("010D", b"010D\r7E8 03 41 0D 32\r\r>")])
    assert (await session.read_pid(0x0D)).value == 50.0
    assert session.needs_reinit


async def test_timeout_resyncs_with_a_lone_cr_then_goes_on() -> None:
    session, link = await _ready(
        [
            ("010C", b"7E8 04 41 0C 1A"),  # cut: no prompt ever comes
            ("", b"7E8 04 41 0C 1A F8\r\r>"),  # the CR repeats the command; its answer is dropped
            ("010D", b"7E8 03 41 0D 32\r\r>"),
        ]
    )
    with pytest.raises(DeviceTimeoutError, match=r"no '>' prompt within 0.05 s after '010C'.*41 0C 1A"):
        await session.read_pid(0x0C)
    assert (await session.read_pid(0x0D)).value == 50.0
    assert link.sent[-2:] == [b"\r", b"010D\r"]


async def test_a_silent_adapter_times_out_during_init() -> None:
    link = ScriptedLink([("ATZ", None)])
    with pytest.raises(DeviceTimeoutError, match="after 'ATZ'"):
        await Elm327Session(link, FAST).initialise()
    assert link.sent == [b"ATZ\r"]  # no resync during initialisation


async def test_commands_from_two_tasks_never_interleave() -> None:
    session, link = await _ready([("010C", None), ("010D", None)])

    async def answer_later() -> None:
        await asyncio.sleep(0)
        assert link.sent[-1] == b"010C\r"  # 010D waits for 010C's prompt
        link.arrive(b"7E8 04 41 0C 1A F8\r\r>")
        await asyncio.sleep(0.01)
        link.arrive(b"7E8 03 41 0D 32\r\r>")

    results = await asyncio.gather(session.read_pid(0x0C), session.read_pid(0x0D), answer_later())
    assert [r.value for r in results[:2]] == [1726.0, 50.0]


async def test_ok_expected_from_settings() -> None:
    link = ScriptedLink([("ATZ", b"ELM327 v1.5\r\r>"), ("ATE0", b"NO\r\r>")])
    with pytest.raises(ProtocolError, match=r"adapter answered 'ATE0' with \('NO',\), expected OK"):
        await Elm327Session(link, FAST).initialise()


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="command_timeout_s must be positive"):
        Elm327SessionConfig(command_timeout_s=0)
    with pytest.raises(ValueError, match="protocol 'Z'"):
        Elm327SessionConfig(protocol="Z")
