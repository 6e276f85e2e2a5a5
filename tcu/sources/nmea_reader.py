"""The GNSS source: an NMEA 0183 receiver on a serial port, written into `VehicleState` as "gnss".

    reader = NmeaReader(NmeaConfig(port="/dev/ttyACM1"), state=state, clock=clock)
    tasks.create_task(reader.run(), name="source-gnss")     # under the app's TaskGroup
    reader.track                                             # last three positions, for the eCall MSD

Signals are stamped with the injected clock (when the host learnt them); the fix time the receiver
reported is `Vehicle.CurrentLocation.Timestamp` and the timestamps in the track. When the fix is lost
(GGA quality 0, RMC status V, GSA mode 1) the last known position stays in the state, marked stale, and
the accuracies and DOPs are invalid (the 99.99 a receiver prints without a fix is no accuracy); FixType
(NONE) and FixQuality (0) say why. Garbage, partial lines and bad checksums are logged and skipped; a vanished
port, or no valid sentence for `stale_after_s`, marks every GNSS signal stale and reopens the port
after a capped, jittered backoff. The track survives reconnects (it is the vehicle's recent past,
not the port's) and lives in memory only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NoReturn

from tcu.backoff import Backoff
from tcu.clock import Clock
from tcu.errors import ConfigError, DeviceGoneError, DeviceTimeoutError, ProtocolError
from tcu.reconnect import Sleep
from tcu.sources.nmea import NmeaStream, Sentence
from tcu.sources.nmea_fix import ACCURACY_PATHS, DEFAULT_UERE_M, POSITION_PATHS, GnssInterpreter
from tcu.sources.nmea_track import GnssTrack
from tcu.sources.serial_port import OpenPort, SourceStats, close_port, config_from_table, open_serial
from tcu.sources.source_loop import source_reconnect_loop
from tcu.vehicle.state import Quality, Signal, VehicleState
from tcu.virtual_time import silence_limit

_LOGGER = logging.getLogger(__name__)
_OPEN_RECEIVER: OpenPort = functools.partial(open_serial, device="GNSS")
_READ_SIZE = 4096
SOURCE = "gnss"


@dataclass(frozen=True, slots=True, kw_only=True)
class NmeaConfig:
    """`[sources.gnss]` of the agent config."""

    port: str  # /dev/ttyACM0, /dev/serial/by-id/..., or a pyserial URL
    baudrate: int = 9600  # the NMEA default; u-blox and others are often set to 38400 or 115200
    stale_after_s: float = 3.0  # three missed epochs at the usual 1 Hz
    uere_m: float = DEFAULT_UERE_M  # turns DOP into the accuracy estimate in metres
    track_spacing_m: float = 10.0  # see nmea_track: history points this far apart at least
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=30.0))

    def __post_init__(self) -> None:
        if self.stale_after_s <= 0 or self.uere_m <= 0 or self.track_spacing_m < 0:
            raise ConfigError("sources.gnss: stale_after_s and uere_m must be positive, track_spacing_m >= 0")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> NmeaConfig:
        """Build from the raw `[sources.gnss]` table; ConfigError names the offending key."""
        return config_from_table(cls, table, section="sources.gnss")


class NmeaReader:
    """Feeds `VehicleState` and a `GnssTrack` from a receiver, reconnecting forever."""

    def __init__(
        self,
        settings: NmeaConfig,
        *,
        state: VehicleState,
        clock: Clock,
        track: GnssTrack | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        open_port: OpenPort = _OPEN_RECEIVER,
    ) -> None:
        self._settings = settings
        self._state = state
        self._clock = clock
        self.track = track or GnssTrack(min_spacing_m=settings.track_spacing_m)
        self._interpreter = GnssInterpreter(self.track, uere_m=settings.uere_m)
        self._open_port = open_port
        self._reconnect = source_reconnect_loop(
            name=f"GNSS {settings.port}",
            backoff=settings.backoff,
            rng=rng,
            on_down=self._down,
            sleep=sleep,
        )
        self.stats = SourceStats()
        self.connected = asyncio.Event()  # set while the port is open (tests, health reports)

    async def run(self) -> NoReturn:
        await self._reconnect.run(self._session)

    async def _session(self) -> None:
        settings = self._settings
        reader, writer = await self._open_port(settings.port, settings.baudrate)
        stream = NmeaStream()  # a new port starts mid-sentence: no partial line carried over
        self.stats.sessions += 1
        self.connected.set()
        loop = asyncio.get_running_loop()
        try:
            # Only sentences keep the session alive: a receiver spewing noise is as good as gone.
            async with asyncio.timeout(stale_s := silence_limit(settings.stale_after_s)) as deadline:
                while True:
                    try:
                        data = await reader.read(_READ_SIZE)
                    except OSError as exc:  # EIO on a vanished pty, SerialException on a pulled receiver
                        raise DeviceGoneError(f"{settings.port} went away: {exc}") from exc
                    if not data:
                        raise DeviceGoneError(f"{settings.port} went away (end of file)")
                    if self.handle(stream.feed(data)):
                        self._reconnect.healthy()
                        deadline.reschedule(loop.time() + stale_s)
        except TimeoutError:
            raise DeviceTimeoutError(f"no NMEA sentence for {stale_s:.1f} s") from None
        finally:
            await close_port(writer)

    def handle(self, items: list[Sentence | ProtocolError]) -> int:
        """Write what a batch of sentences says into the state; returns the number of sentences."""
        now, monotonic = self._clock.now(), self._clock.monotonic()
        sentences = 0
        for item in items:
            if isinstance(item, ProtocolError):
                self.stats.errors += 1
                _LOGGER.warning("%s: skipped: %s", self._settings.port, item)
                continue
            sentences += 1
            update = self._interpreter.read(item, received=monotonic)
            for values, quality in ((update.values, Quality.GOOD), (update.invalid, Quality.INVALID)):
                for path, value in values.items():
                    signal = Signal(
                        path=path, value=value, timestamp=now, source=SOURCE, quality=quality, monotonic=monotonic
                    )
                    self._state.update(signal)
                    self.stats.signals += 1
            if update.no_fix:
                self._fix_lost(now, monotonic, written=update.values.keys() | update.invalid.keys())
        self.stats.messages += sentences
        return sentences

    def _fix_lost(self, now: datetime, monotonic: float, *, written: Collection[str]) -> None:
        """No fix: the last position stays (where the vehicle was) but is stale, its accuracy invalid.

        Only GOOD readings are marked, so a receiver that keeps saying "no fix" every second writes nothing.
        """
        for paths, quality in ((POSITION_PATHS, Quality.STALE), (ACCURACY_PATHS, Quality.INVALID)):
            for path in paths:
                current = self._state.get(path)
                if path in written or current is None or current.source != SOURCE:
                    continue
                if current.quality is not Quality.GOOD:
                    continue
                self._state.update(replace(current, timestamp=now, quality=quality, monotonic=monotonic))

    def _down(self, reason: str) -> None:
        self.connected.clear()
        stale = self._state.mark_stale(SOURCE, self._clock)
        _LOGGER.warning("%s: GNSS source down (%s); %d signal(s) stale", self._settings.port, reason, len(stale))
