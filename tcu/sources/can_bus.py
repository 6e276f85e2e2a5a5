"""The CAN source on python-can: any interface python-can drives (SocketCAN, PEAK, Kvaser, Vector,
gs_usb, python-can's own slcan, virtual, ...), decoded through the same DBC and mapping as the SLCAN
reader, so a Pi with a CAN HAT and a bench with a Vector box share one mapping.

    [sources.can]
    interface = "socketcan"        # any python-can interface name; without it: our SLCAN reader on `port`
    channel = "can0"               # PCAN_USBBUS1, 0 (Kvaser/Vector), /dev/ttyACM0 (python-can slcan), ...
    bitrate = 500000               # omitted: the interface's default (SocketCAN: set with `ip link`)
    options = { fd = false }       # passed to can.Bus() as keyword arguments, unchecked by us

    reader = CanBusReader(CanBusConfig(interface="virtual", channel="bench"), state=state, clock=clock)
    tasks.create_task(reader.run(), name="source-can")      # under the app's TaskGroup

python-can's `recv()` blocks, so each session has one worker thread that owns the bus: it opens it
(which may block too: python-can's slcan sleeps two seconds after opening the port), reads batches
(one `recv` with a short timeout, then whatever is already queued), hands them to the event loop and
shuts the bus down when told to stop. At most `max_pending_frames` wait for the loop; beyond that new
batches are dropped, counted and logged, so a flood can never grow memory without bound.

What it does with frames — decoding, counting, staleness, reconnecting — it shares with the SLCAN
reader (`tcu.sources.can_feed`). The session ends, the CAN signals are marked stale and the reader
reconnects after a capped, jittered backoff when the interface fails (a pulled USB adapter,
`ip link set can0 down`: python-can raises), or no frame has come for `stale_after_s`. An interface
that cannot be opened is one log line per attempt, with python-can's reason, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import can

from tcu.backoff import Backoff
from tcu.clock import Clock
from tcu.errors import ConfigError, DeviceGoneError, DeviceTimeoutError
from tcu.reconnect import Sleep
from tcu.sources.can_feed import CanFeed
from tcu.sources.serial_port import SourceStats
from tcu.sources.slcan import CanFrame
from tcu.sources.slcan_signals import CanSignalDecoder
from tcu.vehicle.state import VehicleState
from tcu.virtual_time import io_timeout

_LOGGER = logging.getLogger(__name__)
_SECTION = "sources.can"
_POLL_S = 0.05  # how long one blocking recv() may hold the worker before it looks at the stop flag
_MAX_BATCH = 512  # frames handed over at once: one loop wake-up each, not one per frame
_STOP_WAIT_S = 2.0  # a worker stuck in a driver call is left behind (daemon) after this long
_SERIAL_ONLY_KEYS = frozenset({"port", "baudrate", "listen_only", "passive", "timestamps", "command_timeout_s"})

OpenBus = Callable[["CanBusConfig"], can.BusABC]


@dataclass(frozen=True, slots=True, kw_only=True)
class CanBusConfig:
    """`[sources.can]` of the agent config, when it names a python-can `interface`."""

    interface: str
    channel: str | int | None = None  # None: the interface's default channel
    bitrate: int | None = None  # None: not passed, the interface (or `ip link`) decides
    options: Mapping[str, Any] = field(default_factory=dict)  # more can.Bus() keyword arguments
    stale_after_s: float = 2.0  # as for SLCAN: the fastest DBC message cycles at 20 ms
    open_timeout_s: float = 10.0  # some drivers take seconds to open (python-can slcan sleeps 2 s)
    max_pending_frames: int = 10_000  # frames read but not yet decoded; more are dropped and counted
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=30.0))

    def __post_init__(self) -> None:
        if not isinstance(self.interface, str) or self.interface not in can.interfaces.VALID_INTERFACES:
            known = ", ".join(sorted(can.interfaces.VALID_INTERFACES))
            raise ConfigError(f"{_SECTION}.interface: {self.interface!r} is not a python-can interface; one of {known}")
        if self.channel is not None and (isinstance(self.channel, bool) or not isinstance(self.channel, str | int)):
            raise ConfigError(f"{_SECTION}.channel: {self.channel!r} is not a channel name or number")
        if self.bitrate is not None and (
            isinstance(self.bitrate, bool) or not isinstance(self.bitrate, int) or self.bitrate <= 0
        ):
            raise ConfigError(f"{_SECTION}.bitrate: {self.bitrate!r} is not a positive whole number of bit/s")
        if not isinstance(self.options, Mapping) or not all(isinstance(key, str) for key in self.options):
            raise ConfigError(f"{_SECTION}.options: expected a table of can.Bus() keyword arguments")
        clash = {"interface", "channel", "bitrate"} & set(self.options)
        if clash:
            raise ConfigError(f"{_SECTION}.options: {', '.join(sorted(clash))} belong(s) in [sources.can] itself")
        for name in ("stale_after_s", "open_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{_SECTION}.{name}: {value!r} is not a positive number of seconds")
        if isinstance(self.max_pending_frames, bool) or not isinstance(self.max_pending_frames, int):
            raise ConfigError(f"{_SECTION}.max_pending_frames: {self.max_pending_frames!r} is not a whole number")
        if self.max_pending_frames < _MAX_BATCH:
            raise ConfigError(f"{_SECTION}.max_pending_frames: {self.max_pending_frames} is below {_MAX_BATCH}")

    @property
    def name(self) -> str:
        """How logs name this bus: `socketcan:can0`."""
        return self.interface if self.channel is None else f"{self.interface}:{self.channel}"

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> CanBusConfig:
        """Build from the raw `[sources.can]` table; ConfigError names the offending key."""
        values = dict(table)
        base_s, cap_s = values.pop("reconnect_base_s", 0.5), values.pop("reconnect_cap_s", 30.0)
        serial_only = _SERIAL_ONLY_KEYS & set(values)
        if serial_only:
            raise ConfigError(
                f"{_SECTION}: {', '.join(sorted(serial_only))} belong(s) to the SLCAN reader on a serial port, "
                f"not to interface = {values.get('interface')!r}; name the device as channel, and pass "
                "interface-specific settings in options = {{...}}"
            )
        known = {"interface", "channel", "bitrate", "options", "stale_after_s", "open_timeout_s", "max_pending_frames"}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"{_SECTION}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            return cls(backoff=Backoff(base_s=float(base_s), cap_s=float(cap_s)), **values)
        except (TypeError, ValueError) as exc:  # a wrong type, or the backoff's own check
            raise ConfigError(f"{_SECTION}: {exc}") from exc


def open_python_can_bus(settings: CanBusConfig) -> can.BusABC:
    """`can.Bus(interface=..., channel=..., bitrate=..., **options)`; blocking, run in the worker."""
    kwargs: dict[str, Any] = dict(settings.options)
    if settings.channel is not None:
        kwargs["channel"] = settings.channel
    if settings.bitrate is not None:
        kwargs["bitrate"] = settings.bitrate
    return can.Bus(interface=settings.interface, **kwargs)


def _one_line(exc: BaseException) -> str:
    """A driver's exception as one log line: vendor libraries put newlines and pages into them."""
    text = " ".join(str(exc).split()) or "no reason given"
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}"


