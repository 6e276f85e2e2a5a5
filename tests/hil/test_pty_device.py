"""PtyDevice on real ptys: serving, reopening, the stable link, unplug/replug and the write faults."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import serial
import serial_asyncio_fast

from hil.devices.pty_device import PtyDevice, PtyPort
from tests.hil.serial_port import Streams, opened


class Echo(PtyDevice):
    """Answers every line with `<line>` and a newline."""

    def __init__(self, link_path: Path | None = None) -> None:
        super().__init__(name="echo", link_path=link_path)
        self.plugs = 0

    def on_plug(self) -> None:
        self.plugs += 1

    async def session(self, port: PtyPort) -> None:
        buffer = b""
        while True:
            buffer += await port.read()
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                await port.write(b"<" + line + b">\n")


async def ask(streams: Streams, line: bytes, wait_s: float = 2.0) -> bytes:
    reader, writer = streams
    writer.write(line + b"\n")
    async with asyncio.timeout(wait_s):
        return await reader.readuntil(b"\n")


async def test_serves_through_the_stable_link(tmp_path: Path) -> None:
    link = tmp_path / "ttyECHO"
    async with Echo(link) as device:
        assert device.path == str(link)
        assert link.is_symlink()
        assert str(link.readlink()).startswith("/dev/pts/")
        async with opened(device.path) as streams:
            assert await ask(streams, b"hello") == b"<hello>\n"
    assert not link.exists(), "leaving the context unplugs and removes the link"


async def test_a_client_may_close_and_reopen_the_port() -> None:
    async with Echo() as device:
        for word in (b"one", b"two"):
            async with opened(device.path) as streams:
                assert await ask(streams, word) == b"<" + word + b">\n"


async def test_unplug_fails_the_client_and_replug_serves_the_same_path(tmp_path: Path) -> None:
    link = tmp_path / "ttyECHO"
    async with Echo(link) as device:
        async with opened(device.path) as (reader, _):
            device.unplug()
            assert not device.plugged
            assert not link.exists()
            with pytest.raises(serial.SerialException):
                async with asyncio.timeout(2):
                    await reader.read(1)
        with pytest.raises(serial.SerialException):
            await serial_asyncio_fast.open_serial_connection(url=str(link), baudrate=115200)
        device.replug()
        assert device.plugs == 2
        assert str(link.readlink()).startswith("/dev/pts/")  # the number may be reused: the path counts
        async with opened(device.path) as streams:
            assert await ask(streams, b"back") == b"<back>\n"


async def test_write_faults(tmp_path: Path) -> None:
    async with Echo(tmp_path / "tty") as device, opened(device.path) as streams:
        device.prefix_next_write(b"##")
        assert await ask(streams, b"a") == b"##<a>\n"
        device.truncate_next_write(2, tail=b"!\n")
        assert await ask(streams, b"abcdef") == b"<a!\n"
        assert await ask(streams, b"ok") == b"<ok>\n", "faults are one-shot"
        device.mute = True
        with pytest.raises(TimeoutError):
            await ask(streams, b"lost", wait_s=0.2)
        device.mute = False
        assert await ask(streams, b"again") == b"<again>\n"


async def test_garbage_is_sent_unasked_and_avoids_excluded_bytes() -> None:
    class NoNewlineGarbage(Echo):
        garbage_excludes = b"\n"

    async with NoNewlineGarbage() as device, opened(device.path) as (reader, _):
        garbage = await device.inject_garbage(64)
        await device.inject(b"\n")
        assert len(garbage) == 64
        assert b"\n" not in garbage
        async with asyncio.timeout(2):
            assert await reader.readuntil(b"\n") == garbage + b"\n"


async def test_without_a_link_the_path_is_the_current_pty() -> None:
    device = Echo()
    device.plug()
    try:
        assert device.path.startswith("/dev/pts/")
    finally:
        device.unplug()
    with pytest.raises(RuntimeError, match="unplugged"):
        _ = device.path
    with pytest.raises(RuntimeError, match="unplugged"):
        await device.inject(b"x")
