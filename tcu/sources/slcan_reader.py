"""The CAN source: an SLCAN adapter on a serial port, decoded through the DBC into `VehicleState`.

    reader = SlcanReader(SlcanConfig(port="/dev/ttyACM0"), state=state, clock=clock)
    tasks.create_task(reader.run(), name="source-can")      # under the app's TaskGroup

`SlcanChannel.open()` is the reusable lifecycle: open the port, `C` (whatever a previous run left
open), `S<n>`, optionally `Z1`, then `O` (or `L` with `listen_only`: the adapter never acknowledges a
frame on the bus); leaving it sends `C` and closes the port. With `passive` nothing is ever sent: for
a stream that does not answer Lawicel commands (a logger or gateway that emits SLCAN lines on its own,
a TCP bridge, another program's adapter shared read-only), the reader only parses the t/T/r/R lines.

`SlcanReader.run()` loops around it with the sources' reconnect loop: when the port vanishes (EIO,
SerialException, EOF), or no frame has come for `stale_after_s` (an adapter that reset itself and
closed its channel, a bus gone to sleep), the CAN signals are marked stale and it reconnects after a
capped, jittered backoff. Garbage on the line is logged with its reason and skipped. What it does
with frames it shares with the python-can reader (`tcu.sources.can_feed`).

The adapter's own `Z1` timestamp is parsed but not used for the signals (it is a 60 s wrapping counter
on the adapter's clock, not wall time): frames are stamped with the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from tcu.backoff import Backoff
from tcu.clock import Clock
from tcu.errors import ConfigError, DeviceGoneError, DeviceTimeoutError, ProtocolError
from tcu.reconnect import Sleep
from tcu.sources.can_feed import CanFeed
from tcu.sources.serial_port import OpenPort, close_port, config_from_table, open_serial
from tcu.sources.slcan import (
    BITRATES,
    CanFrame,
    Close,
    Command,
    Error,
    ListenOnly,
    Open,
    Response,
    SetBitrate,
    SetTimestamps,
    SlcanStream,
    format_command,
)
from tcu.sources.slcan_signals import CanSignalDecoder
from tcu.vehicle.state import VehicleState
from tcu.virtual_time import io_timeout

_LOGGER = logging.getLogger(__name__)
_OPEN_ADAPTER: OpenPort = functools.partial(open_serial, device="SLCAN")
_READ_SIZE = 65536
_CLOSE_ACK_WAIT_S = 0.5  # a closing adapter gets this long to acknowledge `C` (then the port closes anyway)
_SECTION = "sources.can"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlcanConfig:
    """`[sources.can]` of the agent config, when it names a serial port (no `interface`)."""

    port: str  # /dev/ttyACM0, /dev/serial/by-id/..., or a pyserial URL (socket://, rfc2217://)
    bitrate: int = 500_000  # CAN bit rate, one of slcan.BITRATES
    baudrate: int = 115_200  # serial line speed; USB CDC adapters ignore it
    listen_only: bool = False  # `L` never acknowledges on the bus; stock CANable firmware lacks it
    passive: bool = False  # send no command at all: the stream is already open and deaf to Lawicel
    timestamps: bool = False  # `Z1`; stock CANable firmware lacks it
    command_timeout_s: float = 1.0
    stale_after_s: float = 2.0  # the fastest DBC message cycles at 20 ms; 2 s of silence is a dead bus
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=30.0))

    def __post_init__(self) -> None:
        if self.bitrate not in BITRATES:
            raise ConfigError(f"{_SECTION}.bitrate: {self.bitrate} is not one of {BITRATES}")
        if self.command_timeout_s <= 0 or self.stale_after_s <= 0:
            raise ConfigError(f"{_SECTION}: command_timeout_s and stale_after_s must be positive")
        if self.passive and (self.listen_only or self.timestamps):
            # Both are commands (`L`, `Z1`) that a passive reader never sends; accepting them would
            # let a user believe the adapter is kept off the bus when nothing told it so.
            raise ConfigError(
                f"{_SECTION}: passive sends no command, so listen_only (L) and timestamps (Z1) cannot be "
                "set with it; put the adapter into listen-only mode yourself, or drop passive"
            )

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SlcanConfig:
        """Build from the raw `[sources.can]` table; ConfigError names the offending key."""
        return config_from_table(cls, table, section=_SECTION)


class SlcanChannel:
    """An open SLCAN channel; use `SlcanChannel.open()`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, name: str) -> None:
        self._reader = reader
        self._writer = writer
        self._name = name
        self._stream = SlcanStream()
        self._backlog: deque[Response | ProtocolError] = deque()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: SlcanConfig, *, open_port: OpenPort = _OPEN_ADAPTER) -> AsyncIterator[SlcanChannel]:
        reader, writer = await open_port(settings.port, settings.baudrate)
        channel = cls(reader, writer, name=settings.port)
        if settings.passive:
            try:
                _LOGGER.info("%s: passive, reading CAN frames without sending any command", settings.port)
                yield channel
            finally:
                await close_port(writer)
            return
        try:
            wait_s = settings.command_timeout_s
            # A channel left open by a crashed run refuses S; closing an already closed one is a BEL.
            await channel.command(Close(), wait_s=wait_s, may_fail=True)
            await channel.command(SetBitrate(bitrate=settings.bitrate), wait_s=wait_s)
            if settings.timestamps:
                await channel.command(SetTimestamps(enabled=True), wait_s=wait_s)
            if settings.listen_only:
                if isinstance(await channel.command(ListenOnly(), wait_s=wait_s, may_fail=True), Error):
                    raise ProtocolError(
                        f"{settings.port}: the adapter refused 'L' (BEL): its firmware has no listen-only "
                        "mode; upgrade the firmware or turn listen_only off"
                    )
            else:
                await channel.command(Open(), wait_s=wait_s)
            _LOGGER.info("%s: CAN channel open at %d bit/s", settings.port, settings.bitrate)
            yield channel
        finally:
            await channel._close(settings.command_timeout_s)

    async def command(self, command: Command, *, wait_s: float, may_fail: bool = False) -> Response:
        """Send a command and wait for its reply, skipping frames that arrive meanwhile."""
        self._write(format_command(command))
        try:
            async with asyncio.timeout(io_timeout(wait_s)):
                while True:
                    while not self._backlog:  # a read may end mid-line and hold nothing whole yet
                        self._backlog.extend(await self._read())
                    item = self._backlog.popleft()
                    if isinstance(item, ProtocolError):
                        _LOGGER.warning("%s: skipped while waiting for a reply: %s", self._name, item)
                    elif not isinstance(item, CanFrame):
                        break
        except TimeoutError:
            raise DeviceTimeoutError(f"{self._name}: no reply to {_shown(command)} within {wait_s:.2f} s") from None
        if isinstance(item, Error) and not may_fail:
            raise ProtocolError(f"{self._name}: the adapter refused {_shown(command)} (BEL)")
        return item

    async def read_batch(self) -> list[Response | ProtocolError]:
        """Everything that arrived next (frames, replies, garbage as ProtocolError), in order."""
        if self._backlog:
            batch = list(self._backlog)
            self._backlog.clear()
            return batch
        return await self._read()

    async def _read(self) -> list[Response | ProtocolError]:
        try:
            data = await self._reader.read(_READ_SIZE)
        except OSError as exc:  # EIO on a vanished pty, SerialException on a pulled USB adapter
            raise DeviceGoneError(f"{self._name} went away: {exc}") from exc
        if not data:
            raise DeviceGoneError(f"{self._name} went away (end of file)")
        return self._stream.feed(data)

    def _write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise DeviceGoneError(f"{self._name} went away (port closed)")
        self._writer.write(data)

    async def _close(self, wait_s: float) -> None:
        """Best effort `C`, then close; a vanished port must not block or raise here."""
        with contextlib.suppress(DeviceGoneError, DeviceTimeoutError, ProtocolError, OSError):
            await self.command(Close(), wait_s=min(wait_s, _CLOSE_ACK_WAIT_S), may_fail=True)
        await close_port(self._writer)


