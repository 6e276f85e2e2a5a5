"""Virtual serial devices on pseudo-terminals, with fault injection.

A `PtyDevice` serves one side of a pty pair; the system under test opens `device.path` like any
serial port. Subclasses implement `session(port)`: read with `await port.read()`, answer with
`await port.write(...)`, until the port is unplugged. A sketch:

    class Echo(PtyDevice):
        async def session(self, port: PtyPort) -> None:
            while True:
                await port.write(await port.read())

    async with Echo(name="echo", link_path=tmp / "ttyECHO") as device:   # or run device.serve()
        ...open device.path with pyserial...

Faults, all callable while the device runs:

- `inject(data)` / `inject_garbage(n)` — bytes nobody asked for, now;
- `prefix_next_write(data)`, `truncate_next_write(keep, tail=...)` — corrupt the next answer
  (`truncate_next_write(0, tail=b"?\r\r>")` replaces it);
- `mute = True` — the device hangs: it reads but writes nothing, until `mute = False`;
- `unplug()` — both pty ends close: the client's next read fails (EIO / SerialException) and the
  stable `link_path` symlink disappears, as `/dev/ttyUSB0` does when a USB adapter is pulled;
- `replug()` / `plug()` — a fresh pty, the symlink pointed at it, `on_plug()` called (power-on state),
  so a client reconnects by the same path.

The device keeps its own descriptor of the slave end open, so clients may close and reopen the port
without the master side seeing EIO; only `unplug()` hangs the line up.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import random
import tty
from pathlib import Path
from types import TracebackType
from typing import ClassVar, NoReturn, Self

_LOGGER = logging.getLogger(__name__)
_WRITE_STALL_S = 1.0  # a client that reads nothing for this long loses the bytes, as on a real UART


class UnpluggedError(Exception):
    """The port was unplugged under a session; ends that session (internal to the serving loop)."""


class _Faults:
    """One-shot corruptions applied by whichever port writes next."""

    def __init__(self) -> None:
        self.prefix = b""
        self.truncate: tuple[int, bytes] | None = None
        self.mute = False

    def apply(self, data: bytes) -> bytes:
        if self.mute:
            return b""
        data, self.prefix = self.prefix + data, b""
        if self.truncate is not None:
            (keep, tail), self.truncate = self.truncate, None
            data = data[:keep] + tail
        return data


class PtyPort:
    """The device's end of one plugged-in pty (a new one after every replug)."""

    def __init__(self, faults: _Faults) -> None:
        self._loop = asyncio.get_running_loop()
        self._faults = faults
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: bytes pass as a UART would carry them
        os.set_blocking(self._master, False)
        self.slave_path = os.ttyname(self._slave)
        self._received = bytearray()
        self._readable = asyncio.Event()
        self._writable: asyncio.Future[None] | None = None
        self.closed = False
        self._loop.add_reader(self._master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # cannot happen while we hold the slave open; do not spin on it
            _LOGGER.warning("pty %s: read failed (%s); closing", self.slave_path, exc)
            self.close()
            return
        self._received += data
        self._readable.set()

    async def read(self) -> bytes:
        """Bytes the client sent since the last read; waits for at least one."""
        while not self._received:
            if self.closed:
                raise UnpluggedError(self.slave_path)
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._received)
        self._received.clear()
        return data

    def pending(self) -> bool:
        """Whether the client has sent bytes not read yet."""
        return bool(self._received)

    async def write(self, data: bytes, *, raw: bool = False) -> None:
        """Send bytes to the client (through the one-shot faults unless `raw`)."""
        view = memoryview(data if raw else self._faults.apply(data))
        while view:
            if self.closed:
                raise UnpluggedError(self.slave_path)
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                if not await self._wait_writable():
                    _LOGGER.debug("pty %s: client not reading; %d byte(s) lost", self.slave_path, len(view))
                    return
            except OSError as exc:
                raise UnpluggedError(self.slave_path) from exc

    async def _wait_writable(self) -> bool:
        self._writable = self._loop.create_future()
        self._loop.add_writer(self._master, self._writable.set_result, None)
        try:
            async with asyncio.timeout(_WRITE_STALL_S):
                await self._writable
        except TimeoutError:
            return False
        finally:
            self._loop.remove_writer(self._master)
            self._writable = None
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._master)
        self._loop.remove_writer(self._master)
        if self._writable is not None and not self._writable.done():
            self._writable.cancel()
        os.close(self._master)
        os.close(self._slave)
        self._readable.set()


