"""The ELM327's I/O edge: bytes out, prompt-terminated replies in, over a serial port.

`PromptLink` is the small protocol the session talks to; `SerialPromptLink` implements it with the
sources' one serial shell (`tcu.sources.serial_port`) on a device path or pyserial URL (`/dev/ttyUSB0`,
`socket://host:35000`, `rfc2217://...`). An in-memory twin driving the simulator lives in
`hil.devices.elm327_sim`.

Bytes are cut into replies as they arrive (in `data_received`), so the session can drop whatever
came unasked (garbage, a late reply, a reset banner) before it sends, and the poll scheduler can
notice an unplugged port while it idles between requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from tcu.errors import DeviceGoneError
from tcu.sources.elm327 import PromptFramer
from tcu.sources.serial_port import close_transport, open_transport

_LOGGER = logging.getLogger(__name__)


class PromptLink(Protocol):
    """A conversation with a prompt-driven adapter."""

    def send(self, data: bytes) -> None:
        """Queue bytes for the adapter; raises `DeviceGoneError` once the port is gone."""
        ...

    async def reply(self) -> bytes:
        """The next reply up to (without) `>`; `DeviceGoneError` if the port goes first.

        Waits as long as it takes: callers bound it with `asyncio.timeout`.
        """
        ...

    def discard(self) -> bytes:
        """Drop and return everything received but not yet taken (whole replies and a partial one)."""
        ...

    async def wait_lost(self) -> None:
        """Return once the port is gone (never, while it works)."""
        ...

    async def aclose(self) -> None: ...


class _PromptProtocol(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.framer = PromptFramer()
        self.replies: deque[bytes] = deque()
        self.arrived = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost_reason = ""

    def data_received(self, data: bytes) -> None:
        self.replies.extend(self.framer.feed(data))
        if self.replies:
            self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_reason = f"{type(exc).__name__}: {exc}" if exc else "port closed"
        self.lost.set()
        self.arrived.set()


class SerialPromptLink:
    """`PromptLink` over a serial port."""

    def __init__(self, transport: asyncio.Transport, protocol: _PromptProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def open(cls, url: str, baudrate: int) -> SerialPromptLink:
        """Open `url` (a device path or pyserial URL); `DeviceGoneError` when it is not there."""
        protocol = _PromptProtocol(url)
        return cls(await open_transport(url, baudrate, protocol, device="ELM327"), protocol)

    def _check(self) -> None:
        if self._protocol.lost.is_set():
            raise DeviceGoneError(f"{self._protocol.name} went away ({self._protocol.lost_reason})")

    def send(self, data: bytes) -> None:
        self._check()
        self._transport.write(data)

    async def reply(self) -> bytes:
        protocol = self._protocol
        while not protocol.replies:
            self._check()
            protocol.arrived.clear()
            await protocol.arrived.wait()
        return protocol.replies.popleft()

    def discard(self) -> bytes:
        protocol = self._protocol
        dropped = b">".join(protocol.replies)
        if protocol.replies:
            dropped += b">"
        protocol.replies.clear()
        return dropped + protocol.framer.take_partial()

    async def wait_lost(self) -> None:
        await self._protocol.lost.wait()

    async def aclose(self) -> None:
        await close_transport(self._transport, self._protocol.lost.wait())
        _LOGGER.debug("%s closed", self._protocol.name)
