"""A virtual multi-GNSS receiver on a pty, driving along the shared `DriveCycle` route.

Every `interval_s` (1 Hz by default) it sends one epoch the way a u-blox M8 does: RMC, VTG, GGA,
one GSA per constellation (GPS, GLONASS; NMEA 4.10 system ids), a GSV, with talker `GN` (or `GP`
for a GPS-only receiver). Sentences are built with pynmeagps, not with the agent's own NMEA code,
so the two sides of every test are independent implementations.

`epoch(drive_s)` is the sans-I/O core; UTC is `start_utc` plus the drive time, so an injected
drive-time source (sped up, or a test's) moves position and clock together, or, when a `utc` source
is given (a bench's clock), whatever time it tells: a bench whose calendar moves on while the car
sleeps (`advance_calendar`) gets fixes dated like the agent's clock, not weeks behind. Pacing is loop
time. Faults: `PtyDevice`'s (garbage, truncation, unplug/replug), `lose_fix()` / `regain_fix()`
(tunnel), `corrupt_next_checksum()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pynmeagps import GET, NMEAMessage

from hil.devices.pty_device import PtyDevice, PtyPort
from tcu.vehicle.drive_cycle import DriveCycle, DriveSample

KMH_PER_KNOT = 1.852
DEFAULT_START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
_GPS_SVS = (5, 13, 15, 18, 20, 24, 29, 10)
_GLONASS_SVS = (70, 71, 80, 81)


class NmeaSimulator(PtyDevice):
    def __init__(
        self,
        *,
        cycle: DriveCycle | None = None,
        elapsed: Callable[[], float] | None = None,
        start_utc: datetime = DEFAULT_START,
        utc: Callable[[], datetime] | None = None,
        interval_s: float = 1.0,
        talker: str = "GN",
        altitude_m: float = 519.4,
        hdop: float = 0.9,
        link_path: str | None = None,
    ) -> None:
        super().__init__(name="GNSS", link_path=link_path)
        if interval_s <= 0:
            raise ValueError("the epoch interval must be positive")
        if start_utc.tzinfo is None:
            raise ValueError("start_utc must be timezone-aware")
        self.cycle = cycle or DriveCycle()
        self._elapsed = elapsed
        self._t0: float | None = None
        self.start_utc = start_utc
        self._utc = utc
        self.interval_s = interval_s
        self.talker = talker
        self.altitude_m = altitude_m
        self.hdop = hdop
        self.has_fix = True
        self._corrupt_next = False
        self.epochs_sent = 0

    def drive_s(self) -> float:
        """Seconds into the drive: the injected source, else loop time since first use."""
        if self._elapsed is not None:
            return self._elapsed()
        now = asyncio.get_running_loop().time()
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    def utc_at(self, drive_s: float) -> datetime:
        """The time an epoch at `drive_s` tells: the `utc` source's now, else `start_utc` plus `drive_s`."""
        if self._utc is None:
            return self.start_utc + timedelta(seconds=drive_s)
        now = self._utc()
        if now.tzinfo is None:
            raise ValueError("the utc source must tell timezone-aware times")
        return now.astimezone(UTC)

    def lose_fix(self) -> None:
        """Drive into a tunnel: no position, RMC status V, GGA quality 0, GSA mode 1."""
        self.has_fix = False

    def regain_fix(self) -> None:
        self.has_fix = True

    def corrupt_next_checksum(self) -> None:
        """The next epoch's GGA carries a wrong checksum (one bit flipped in transit)."""
        self._corrupt_next = True

    def epoch(self, drive_s: float) -> bytes:
        """One epoch's sentences for the drive at `drive_s`."""
        sample = self.cycle.at(drive_s)
        stamp = self.utc_at(drive_s)
        gga = self._gga(sample, stamp)
        if self._corrupt_next:
            self._corrupt_next = False
            star = gga.rindex(b"*")
            gga = gga[: star + 1] + f"{int(gga[star + 1 : star + 3], 16) ^ 0x01:02X}\r\n".encode()
        gsv = _sentence("GP", "GSV", numMsg=1, msgNum=1, numSV=1, svid_01=5, elv_01=51, az_01=164, cno_01=38)
        self.epochs_sent += 1
        return b"".join([self._rmc(sample, stamp), self._vtg(sample), gga, *self._gsas(), gsv])

    def _rmc(self, sample: DriveSample, stamp: datetime) -> bytes:
        fields: dict[str, object] = {"time": stamp.time(), "date": stamp.date(), "mv": "", "mvEW": "", "navStatus": "V"}
        if not self.has_fix:
            return _sentence(
                self.talker, "RMC", **fields, status="V", lat="", NS="", lon="", EW="", spd="", cog="", posMode="N"
            )
        return _sentence(
            self.talker,
            "RMC",
            **fields,
            status="A",
            lat=sample.latitude,
            lon=sample.longitude,
            spd=round(sample.speed_kmh / KMH_PER_KNOT, 3),
            cog=_course(sample),
            posMode="A",
        )

    def _vtg(self, sample: DriveSample) -> bytes:
        if not self.has_fix:
            return _sentence(
                self.talker,
                "VTG",
                cogt="",
                cogtUnit="",
                cogm="",
                cogmUnit="",
                sogn="",
                sognUnit="",
                sogk="",
                sogkUnit="",
                posMode="N",
            )
        return _sentence(
            self.talker,
            "VTG",
            cogt=_course(sample),
            cogtUnit="T",
            cogm="",
            cogmUnit="M",
            sogn=round(sample.speed_kmh / KMH_PER_KNOT, 3),
            sognUnit="N",
            sogk=round(sample.speed_kmh, 3),
            sogkUnit="K",
            posMode="A",
        )

    def _gga(self, sample: DriveSample, stamp: datetime) -> bytes:
        fields: dict[str, object] = {"time": stamp.time(), "diffAge": "", "diffStation": ""}
        if not self.has_fix:
            return _sentence(
                self.talker,
                "GGA",
                **fields,
                lat="",
                NS="",
                lon="",
                EW="",
                quality=0,
                numSV=0,
                HDOP=99.99,
                alt="",
                altUnit="",
                sep="",
                sepUnit="",
            )
        satellites = len(_GPS_SVS) + (len(_GLONASS_SVS) if self.talker == "GN" else 0)
        return _sentence(
            self.talker,
            "GGA",
            **fields,
            lat=sample.latitude,
            lon=sample.longitude,
            quality=1,
            numSV=satellites,
            HDOP=self.hdop,
            alt=self.altitude_m,
            altUnit="M",
            sep=47.3,
            sepUnit="M",
        )

    def _gsas(self) -> list[bytes]:
        systems = [(1, _GPS_SVS)] + ([(2, _GLONASS_SVS)] if self.talker == "GN" else [])
        dops = (
            {"PDOP": 1.6, "HDOP": self.hdop, "VDOP": 1.3}
            if self.has_fix
            else dict.fromkeys(("PDOP", "HDOP", "VDOP"), 99.99)
        )
        sentences = []
        for system_id, svs in systems:
            used = svs if self.has_fix else ()
            slots = {f"svid_{i:02d}": (used[i - 1] if i <= len(used) else "") for i in range(1, 13)}
            sentences.append(
                _sentence(
                    self.talker,
                    "GSA",
                    opMode="A",
                    navMode=3 if self.has_fix else 1,
                    **slots,
                    **dops,
                    systemId=system_id,
                )
            )
        return sentences

    async def session(self, port: PtyPort) -> None:
        loop = asyncio.get_running_loop()
        next_epoch = loop.time()
        while True:
            await port.write(self.epoch(self.drive_s()))
            next_epoch += self.interval_s
            try:  # a receiver ignores what it does not understand; drain the host's bytes meanwhile
                async with asyncio.timeout(max(0.0, next_epoch - loop.time())):
                    while True:
                        await port.read()
            except TimeoutError:
                pass


def _course(sample: DriveSample) -> float | str:
    """Course over ground; receivers leave it empty at a standstill, where it means nothing."""
    return sample.heading_deg if sample.speed_kmh >= 0.5 else ""


def _sentence(talker: str, kind: str, **fields: object) -> bytes:
    return bytes(NMEAMessage(talker, kind, GET, **fields).serialize())
