"""The one serial shell (tcu.sources.serial_port) under every device link: ELM327, modem, SLCAN/NMEA streams.

Each link opens through `open_transport` (exclusive, DeviceGoneError naming the device and port) and
closes through `close_transport` (no flush, bounded, never a second close of a port that vanished).
Real ptys: the shell is I/O, and the point is what pyserial does with them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcu.errors import DeviceGoneError
from tcu.sources.elm327_link import SerialPromptLink
from tcu.sources.modem_client import SerialModemLink
from tcu.sources.serial_port import close_port, open_serial
from tcu.sources.slcan import Ok, Open
from tcu.sources.slcan_reader import SlcanChannel


@dataclass
class Pty:
    master: int
    slave: int
    path: str

    def vanish(self) -> None:
        """The device end hangs up, as a pulled USB adapter does: the client's reads fail with EIO."""
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = -1


@pytest.fixture
def pty() -> Iterator[Pty]:
    master, slave = os.openpty()
    port = Pty(master, slave, os.ttyname(slave))
    yield port
    for fd in (port.master, port.slave):
        if fd >= 0:
            os.close(fd)


Closer = Callable[[], Awaitable[None]]


async def open_elm(path: str) -> Closer:
    return (await SerialPromptLink.open(path, 38400)).aclose


async def open_modem(path: str) -> Closer:
    return (await SerialModemLink.open(path, 115200, lambda _: None, lambda _: None)).aclose


async def open_stream(path: str) -> Closer:
    _, writer = await open_serial(path, 9600, device="GNSS")

    async def close() -> None:
        await close_port(writer)

    return close


OPENERS: dict[str, tuple[Callable[[str], Awaitable[Closer]], str]] = {
    "elm327": (open_elm, "ELM327"),
    "modem": (open_modem, "modem"),
    "stream": (open_stream, "GNSS"),
}


@pytest.fixture(params=sorted(OPENERS))
def opener(request: pytest.FixtureRequest) -> tuple[Callable[[str], Awaitable[Closer]], str]:
    return OPENERS[request.param]


@pytest.fixture
async def no_stray_errors(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Nothing logged at ERROR, no task left failing in the background (asyncio logs those at ERROR)."""
    loop = asyncio.get_running_loop()
    failures: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: failures.append(context))
    try:
        with caplog.at_level(logging.DEBUG):
            yield
            for _ in range(5):  # let background closes finish and be collected
                await asyncio.sleep(0.01)
            gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert failures == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_missing_port_is_device_gone_naming_the_device_and_the_port(
    tmp_path: Path, opener: tuple[Callable[[str], Awaitable[Closer]], str]
) -> None:
    open_link, device = opener
    missing = str(tmp_path / "ttyUSB7")
    with pytest.raises(DeviceGoneError, match=f"^cannot open {device} port {missing}: "):
        await open_link(missing)


async def test_a_port_is_opened_exclusively(pty: Pty, opener: tuple[Callable[[str], Awaitable[Closer]], str]) -> None:
    """A second reader of the same port (another program, a second task) would steal half the bytes."""
    open_link, device = opener
    close = await open_link(pty.path)
    try:
        with pytest.raises(DeviceGoneError, match=f"cannot open {device} port {pty.path}"):
            await open_link(pty.path)
    finally:
        await close()


async def test_a_closed_port_can_be_opened_again_at_once(
    pty: Pty, opener: tuple[Callable[[str], Awaitable[Closer]], str], no_stray_errors: None
) -> None:
    open_link, _ = opener
    for _ in range(3):
        close = await open_link(pty.path)
        await close()


async def test_closing_a_port_that_vanished_is_quiet_and_prompt(
    pty: Pty, opener: tuple[Callable[[str], Awaitable[Closer]], str], no_stray_errors: None
) -> None:
    """The transport closed itself on EIO; closing it a second time used to fail in a background task."""
    open_link, _ = opener
    close = await open_link(pty.path)
    pty.vanish()
    await asyncio.sleep(0.05)  # the transport's reader sees EIO and closes itself
    loop = asyncio.get_running_loop()
    started = loop.time()
    await close()
    assert loop.time() - started < 0.5


class _PieceWriter:
    """A writer that takes the commands and remembers them (the reply comes through the reader)."""

    def __init__(self) -> None:
        self.written = b""

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written += data


async def test_an_slcan_reply_arriving_in_pieces_is_waited_for() -> None:
    """A read that ends mid-line holds nothing whole: it used to crash the command with IndexError."""
    reader = asyncio.StreamReader()
    writer = _PieceWriter()
    channel = SlcanChannel(reader, writer, name="ttyACM0")  # type: ignore[arg-type]
    reader.feed_data(b"t12")  # the start of a frame, then nothing for a moment
    command = asyncio.create_task(channel.command(Open(), wait_s=2.0))
    await asyncio.sleep(0.01)
    assert not command.done()
    reader.feed_data(b"30\r\r")  # the frame's rest (skipped while waiting), then the OK
    reply = await command
    assert isinstance(reply, Ok)
    assert writer.written == b"O\r"
