"""What both CAN readers do with frames, whatever carries them (`SlcanReader` over a serial adapter,
`CanBusReader` over python-can): decode through the DBC into `VehicleState`, count, keep a session alive
only while frames come, and mark the CAN signals stale when it ends.

A reader turns its transport's items into `CanFrame`s (counting and logging what is no frame: SLCAN
garbage and BELs, python-can error frames and frames SLCAN could not carry), hands them to
`CanFeed.decode`, and runs each session's reading loop through `CanFeed.serve`.

Every frame of one batch is stamped with one `clock.now()` and one `clock.monotonic()`: they arrived
together, and one call each per batch keeps the hot path cheap.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TypeVar

from tcu.backoff import Backoff
from tcu.clock import Clock
from tcu.errors import DeviceTimeoutError
from tcu.reconnect import ReconnectLoop, Sleep
from tcu.sources.log_limit import LogLimit
from tcu.sources.serial_port import SourceStats
from tcu.sources.slcan import CanFrame
from tcu.sources.slcan_signals import CanSignalDecoder
from tcu.sources.source_loop import source_reconnect_loop
from tcu.vehicle.state import VehicleState
from tcu.virtual_time import silence_limit

_LOGGER = logging.getLogger(__name__)

_BatchT = TypeVar("_BatchT")


class CanFeed:
    """The CAN source's state side: one per reader; `name` is how logs name the bus or port."""

    def __init__(
        self,
        *,
        name: str,
        state: VehicleState,
        clock: Clock,
        decoder: CanSignalDecoder | None,
        backoff: Backoff,
        rng: random.Random | None,
        sleep: Sleep,
    ) -> None:
        self.name = name
        self._state = state
        self._clock = clock
        self._decoder = decoder or CanSignalDecoder.from_files()
        self.reconnect: ReconnectLoop = source_reconnect_loop(
            name=f"CAN {name}", backoff=backoff, on_down=self._down, rng=rng, sleep=sleep
        )
        self.frame_warnings = LogLimit(_LOGGER)  # one line per kind of fault and frame, not one per frame
        self.stats = SourceStats()
        self.connected = asyncio.Event()  # set while the bus or channel is open (tests, health reports)

    def decode(self, frames: Sequence[CanFrame]) -> int:
        """Decode frames into the state; returns how many there were. A frame the DBC refuses is skipped."""
        signals, rejected = self._decoder.decode_batch(frames, self._clock.now(), self._clock.monotonic())
        for frame, exc in rejected:  # the reason names the frame and its DBC message
            self.frame_warnings.warning(("decode", frame.can_id), "%s: skipped a frame: %s", self.name, exc)
        update = self._state.update
        for signal in signals:
            update(signal)
        stats = self.stats
        stats.errors += len(rejected)
        stats.signals += len(signals)
        stats.messages += len(frames)
        return len(frames)

    async def serve(
        self, next_batch: Callable[[], Awaitable[_BatchT]], handle: Callable[[_BatchT], int], stale_after_s: float
    ) -> NoReturn:
        """One session's reading loop: `handle` each batch until no frame came for `stale_after_s`."""
        self.stats.sessions += 1
        self.connected.set()
        loop = asyncio.get_running_loop()
        try:
            # Only frames keep the session alive: garbage, BELs or error frames alone are no sign of a live bus.
            async with asyncio.timeout(stale_s := silence_limit(stale_after_s)) as deadline:
                while True:
                    if handle(await next_batch()):
                        self.reconnect.healthy()
                        deadline.reschedule(loop.time() + stale_s)
        except TimeoutError:
            # Reopening is the cure for an adapter that reset itself and closed its channel silently, or a
            # driver that lost its device without raising; it is harmless on a bus that is merely asleep
            # (a parked car): the backoff slows the retries down.
            raise DeviceTimeoutError(f"no CAN frame for {stale_s:.1f} s") from None

    def _down(self, reason: str) -> None:
        self.connected.clear()
        stale = self._state.mark_stale(self._decoder.source, self._clock)
        _LOGGER.warning("%s: CAN source down (%s); %d signal(s) stale", self.name, reason, len(stale))
