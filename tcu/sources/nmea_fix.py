"""From NMEA sentences to VSS values: one receiver epoch at a time, each value written once.

A receiver reports one navigation epoch as a burst (typically RMC, VTG, GGA, one GSA per
constellation, GSV): GGA and RMC both carry the position, RMC and VTG both the course. The
interpreter writes each value once per epoch (the epoch being the UTC time of day of GGA/RMC),
dates GGA's time with RMC's date (handling midnight between them), and feeds the `GnssTrack` with
dated positions only (a receiver whose RMC is switched off fills the state, not the track).

VSS names. Standard VSS 4.x: Vehicle.CurrentLocation.{Latitude, Longitude, Altitude, Heading,
HorizontalAccuracy, VerticalAccuracy, Timestamp, GNSSReceiver.FixType}. Our extensions (VSS has no
place for them): Vehicle.CurrentLocation.GNSSReceiver.{FixQuality, SatellitesInUse, PDOP, HDOP, VDOP}.
The accuracies are estimates, DOP times an assumed user equivalent range error (UERE); NMEA 0183's four
basic sentences carry no error estimate of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from tcu.sources.nmea import Gga, Gsa, Rmc, Sentence, Vtg
from tcu.sources.nmea_track import GnssPosition, GnssTrack
from telematics_wire.signal_values import SignalValue

LATITUDE = "Vehicle.CurrentLocation.Latitude"
LONGITUDE = "Vehicle.CurrentLocation.Longitude"
ALTITUDE = "Vehicle.CurrentLocation.Altitude"
HEADING = "Vehicle.CurrentLocation.Heading"
HORIZONTAL_ACCURACY = "Vehicle.CurrentLocation.HorizontalAccuracy"
VERTICAL_ACCURACY = "Vehicle.CurrentLocation.VerticalAccuracy"
TIMESTAMP = "Vehicle.CurrentLocation.Timestamp"
FIX_TYPE = "Vehicle.CurrentLocation.GNSSReceiver.FixType"
# Extensions:
FIX_QUALITY = "Vehicle.CurrentLocation.GNSSReceiver.FixQuality"
SATELLITES = "Vehicle.CurrentLocation.GNSSReceiver.SatellitesInUse"
PDOP = "Vehicle.CurrentLocation.GNSSReceiver.PDOP"
HDOP = "Vehicle.CurrentLocation.GNSSReceiver.HDOP"
VDOP = "Vehicle.CurrentLocation.GNSSReceiver.VDOP"

FIX_TYPES = {1: "NONE", 2: "TWO_D", 3: "THREE_D"}  # GSA mode 2 → VSS GNSSReceiver.FixType
NO_FIX = 1
# Without a fix the last position is kept (it is where the vehicle was) but no longer current: stale.
POSITION_PATHS = (LATITUDE, LONGITUDE, ALTITUDE, HEADING)
# DOPs and the accuracies derived from them mean nothing without a fix (receivers print 99.99): invalid.
ACCURACY_PATHS = (HORIZONTAL_ACCURACY, VERTICAL_ACCURACY, PDOP, HDOP, VDOP)
DEFAULT_UERE_M = 5.0  # a typical 1-sigma range error of a single-frequency receiver without corrections
_HALF_DAY = timedelta(hours=12)


@dataclass(frozen=True, slots=True, kw_only=True)
class GnssUpdate:
    """What one sentence says: good values, values delivered without a fix, and whether it says "no fix"."""

    values: dict[str, SignalValue] = field(default_factory=dict)
    invalid: dict[str, SignalValue] = field(default_factory=dict)  # written with Quality.INVALID
    no_fix: bool = False  # the last position goes stale and the last accuracies invalid


class GnssInterpreter:
    """Sentences in, VSS values out; keeps just enough state to date and de-duplicate an epoch."""

    def __init__(self, track: GnssTrack, *, uere_m: float = DEFAULT_UERE_M) -> None:
        if uere_m <= 0:
            raise ValueError(f"UERE {uere_m} m must be positive")
        self.track = track
        self._uere_m = uere_m
        self._reference: datetime | None = None  # date and time of the last RMC that had both
        self._epoch: time | None = None  # time of day of the epoch being reported
        self._position_epoch: time | None = None
        self._course_epoch: time | None = None
        self._gsa_seen: tuple[object, ...] | None = None

    def interpret(self, sentence: Sentence, *, received: float | None = None) -> dict[str, SignalValue]:
        """The good VSS values a sentence contributes (see `read` for the rest)."""
        return self.read(sentence, received=received).values

    def read(self, sentence: Sentence, *, received: float | None = None) -> GnssUpdate:
        """Everything a sentence says (and the track updated on the way).

        `received` is when the sentence was read on the agent's monotonic clock; the tracked position
        keeps it so that its age can be judged without trusting the wall clock.
        """
        match sentence:
            case Rmc():
                return self._rmc(sentence, received)
            case Gga():
                return self._gga(sentence, received)
            case Vtg():
                return GnssUpdate(values=self._course(sentence.course_deg, sentence.speed_kmh))
            case Gsa():
                return self._gsa(sentence)

    def utc(self, time_of_day: time) -> datetime | None:
        """Date a time of day with the last RMC date, across midnight either way; None before one.

        The host clock is no substitute: a TCU's clock may be unset at boot, and a position dated
        wrongly would later block the correctly dated ones in the track.
        """
        reference = self._reference
        if reference is None:
            return None
        stamp = datetime.combine(reference.date(), time_of_day, tzinfo=UTC)
        if stamp < reference - _HALF_DAY:
            stamp += timedelta(days=1)
        elif stamp > reference + _HALF_DAY:
            stamp -= timedelta(days=1)
        return stamp

    def _rmc(self, rmc: Rmc, received: float | None) -> GnssUpdate:
        self._start_epoch(rmc.time)
        if rmc.timestamp is not None:
            self._reference = rmc.timestamp
        if not rmc.valid:  # status V: whatever position it prints is not a fix
            return GnssUpdate(no_fix=True)
        values: dict[str, SignalValue] = {}
        if rmc.latitude is not None and rmc.longitude is not None:
            values |= self._position(rmc, rmc.latitude, rmc.longitude, received)
            values |= self._course(rmc.course_deg, rmc.speed_kmh)
        return GnssUpdate(values=values)

    def _gga(self, gga: Gga, received: float | None) -> GnssUpdate:
        self._start_epoch(gga.time)
        fix = gga.quality > 0
        values: dict[str, SignalValue] = {FIX_QUALITY: gga.quality}
        accuracy: dict[str, SignalValue] = {}
        if gga.satellites is not None:
            values[SATELLITES] = gga.satellites
        if gga.hdop is not None:
            accuracy[HDOP] = gga.hdop
            accuracy[HORIZONTAL_ACCURACY] = round(gga.hdop * self._uere_m, 2)
        if not fix:
            return GnssUpdate(values=values, invalid=accuracy, no_fix=True)
        values |= accuracy
        if gga.latitude is not None and gga.longitude is not None:
            values |= self._position(gga, gga.latitude, gga.longitude, received)
            if gga.altitude_m is not None:
                values[ALTITUDE] = gga.altitude_m
        return GnssUpdate(values=values)

    def _gsa(self, gsa: Gsa) -> GnssUpdate:
        seen = (self._epoch, gsa.fix_type, gsa.pdop, gsa.hdop, gsa.vdop)
        if seen == self._gsa_seen:
            return GnssUpdate()  # the same solution, reported again for another constellation
        self._gsa_seen = seen
        accuracy: dict[str, SignalValue] = {}
        if gsa.pdop is not None:
            accuracy[PDOP] = gsa.pdop
        if gsa.hdop is not None:
            accuracy[HDOP] = gsa.hdop
        if gsa.vdop is not None:
            accuracy[VDOP] = gsa.vdop
            accuracy[VERTICAL_ACCURACY] = round(gsa.vdop * self._uere_m, 2)
        values: dict[str, SignalValue] = {FIX_TYPE: FIX_TYPES[gsa.fix_type]}
        if gsa.fix_type == NO_FIX:
            return GnssUpdate(values=values, invalid=accuracy, no_fix=True)
        return GnssUpdate(values=values | accuracy)

    def _start_epoch(self, time_of_day: time | None) -> None:
        if time_of_day is not None:
            self._epoch = time_of_day

    def _position(
        self, fix: Gga | Rmc, latitude: float, longitude: float, received: float | None
    ) -> dict[str, SignalValue]:
        time_of_day = fix.time
        fresh: dict[str, SignalValue] = {LATITUDE: round(latitude, 7), LONGITUDE: round(longitude, 7)}
        stamp = None if time_of_day is None else self.utc(time_of_day)
        if time_of_day is None or stamp is None:
            return fresh  # not datable (yet): into the state, not into the track the MSD is built from
        previous = self.track.latest
        # GGA after RMC in one epoch refines the tracked fix (quality, HDOP) without writing it twice.
        self.track.add(
            GnssPosition(
                timestamp=stamp,
                latitude=latitude,
                longitude=longitude,
                # RMC has neither: keep what the epoch's GGA said, if it came first.
                quality=fix.quality if isinstance(fix, Gga) else (previous.quality if previous else 1),
                hdop=fix.hdop if isinstance(fix, Gga) else (previous.hdop if previous else None),
                received=received,
            )
        )
        if time_of_day == self._position_epoch:
            return {}
        self._position_epoch = time_of_day
        return fresh | {TIMESTAMP: stamp.isoformat().replace("+00:00", "Z")}

    def _course(self, course_deg: float | None, speed_kmh: float | None) -> dict[str, SignalValue]:
        if self._epoch is not None and self._epoch == self._course_epoch:
            return {}
        if not self.track.update_course(course_deg, speed_kmh) or course_deg is None:
            return {}
        self._course_epoch = self._epoch
        return {HEADING: round(course_deg % 360.0, 1)}
