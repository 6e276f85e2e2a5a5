"""What the intelligent emergency call tells the call centre: the MSD and the additional data, as a record.

The channel: an `ecall` record on the uplink (sealed, end-to-end acknowledged, drained before anything
else), read by the backend's call-centre module (`backend_stub.call_centre`) — not in-band like the
112 eCall, because

- the call centre is the carmaker's backend service, not a PSAP: it sits behind the uplink already,
  and the record reaches it sealed with the vehicle's key and acknowledged end to end;
- the additional data (trigger, occupants, model, colour, signals) does not fit the MSD's 140 bytes,
  and a vehicle without legal eCall (which has 6AC, too) has no EN 16062 in-band modem at all;
- the intelligent call is a contract service that needs the SIM fully active (AGB 6.1, 5.5 c), so the
  telematics path is up whenever the call is allowed; where it is not, the 112 eCall is, in-band.

The voice call never waits for it: the dial command goes out first, the record is handed over after.
The same MSD (message identifier 1, with the number of fastened seatbelts when known) is in the
record, so the call centre sees exactly what a PSAP would.

Only data the call needs is read, at the trigger: the seatbelt states (occupants, EN 15722's
`numberOfPassengers` is the minimum known number of fastened seatbelts), the airbag and crash flags
(severity), speed and acceleration, and the configured model and colour. It goes whatever the privacy
settings say: the emergency call is the service the customer booked (privacy part B, "BMW Intelligenter
Notruf"), and the 112 eCall would carry the position regardless.
"""

from __future__ import annotations

import math
from typing import Any

from tcu.ecall.config import EcallConfig
from tcu.ecall.incident import Incident
from tcu.ecall.triggers import AIRBAG_DEPLOYED, CRASH_DETECTED, DetectedTrigger
from tcu.vehicle.state import Quality, VehicleState
from telematics_wire.msd_model import Propulsion
from telematics_wire.records import Record, RecordKind, to_millis

EVENT = "call_centre_data"
BELTS = ("Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted", "Vehicle.Cabin.Seat.Row1.PassengerSide.IsBelted")
SIGNALS = (
    "Vehicle.Speed",
    "Vehicle.Acceleration.Longitudinal",
    "Vehicle.Acceleration.Lateral",
    "Vehicle.Acceleration.Vertical",
    AIRBAG_DEPLOYED,
    CRASH_DETECTED,
    "Vehicle.Body.Lights.Hazard.IsSignaling",
)


def belted_seats(state: VehicleState) -> tuple[int, int] | None:
    """(fastened, seats whose belt state is known), None when no belt state is known."""
    known = [s for path in BELTS if (s := state.get(path)) is not None and s.quality is Quality.GOOD]
    known = [s for s in known if isinstance(s.value, bool)]
    return (sum(1 for s in known if s.value), len(known)) if known else None


def severity(state: VehicleState, detected: DetectedTrigger) -> str:
    """How bad, as far as the car knows: the airbag went off, a crash was detected, or the SOS button."""
    if _true(state, AIRBAG_DEPLOYED) or detected.path == AIRBAG_DEPLOYED:
        return "airbag_deployed"
    if _true(state, CRASH_DETECTED) or detected.path == CRASH_DETECTED:
        return "crash_detected"
    return "none_reported"


def call_centre_record(
    *,
    config: EcallConfig,
    session: int,
    detected: DetectedTrigger,
    incident: Incident,
    msd: bytes,
    state: VehicleState,
    fallback_to_112: bool,
) -> Record:
    belts = belted_seats(state)
    body: dict[str, Any] = {
        "event": EVENT,
        "session": session,
        "call_type": incident.call_type.value,
        "trigger": detected.trigger.reason,
        "trigger_signal": detected.path,
        "at_ms": to_millis(incident.at),
        "number": config.call_centre_number,
        "fallback_to_112": fallback_to_112,
        "msd": msd,
        "msd_version": config.msd_version,
        "severity": severity(state, detected),
        "occupants": None if belts is None else {"belted": belts[0], "seats_known": belts[1]},
        "vehicle": {
            "model": config.vehicle_model,
            "colour": config.vehicle_colour,
            "type": config.vehicle_type.value,
            "propulsion": [flag.name.lower() for flag in Propulsion if flag.name and flag in config.propulsion],
        },
        "signals": _signals(state),
    }
    return Record(kind=RecordKind.ECALL, created=incident.at, body=body)


def _signals(state: VehicleState) -> dict[str, bool | float]:
    out: dict[str, bool | float] = {}
    for path in SIGNALS:
        signal = state.get(path)
        if signal is None or signal.quality is not Quality.GOOD:
            continue
        value = signal.value
        if isinstance(value, bool):
            out[path] = value
        elif isinstance(value, int | float) and math.isfinite(value):
            out[path] = float(value)
    return out


def _true(state: VehicleState, path: str) -> bool:
    signal = state.get(path)
    return signal is not None and signal.quality is Quality.GOOD and signal.value is True