class _BusWorker:
    """One session's thread: opens the bus, reads it, hands batches to the loop, shuts it down."""

    def __init__(self, settings: CanBusConfig, open_bus: OpenBus, stats: SourceStats) -> None:
        self._settings = settings
        self._open_bus = open_bus
        self._stats = stats
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._opened: asyncio.Future[BaseException | None] = self._loop.create_future()
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._batches: asyncio.Queue[list[can.Message] | BaseException] = asyncio.Queue()
        self._pending = 0  # frames in `_batches`; touched on the loop thread only
        self._dropped = 0  # frames dropped since the last warning
        self._thread = threading.Thread(target=self._main, name=f"can-{settings.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def opened(self) -> None:
        """Wait until the bus is open; DeviceGoneError / DeviceTimeoutError say why it is not."""
        settings = self._settings
        try:
            async with asyncio.timeout(io_timeout(settings.open_timeout_s)):
                failure = await asyncio.shield(self._opened)
        except TimeoutError:
            raise DeviceTimeoutError(
                f"cannot open python-can interface {settings.name}: no answer within {settings.open_timeout_s:.1f} s"
            ) from None
        if failure is not None:
            raise DeviceGoneError(f"cannot open python-can interface {settings.name}: {_one_line(failure)}")

    async def next_batch(self) -> list[can.Message]:
        item = await self._batches.get()
        if isinstance(item, BaseException):
            raise DeviceGoneError(f"{self._settings.name} went away: {_one_line(item)}")
        self._pending -= len(item)
        if self._dropped and not self._pending:
            _LOGGER.warning("%s: caught up after dropping %d frame(s)", self._settings.name, self._dropped)
            self._dropped = 0
        return item

    async def stop(self) -> None:
        """Tell the worker to stop and wait (bounded) until it has shut the bus down."""
        self._stop.set()
        try:
            async with asyncio.timeout(io_timeout(_STOP_WAIT_S)):
                await asyncio.shield(self._finished)
        except TimeoutError:
            _LOGGER.warning(
                "%s: the driver did not return within %.1f s; its thread closes the bus when it does",
                self._settings.name,
                _STOP_WAIT_S,
            )

    # -- the worker thread ---------------------------------------------------------------------
    def _main(self) -> None:
        try:
            bus = self._open_bus(self._settings)
        except Exception as exc:  # a third-party driver: CanError, OSError, ImportError, ValueError, ...
            self._post(self._opened.set_result, exc)
            self._post(self._finished.set_result, None)
            return
        try:
            self._post(self._opened.set_result, None)
            self._pump(bus)
        finally:
            try:
                bus.shutdown()
            except Exception as exc:  # nothing left to save; say so and let the session end
                _LOGGER.warning("%s: shutting the bus down failed: %s", self._settings.name, _one_line(exc))
            self._post(self._finished.set_result, None)

    def _pump(self, bus: can.BusABC) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                message = bus.recv(_POLL_S)
                if message is None:
                    continue
                batch = [message]
                while len(batch) < _MAX_BATCH and (message := bus.recv(0)) is not None:
                    batch.append(message)
            except Exception as exc:  # CanOperationError on a downed interface, OSError, driver errors
                self._post(self._batches.put_nowait, exc)
                return
            if not self._post(self._deliver, batch):
                return

    def _post(self, callback: Callable[..., object], *args: object) -> bool:
        """Run `callback(*args)` on the loop thread; False when the loop is gone (shutdown)."""
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True

    # -- back on the loop thread ---------------------------------------------------------------
    def _deliver(self, batch: list[can.Message]) -> None:
        if self._pending + len(batch) > self._settings.max_pending_frames:
            if not self._dropped:
                _LOGGER.warning(
                    "%s: %d frame(s) wait to be decoded; dropping new ones until the agent catches up",
                    self._settings.name,
                    self._pending,
                )
            self._dropped += len(batch)
            self._stats.errors += len(batch)
            return
        self._pending += len(batch)
        self._batches.put_nowait(batch)


class CanBusReader:
    """Feeds `VehicleState` from a python-can bus, reconnecting forever; one task under a TaskGroup."""

    def __init__(
        self,
        settings: CanBusConfig,
        *,
        state: VehicleState,
        clock: Clock,
        decoder: CanSignalDecoder | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        open_bus: OpenBus = open_python_can_bus,
    ) -> None:
        self._settings = settings
        self._open_bus = open_bus
        self._feed = CanFeed(
            name=settings.name,
            state=state,
            clock=clock,
            decoder=decoder,
            backoff=settings.backoff,
            rng=rng,
            sleep=sleep,
        )
        self.stats = self._feed.stats
        self.connected = self._feed.connected  # set while the bus is open (tests, health reports)
        self._worker: _BusWorker | None = None

    async def run(self) -> NoReturn:
        await self._feed.reconnect.run(self._session)

    async def _session(self) -> None:
        settings = self._settings
        if self._worker is not None and self._worker.alive:
            # A driver stuck in open() or recv(): a second thread would pile up on every retry and
            # might open the same exclusive device twice. Wait (with the loop's backoff) for it.
            raise DeviceTimeoutError(f"{settings.name}: the previous driver call has not returned yet")
        worker = self._worker = _BusWorker(settings, self._open_bus, self.stats)
        worker.start()
        try:
            await worker.opened()
            _LOGGER.info("%s: CAN bus open", settings.name)
            await self._feed.serve(worker.next_batch, self.handle, settings.stale_after_s)
        finally:
            await worker.stop()

    def handle(self, batch: Sequence[can.Message]) -> int:
        """Decode one batch into the state; returns the number of frames that count as bus activity."""
        frames: list[CanFrame] = []
        uncarried = 0  # frames on the bus that a CanFrame cannot hold: bus activity all the same
        stats = self.stats
        name = self._settings.name
        warn = self._feed.frame_warnings.warning
        for message in batch:
            if message.is_error_frame:
                stats.errors += 1
                warn(
                    ("error", message.arbitration_id),
                    "%s: error frame on the bus (id 0x%X)",
                    name,
                    message.arbitration_id,
                )
                continue
            try:
                remote = message.is_remote_frame
                frame = CanFrame(
                    can_id=message.arbitration_id,
                    data=b"" if remote else bytes(message.data),
                    extended=message.is_extended_id,
                    remote=remote,
                    dlc=message.dlc if remote else -1,
                )
            except ValueError as exc:  # CAN FD payloads, out-of-range identifiers
                stats.errors += 1
                uncarried += 1
                warn(("frame", message.arbitration_id), "%s: skipped frame 0x%X: %s", name, message.arbitration_id, exc)
                continue
            frames.append(frame)
        stats.messages += uncarried
        return self._feed.decode(frames) + uncarried
