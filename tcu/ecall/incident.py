"""What an emergency call tells about the incident: time and position captured at the trigger, and the MSD.

Shared by the 112 eCall and the intelligent call to the call centre, so both describe the same moment.
Incident time and position are captured at the trigger — from the `GnssTrack` (current fix plus the
two recent locations) or else the VehicleState position. The position is trusted only when fresh
(`position_max_age_s`) and, when an accuracy is known, within 75 m at one sigma (about ±150 m at 95 %).
No position: the MSD says so (`positionCanBeTrusted` false) and the call goes ahead; a later
transmission then uses whatever position has appeared meanwhile. Nothing here may stop a call: an
unreadable position or a codec slip gives an MSD without the position.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime

from tcu.clock import Clock, age_s
from tcu.ecall.config import EcallConfig
from tcu.ecall.triggers import CallType
from tcu.sources.nmea_track import GnssTrack
from tcu.vehicle.state import Quality, VehicleState, as_float
from telematics_wire.msd import encode, msd_from_fixes

_LOGGER = logging.getLogger(__name__)

LATITUDE, LONGITUDE = "Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocation.Longitude"
HEADING, ACCURACY = "Vehicle.CurrentLocation.Heading", "Vehicle.CurrentLocation.HorizontalAccuracy"
TRUSTED_ACCURACY_M = 75.0  # 1 sigma; 2 sigma ≈ 95 % within ±150 m, the MSD's definition of trusted


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    at: datetime
    call_type: CallType
    fixes: tuple[tuple[float, float], ...]
    heading_deg: float | None
    trusted: bool


class IncidentCapture:
    def __init__(
        self, config: EcallConfig, *, vin: str, state: VehicleState, clock: Clock, track: GnssTrack | None
    ) -> None:
        self._config = config
        self._vin = vin
        self._state = state
        self._clock = clock
        self._track = track

    def snapshot(self, at: datetime, call_type: CallType) -> Incident:
        try:
            return self._locate(at, call_type)
        except Exception:  # a position value nobody expected must never stop the call: go without it
            _LOGGER.exception("eCall: position unreadable; the MSD goes without it")
            return Incident(at=at, call_type=call_type, fixes=(), heading_deg=None, trusted=False)

    def _locate(self, at: datetime, call_type: CallType) -> Incident:
        clock = self._clock
        max_age = self._config.position_max_age_s  # ages by the monotonic clock: see age_s
        fixes: tuple[tuple[float, float], ...] = ()
        heading: float | None = None
        fresh = False
        if self._track is not None and (latest := self._track.latest) is not None:
            fixes = tuple((p.latitude, p.longitude) for p in self._track.positions)
            heading = self._track.direction_deg
            fresh = 0 <= age_s(clock, latest.timestamp, latest.received) <= max_age
        else:
            latitude = self._state.get(LATITUDE)
            longitude = self._state.get(LONGITUDE)
            if (
                latitude is not None
                and longitude is not None
                and Quality.INVALID not in (latitude.quality, longitude.quality)
            ):
                fixes = ((as_float(latitude.value), as_float(longitude.value)),)
                age = max(age_s(clock, signal.timestamp, signal.monotonic) for signal in (latitude, longitude))
                fresh = latitude.quality is longitude.quality is Quality.GOOD and 0 <= age <= max_age
            direction = self._state.get(HEADING)
            if direction is not None and direction.quality is Quality.GOOD:
                heading = as_float(direction.value)
        accuracy = self._state.get(ACCURACY)
        accurate = (
            accuracy is None or accuracy.quality is not Quality.GOOD or as_float(accuracy.value) <= TRUSTED_ACCURACY_M
        )
        if fixes and not all(math.isfinite(c) for fix in fixes for c in fix):
            fixes = ()
        return Incident(
            at=at, call_type=call_type, fixes=fixes, heading_deg=heading, trusted=bool(fixes) and fresh and accurate
        )

    def call_msd(
        self, incident: Incident | None, message_identifier: int, call_type: CallType
    ) -> tuple[Incident, bytes]:
        """The MSD of a call's incident (or, should none have been captured, of this moment), and the
        incident as it now stands."""
        if incident is None:
            incident = self.snapshot(self._clock.now(), call_type)
        return self.msd(incident, message_identifier)

    def msd(
        self, incident: Incident, message_identifier: int, *, number_of_passengers: int | None = None
    ) -> tuple[Incident, bytes]:
        """The encoded MSD, and the incident as it now stands (with a position found since the trigger)."""
        if not incident.fixes:  # nothing known at the trigger: whatever is known now beats nothing
            incident = replace(self.snapshot(incident.at, incident.call_type), at=incident.at)
        config = self._config

        def build(fixes: tuple[tuple[float, float], ...], heading: float | None, trusted: bool) -> bytes:
            msd = msd_from_fixes(
                fixes,
                heading_deg=heading,
                automatic_activation=incident.call_type is CallType.AUTOMATIC,
                test_call=incident.call_type is CallType.TEST,
                position_can_be_trusted=trusted,
                vehicle_type=config.vehicle_type,
                vin=self._vin,
                message_identifier=message_identifier,
                propulsion=config.propulsion,
                timestamp=incident.at,
                number_of_passengers=number_of_passengers,
            )
            return encode(msd, config.msd_version)

        try:
            return incident, build(incident.fixes, incident.heading_deg, incident.trusted)
        except Exception:  # never fail the call over the position (or a codec slip): send the MSD without it
            _LOGGER.exception("eCall MSD with the position failed; sending it without the position")
            return incident, build((), None, False)
