"""The test's end of a virtual serial device: its pty opened as streams, closed however the device went."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import serial
import serial_asyncio_fast

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def opened(path: str, *, baudrate: int = 115200) -> AsyncIterator[Streams]:
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=path, baudrate=baudrate)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(serial.SerialException):  # the device may have unplugged the pty first
            await writer.wait_closed()
