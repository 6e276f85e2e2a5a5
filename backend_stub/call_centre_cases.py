"""An intelligent-call case as the call centre reads it: the MSD and the additional data a vehicle sent.

The vehicle sends them as an `ecall` record with `event = "call_centre_data"` on the uplink
(tcu/ecall/call_centre_data.py says why). A case is whatever a vehicle sent, so `parse_case` is total:
every field is checked (type, range, size; bools are not integers, floats must be finite) and a bad one
is dropped with its reason in `problems` — the agent on the phone still gets every field that is good.
`read_call_centre_cases(store)` reads the stored ones back (the CLI's `backend-stub call-centre-cases`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from backend_stub.store import BackendStore
from telematics_wire.errors import MsdError
from telematics_wire.msd import Msd, decode
from telematics_wire.records import MAX_MILLIS, RecordKind, from_millis
from telematics_wire.strict_cbor import describe

EVENT = "call_centre_data"  # tcu.ecall.call_centre_data.EVENT
_CALL_TYPES = frozenset({"automatic", "manual", "test"})
_SEVERITIES = frozenset({"airbag_deployed", "crash_detected", "none_reported"})
_MAX_TEXT = 200
_MAX_MSD = 140  # EN 15722: an MSD is at most 140 bytes
_MAX_SIGNALS = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCentreCase:
    vin: str
    received: datetime
    call_type: str | None = None
    trigger: str | None = None
    trigger_signal: str | None = None
    at: datetime | None = None
    number: str | None = None
    fallback_to_112: bool | None = None
    msd: Msd | None = None
    severity: str | None = None
    occupants_belted: int | None = None
    seats_known: int | None = None
    model: str | None = None
    colour: str | None = None
    vehicle_type: str | None = None
    propulsion: tuple[str, ...] = ()
    signals: Mapping[str, bool | float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        """JSON-ready, what the CLI prints and an agent on the phone reads first."""
        msd = self.msd
        return {
            "vin": self.vin,
            "at": None if self.at is None else self.at.isoformat(timespec="milliseconds"),
            "received": self.received.isoformat(timespec="milliseconds"),
            "call_type": self.call_type,
            "trigger": self.trigger,
            "severity": self.severity,
            "latitude_deg": None if msd is None else msd.latitude_deg,
            "longitude_deg": None if msd is None else msd.longitude_deg,
            "position_trusted": None if msd is None else msd.position_can_be_trusted,
            "occupants_belted": self.occupants_belted,
            "seats_known": self.seats_known,
            "model": self.model,
            "colour": self.colour,
            "vehicle_type": self.vehicle_type,
            "propulsion": ",".join(self.propulsion),
            "speed_kmh": self.signals.get("Vehicle.Speed"),
            "fallback_to_112": self.fallback_to_112,
            "problems": "; ".join(self.problems),
        }


def is_case_record(kind: str, body: Mapping[str, Any]) -> bool:
    return kind == RecordKind.ECALL.value and isinstance(body, Mapping) and body.get("event") == EVENT


def parse_case(vin: str, body: Mapping[str, Any], received: datetime) -> CallCentreCase:
    """A case from a record body; never raises: each bad field is left out and named in `problems`."""
    r = _Reader(body)
    call_type = r.text("call_type")
    if call_type is not None and call_type not in _CALL_TYPES:
        r.bad("call_type", call_type, "automatic, manual or test")
        call_type = None
    r.fields.update(call_type=call_type, trigger=r.text("trigger"), number=r.text("number", limit=32))
    r.fields["trigger_signal"] = r.text("trigger_signal", optional=True)
    at_ms = body.get("at_ms")
    if _int(at_ms, 0, MAX_MILLIS):
        r.fields["at"] = from_millis(at_ms)
    else:
        r.bad("at_ms", at_ms, f"milliseconds since 1970 within 0..{MAX_MILLIS}")
    fallback = body.get("fallback_to_112")
    if isinstance(fallback, bool):
        r.fields["fallback_to_112"] = fallback
    else:
        r.bad("fallback_to_112", fallback, "true or false")
    severity = body.get("severity")
    if isinstance(severity, str) and severity in _SEVERITIES:
        r.fields["severity"] = severity
    else:
        r.bad("severity", severity, ", ".join(sorted(_SEVERITIES)))
    r.msd(vin)
    r.occupants()
    r.vehicle()
    r.fields["signals"] = _signals(body.get("signals"), r.problems)
    return CallCentreCase(vin=vin, received=received, problems=tuple(r.problems), **r.fields)


class _Reader:
    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = body
        self.problems: list[str] = []
        self.fields: dict[str, Any] = {}

    def bad(self, name: str, value: object, expected: str) -> None:
        self.problems.append(f"{name}: got {describe(value)[:80]}; expected {expected}")

    def text(self, name: str, *, limit: int = _MAX_TEXT, optional: bool = False) -> str | None:
        value = self.body.get(name)
        if value is None and optional:
            return None
        if isinstance(value, str) and len(value) <= limit and value.isprintable():
            return value
        self.bad(name, value, f"printable text of at most {limit} characters")
        return None

    def msd(self, vin: str) -> None:
        raw = self.body.get("msd")
        removed = self.body.get("fields_removed")  # backend_stub.retention.FIELDS_REMOVED_KEY
        if raw is None and isinstance(removed, list) and "msd" in removed:
            return  # personal data, deleted after 4 weeks (backend_stub.retention): not the car's fault
        if not isinstance(raw, bytes) or not 0 < len(raw) <= _MAX_MSD:
            self.bad("msd", raw, f"the MSD's bytes (1..{_MAX_MSD})")
            return
        try:
            msd = decode(raw)
        except MsdError as exc:
            self.problems.append(f"msd: does not decode: {exc}")
            return
        self.fields["msd"] = msd
        if msd.vin != vin:
            self.problems.append(f"msd: names VIN {msd.vin}, but the record came from {vin}")

    def occupants(self) -> None:
        occupants = self.body.get("occupants")
        if occupants is None:
            return
        if isinstance(occupants, Mapping):
            belted, known = occupants.get("belted"), occupants.get("seats_known")
            if _int(belted, 0, 255) and _int(known, 0, 255) and belted <= known:
                self.fields.update(occupants_belted=belted, seats_known=known)
                return
        self.bad("occupants", occupants, "null or {belted, seats_known}: integers 0..255, belted <= seats_known")

    def vehicle(self) -> None:
        vehicle = self.body.get("vehicle")
        if not isinstance(vehicle, Mapping):
            self.bad("vehicle", vehicle, "a map")
            return
        for key, name in (("model", "model"), ("colour", "colour"), ("type", "vehicle_type")):
            value = vehicle.get(key)
            if isinstance(value, str) and len(value) <= 60 and value.isprintable():
                self.fields[name] = value
            else:
                self.bad(f"vehicle.{key}", value, "printable text of at most 60 characters")
        propulsion = vehicle.get("propulsion")
        if isinstance(propulsion, list) and len(propulsion) <= 8 and all(_short(p) for p in propulsion):
            self.fields["propulsion"] = tuple(propulsion)
        else:
            self.bad("vehicle.propulsion", propulsion, "a list of at most 8 short names")


def _signals(value: object, problems: list[str]) -> dict[str, bool | float]:
    if not isinstance(value, Mapping) or len(value) > _MAX_SIGNALS:
        problems.append(f"signals: got {describe(value)[:80]}; expected a map of at most {_MAX_SIGNALS} signals")
        return {}
    out: dict[str, bool | float] = {}
    for path, item in value.items():
        good_path = isinstance(path, str) and path.startswith("Vehicle.") and len(path) <= _MAX_TEXT
        if good_path and (isinstance(item, bool) or (isinstance(item, float) and math.isfinite(item))):
            out[path] = item
        else:
            expected = "expected true/false or a finite number"
            problems.append(f"signal {describe(path)[:80]}: got {describe(item)[:40]}; {expected}")
    return out


def _int(value: object, low: int, high: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _short(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 20 and value.isprintable()


def read_call_centre_cases(store: BackendStore, vin: str | None = None) -> list[CallCentreCase]:
    """Every intelligent-call case the backend stored, per vehicle in its order (the CLI's query)."""
    vins = [vin] if vin is not None else [v.vin for v in store.vehicles()]
    return [
        parse_case(record.vin, record.body, record.received)
        for v in vins
        for record in store.records(v, kind=RecordKind.ECALL.value)
        if is_case_record(record.kind, record.body)
    ]
