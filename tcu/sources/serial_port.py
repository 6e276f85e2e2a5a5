"""What every serial source shares: the one shell that opens a port (device path or pyserial URL) and
closes it so it can be reopened at once, counters, and settings read from a `[sources.*]` config table.

Every device (ELM327, SLCAN, NMEA, modem) opens its port through `open_transport` — pyserial-asyncio-fast,
`exclusive`, so a second program (or a second task of ours) cannot read the same port, with a failure
raised as `DeviceGoneError` naming the device and the port — and closes it through `close_transport`.
`open_serial` is the stream-shaped variant for the readers that only read lines or frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import serial_asyncio_fast

from tcu.backoff import Backoff
from tcu.errors import ConfigError, DeviceGoneError
from tcu.virtual_time import io_timeout

# The one bound on closing a port, for every device. A healthy close takes one turn of the loop plus
# pyserial's close() in a thread; only a driver stuck in that close ever waits this long, and then the
# session ends anyway (the next open is refused until the driver lets go, and the backoff retries).
CLOSE_WAIT_S = 1.0

_ConfigT = TypeVar("_ConfigT")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
OpenPort = Callable[[str, int], Awaitable[Streams]]  # url, baud rate: the readers' seam for tests


async def open_transport(url: str, baudrate: int, protocol: asyncio.Protocol, *, device: str) -> asyncio.Transport:
    """Open a device path or pyserial URL, exclusively, for `protocol`; `DeviceGoneError` when it is not there."""
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            loop, lambda: protocol, url, baudrate=baudrate, exclusive=True
        )
    except (OSError, ValueError) as exc:  # SerialException is an OSError; a malformed URL a ValueError
        raise DeviceGoneError(f"cannot open {device} port {url}: {exc}") from exc
    return transport


async def close_transport(transport: asyncio.WriteTransport, closed: Awaitable[object]) -> None:
    """Close without flushing and wait (bounded) until the port is closed, so it can be opened again at once.

    No flush: a vanished pty or a stuck adapter would block it. A port that vanished is closing already:
    aborting it again would run the library's close a second time, which fails in a background task and
    logs a traceback for an ordinary unplug. `closed` is what the protocol resolves in `connection_lost`.
    """
    if not transport.is_closing():
        transport.abort()
    with contextlib.suppress(OSError, TimeoutError):  # a stream's wait_closed raises the loss's own error
        async with asyncio.timeout(io_timeout(CLOSE_WAIT_S)):
            await closed


async def open_serial(url: str, baudrate: int, *, device: str) -> Streams:
    """`open_transport` for a reader that wants streams (SLCAN, NMEA)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = await open_transport(url, baudrate, protocol, device=device)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def close_port(writer: asyncio.StreamWriter) -> None:
    """`close_transport` for a port opened with `open_serial`."""
    await close_transport(writer.transport, writer.wait_closed())


def config_from_table(cls: type[_ConfigT], table: Mapping[str, Any], *, section: str) -> _ConfigT:
    """A serial source's settings from its raw config table: the dataclass fields but `backoff`,
    which `reconnect_base_s` / `reconnect_cap_s` describe (as in `[uplink]`)."""
    values: dict[str, Any] = dict(table)
    base_s, cap_s = values.pop("reconnect_base_s", 0.5), values.pop("reconnect_cap_s", 30.0)
    unknown = set(values) - ({f.name for f in dataclasses.fields(cls)} - {"backoff"})  # type: ignore[arg-type]
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(values.get("port"), str):
        raise ConfigError(f"{section}.port: missing; expected a device path or pyserial URL")
    try:
        values["backoff"] = Backoff(base_s=float(base_s), cap_s=float(cap_s))
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a wrong type, or the backoff's own check
        raise ConfigError(f"{section}: {exc}") from exc


@dataclass(slots=True)
class SourceStats:
    """Counters for logs, tests and benchmarks."""

    messages: int = 0  # frames or sentences
    signals: int = 0
    errors: int = 0
    sessions: int = 0
