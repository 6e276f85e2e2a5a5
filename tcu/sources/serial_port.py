"""What every serial source shares: opening a port (device path or pyserial URL), closing it so it
can be reopened at once, counters, and settings read from a `[sources.*]` config table."""

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

_CLOSE_WAIT_S = 0.5

_SettingsT = TypeVar("_SettingsT")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
OpenPort = Callable[[str, int], Awaitable[Streams]]


async def open_serial(url: str, baudrate: int) -> Streams:
    """Open a device path or pyserial URL; `DeviceGoneError` when it is not there."""
    try:
        return await serial_asyncio_fast.open_serial_connection(url=url, baudrate=baudrate, exclusive=True)
    except (OSError, ValueError) as exc:  # SerialException is an OSError
        raise DeviceGoneError(f"cannot open {url}: {exc}") from exc


async def close_port(writer: asyncio.StreamWriter) -> None:
    """Close and wait (bounded) until closed, so that the port can be opened again at once."""
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(io_timeout(_CLOSE_WAIT_S)):
            await writer.wait_closed()


def settings_from_table(cls: type[_SettingsT], table: Mapping[str, Any], *, section: str) -> _SettingsT:
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