def _shown(command: Command) -> str:
    return repr(format_command(command).decode("ascii").rstrip("\r"))


class SlcanReader:
    """Feeds `VehicleState` from an SLCAN adapter, reconnecting forever; one task under a TaskGroup."""

    def __init__(
        self,
        settings: SlcanConfig,
        *,
        state: VehicleState,
        clock: Clock,
        decoder: CanSignalDecoder | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        open_port: OpenPort = _OPEN_ADAPTER,
    ) -> None:
        self._settings = settings
        self._open_port = open_port
        self._feed = CanFeed(
            name=settings.port,
            state=state,
            clock=clock,
            decoder=decoder,
            backoff=settings.backoff,
            rng=rng,
            sleep=sleep,
        )
        self.stats = self._feed.stats
        self.connected = self._feed.connected  # set while a channel is open (tests, health reports)

    async def run(self) -> NoReturn:
        await self._feed.reconnect.run(self._session)

    async def _session(self) -> None:
        settings = self._settings
        async with SlcanChannel.open(settings, open_port=self._open_port) as channel:
            await self._feed.serve(channel.read_batch, self.handle, settings.stale_after_s)

    def handle(self, batch: list[Response | ProtocolError]) -> int:
        """Decode one batch into the state; returns the number of frames it held."""
        frames = [item for item in batch if isinstance(item, CanFrame)]
        if len(frames) < len(batch):
            self._report_others(batch)
        return self._feed.decode(frames)

    def _report_others(self, batch: list[Response | ProtocolError]) -> None:
        port = self._settings.port
        for item in batch:
            if isinstance(item, ProtocolError):
                self.stats.errors += 1
                _LOGGER.warning("%s: skipped: %s", port, item)
            elif isinstance(item, Error):
                self._feed.frame_warnings.warning(
                    "bel", "%s: the adapter reported an error (BEL), e.g. a receive overrun", port
                )