class PtyDevice(abc.ABC):
    """A virtual serial device; see the module docstring."""

    garbage_excludes: ClassVar[bytes] = b""  # bytes `inject_garbage` never sends (e.g. a prompt)

    def __init__(
        self, *, name: str, link_path: str | os.PathLike[str] | None = None, rng: random.Random | None = None
    ) -> None:
        self.name = name
        self._link = Path(link_path) if link_path is not None else None
        self._rng = rng or random.Random(0)  # noqa: S311 -- reproducible fault bytes, not secrets
        self._faults = _Faults()
        self._port: PtyPort | None = None
        self._plugged = asyncio.Event()
        self._task: asyncio.Task[NoReturn] | None = None

    @property
    def path(self) -> str:
        """What a client opens: the stable symlink if there is one, else the current pty."""
        if self._link is not None:
            return str(self._link)
        if self._port is None:
            raise RuntimeError(f"{self.name} is unplugged and has no stable link path")
        return self._port.slave_path

    @property
    def plugged(self) -> bool:
        return self._port is not None

    @abc.abstractmethod
    async def session(self, port: PtyPort) -> None:
        """Serve one plugged-in period; `UnpluggedError` from the port ends it."""

    def on_plug(self) -> None:  # noqa: B027 -- optional hook, empty by design
        """Called at every plug-in: reset to power-on state."""

    async def serve(self) -> NoReturn:
        """Serve forever, across unplug/replug; run it under a TaskGroup or use `async with`."""
        while True:
            await self._plugged.wait()
            port = self._port
            if port is None:  # unplugged between the event and now
                await asyncio.sleep(0)
                continue
            try:
                await self.session(port)
                while True:  # the session ended on its own: stay plugged, read and say nothing
                    await port.read()
            except UnpluggedError:
                continue

    async def __aenter__(self) -> Self:
        self.plug()
        self._task = asyncio.create_task(self.serve(), name=f"{self.name}-serve")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.unplug()

    def plug(self) -> None:
        if self._port is not None:
            return
        self._port = PtyPort(self._faults)
        if self._link is not None:
            staging = self._link.with_name(self._link.name + ".new")
            staging.unlink(missing_ok=True)
            staging.symlink_to(self._port.slave_path)
            staging.replace(self._link)  # atomic: a client never sees the path half-made
        self.on_plug()
        self._plugged.set()
        _LOGGER.info("%s plugged in at %s (%s)", self.name, self.path, self._port.slave_path)

    def unplug(self) -> None:
        if self._port is None:
            return
        self._plugged.clear()
        port, self._port = self._port, None
        port.close()
        if self._link is not None:
            self._link.unlink(missing_ok=True)
        _LOGGER.info("%s unplugged (%s)", self.name, port.slave_path)

    def replug(self) -> None:
        self.unplug()
        self.plug()

    async def inject(self, data: bytes) -> None:
        """Send bytes unasked, now, bypassing the one-shot faults."""
        if self._port is None:
            raise RuntimeError(f"{self.name} is unplugged")
        await self._port.write(data, raw=True)

    async def inject_garbage(self, length: int = 16) -> bytes:
        """Send `length` random bytes (never one of `garbage_excludes`); returns them."""
        alphabet = [b for b in range(256) if b not in self.garbage_excludes]
        garbage = bytes(self._rng.choice(alphabet) for _ in range(length))
        await self.inject(garbage)
        return garbage

    @property
    def mute(self) -> bool:
        """While True the device swallows everything it would write (hung firmware)."""
        return self._faults.mute

    @mute.setter
    def mute(self, value: bool) -> None:
        self._faults.mute = value

    def prefix_next_write(self, data: bytes) -> None:
        """Prepend `data` to the next thing the device writes."""
        self._faults.prefix += data

    def truncate_next_write(self, keep: int, *, tail: bytes = b"") -> None:
        """Cut the next write after `keep` bytes and append `tail` (e.g. a prompt, or nothing)."""
        self._faults.truncate = (keep, tail)
