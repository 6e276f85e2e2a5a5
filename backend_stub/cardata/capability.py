"""CarData's capability service: per VIN, which keys are available now and how often.

The seed: "Dieser Service spezifiziert die technischen Fähigkeiten des Fahrzeugs sowie die verfügbaren
Daten und deren Übertragungsfrequenz. Der Dienst informiert immer über die Fahrzeugfähigkeiten zum
Zeitpunkt der Anfrage" — computed at request time from what the backend itself knows, never copied
from the car's last capability report:

1. Entitlements: `telematics_wire.entitlements.derive` at `now` from the newest file the vehicle
   applied (a file issued but not yet applied is not in force in the car; a term that ended since the
   car's last report has ended here too). A key's data category (the privacy menu's, from its VSS
   path) must be needed by a running service. A vehicle that never applied a file has no services
   to gate by: it sends what its privacy settings allow (a bench car), so this gate does not apply.
2. The SIM: the state the entitlements derive, and the state the car last reported (a SIM the car
   says is inactive carries nothing, whatever the backend intended). Either inactive: nothing.
3. Privacy: the backend learns the customer's privacy settings (set in the car) only from the car's
   capability report. We read from it only the privacy part — which categories the customer blocked —
   and not its availability verdict ("transmitted"). While the SIM is inactive the report hides the
   privacy setting under the SIM's reason; we then know none and block none.
4. The vehicle has the signal: the report lists every signal the vehicle has seen (a fact of its
   build), and a stored last value proves it too.

The emergency-call key is the exception: eCall records go up whatever the SIM, services and privacy
settings say (the eCall never depends on them), so it is available wherever the vehicle has an
emergency call at all (legal eCall, or the intelligent call running).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend_stub.cardata.catalogue import CardataCatalogue, CardataKey
from backend_stub.provisioning_history import FileState
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from telematics_wire.catalogue import Catalogue, Category, VehicleFit
from telematics_wire.entitlements import Entitlements, derive
from telematics_wire.sim_state import SimState

__all__ = ["PRIVACY_BLOCKED", "Capability", "capabilities", "entitlements_now", "privacy_blocked"]

# The car's reason for a category its customer blocked (tcu.telemetry.data_policy.DataPolicy.verdict;
# tests/backend_stub/cardata/test_capability.py keeps the two equal).
PRIVACY_BLOCKED = "blocked by the customer's privacy setting"
# The privacy-menu path an event-made key is filed under (telematics_wire/catalogue.toml).
_EVENT_PATHS = {"ecall": "Vehicle.Safety.CrashDetected"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Capability:
    key: str
    available: bool
    reason: str  # why not, or "available"
    min_interval_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class _Vehicle:
    """What the backend knows of one vehicle at `now`, read once per request."""

    entitlements: Entitlements
    provisioned: bool  # has applied a file: its services gate the data
    service_categories: frozenset[Category]
    reported_sim: str | None
    blocked: frozenset[Category]
    seen_signals: frozenset[str]


def privacy_blocked(report: Mapping[str, Any] | None) -> frozenset[Category]:
    """The categories a capability report says the customer blocked (its privacy part only)."""
    if report is None or not isinstance(report.get("categories"), dict):
        return frozenset()
    blocked = set()
    for name, entry in report["categories"].items():
        if isinstance(entry, dict) and entry.get("reason") == PRIVACY_BLOCKED and name in Category._value2member_map_:
            blocked.add(Category(name))
    return frozenset(blocked)


def _reported_signals(report: Mapping[str, Any] | None) -> frozenset[str]:
    if report is None or not isinstance(report.get("categories"), dict):
        return frozenset()
    return frozenset(
        path
        for entry in report["categories"].values()
        if isinstance(entry, dict) and isinstance(entry.get("signals"), list)
        for path in entry["signals"]
        if isinstance(path, str)
    )


def entitlements_now(vin: str, now: datetime, provisioning: ProvisioningStore) -> tuple[Entitlements, bool]:
    """What the vehicle may do at `now` by the newest file it applied, and whether it applied any."""
    applied = [file for file in provisioning.files(vin) if file.state is FileState.APPLIED]
    newest = max(applied, key=lambda file: file.version) if applied else None
    entitlements = derive(
        None if newest is None else newest.contents,
        legal_ecall_equipped=provisioning.legal_ecall(vin),
        now=now,
        catalogue=_vehicle_catalogue(vin, provisioning),
    )
    return entitlements, newest is not None


def _vehicle_catalogue(vin: str, provisioning: ProvisioningStore) -> Catalogue:
    """The service catalogue as this vehicle's brand reads it (which services a code brings)."""
    return provisioning.catalogue.for_vehicle(VehicleFit(brand=provisioning.vehicle(vin).brand))


def _vehicle(vin: str, now: datetime, provisioning: ProvisioningStore, records: BackendStore) -> _Vehicle:
    entitlements, provisioned = entitlements_now(vin, now, provisioning)
    stored = provisioning.capabilities(vin)
    report = None if stored is None else stored.report
    sim = None if report is None else report.get("sim")
    return _Vehicle(
        entitlements=entitlements,
        provisioned=provisioned,
        service_categories=entitlements.categories(_vehicle_catalogue(vin, provisioning)),
        reported_sim=sim if isinstance(sim, str) else None,
        blocked=privacy_blocked(report),
        seen_signals=_reported_signals(report) | {value.path for value in records.last_values(vin)},
    )


def _verdict(entry: CardataKey, vehicle: _Vehicle, privacy: Category, *, delivered: bool) -> str | None:
    """None when the key is available; else why not."""
    entitlements = vehicle.entitlements
    if entry.event == "ecall":
        if entitlements.legal_ecall or entitlements.intelligent_ecall:
            return None
        return "the vehicle has no emergency call: neither legal eCall nor the intelligent call running"
    inactive = entitlements.inactive_reason()
    if inactive is not None:
        return inactive
    if vehicle.reported_sim is not None and SimState(vehicle.reported_sim) is not SimState.ACTIVE:
        return f"the vehicle reports its SIM {vehicle.reported_sim}: it transmits no telematics data"
    if vehicle.provisioned and privacy not in vehicle.service_categories:
        return f"no running service uses {privacy.label} ({privacy.value})"
    if privacy in vehicle.blocked:
        return f"the customer blocked {privacy.label} ({privacy.value}) in the vehicle's privacy settings"
    if not delivered and entry.signal is not None and entry.signal not in vehicle.seen_signals:
        return f"this vehicle has not delivered {entry.signal}"
    return None


def capabilities(
    vin: str,
    *,
    now: datetime,
    catalogue: CardataCatalogue,
    provisioning: ProvisioningStore,
    records: BackendStore,
    delivered: bool = False,
) -> list[Capability]:
    """Every key of the catalogue for `vin` at `now`, available or not and why, by key name.

    `delivered`: the caller holds a reading the vehicle just sent (streaming, push), which proves the
    vehicle has the signal; the rule "has not delivered" (4.) is then moot and left out."""
    vehicle = _vehicle(vin, now, provisioning, records)
    result = []
    for name, entry in sorted(catalogue.entries.items()):
        path = entry.signal if entry.signal is not None else _EVENT_PATHS[entry.event or ""]
        why = _verdict(entry, vehicle, provisioning.catalogue.category_of(path), delivered=delivered)
        result.append(
            Capability(
                key=name,
                available=why is None,
                reason="available" if why is None else why,
                min_interval_s=entry.min_interval_s,
            )
        )
    return result
