"""Baseline for the MSD codec: plain asn1tools on the same EN 15722 module, the same MSD, as a dict.

What a user of asn1tools alone would write: compile the packaged module once (with the two
wire-neutral substitutions asn1tools needs, `compilable_module_text`), then per round trip encode
the inner `MSDMessage`, wrap it in the `ECallMessage`, decode the outer message and then the inner
one. No validation beyond asn1tools' own, no conversion to or from a typed value. The bytes are the
ones our codec produces for `bench.bench_msd.MSD` (checked before timing).
"""

from __future__ import annotations

import time
from typing import Any

import asn1tools

from telematics_wire.msd import compilable_module_text

# bench.bench_msd.MSD as asn1tools' dict (v2 field names; v3 renames passengers and needs N1/N2).
_STRUCTURE: dict[str, Any] = {
    "messageIdentifier": 1,
    "control": {"automaticActivation": True, "testCall": False, "positionCanBeTrusted": True, "vehicleType": 1},
    "vehicleIdentificationNumber": {
        "isowmi": "WM9",
        "isovds": "VDSVDS",
        "isovisModelyear": "Y",
        "isovisSeqPlant": "A123456",
    },
    "vehiclePropulsionStorageType": {"gasolineTankPresent": True, "electricEnergyStorage": True},
    "timestamp": 1_714_557_600,
    "vehicleLocation": {"positionLatitude": 174_600_000, "positionLongitude": 41_400_000},
    "vehicleDirection": 45,
    "recentVehicleLocationN1": {"latitudeDelta": -12, "longitudeDelta": 30},
    "recentVehicleLocationN2": {"latitudeDelta": -10, "longitudeDelta": 28},
}
_PASSENGERS = {2: "numberOfPassengers", 3: "numberOfOccupants"}


def msd_value(version: int) -> dict[str, Any]:
    """The benchmark's MSD as the dict asn1tools encodes for `version`."""
    return {"msdStructure": {**_STRUCTURE, _PASSENGERS[version]: 2}}


def compile_spec(version: int) -> Any:
    return asn1tools.compile_string(compilable_module_text(version), "uper", numeric_enums=True)


def round_trip(spec: Any, version: int, value: dict[str, Any]) -> bytes:
    """Encode `value` as an ECallMessage and decode it back; returns the wire bytes."""
    inner = spec.encode("MSDMessage", value)
    data = bytes(spec.encode("ECallMessage", {"msdVersion": version, "msd": inner}))
    outer = spec.decode("ECallMessage", data)
    spec.decode("MSDMessage", outer["msd"])
    return data


def asn1tools_round_trips_per_s(version: int, seconds: float) -> float:
    """Encode + decode round trips per second of plain asn1tools (UPER) on the benchmark's MSD."""
    spec = compile_spec(version)
    value = msd_value(version)
    round_trip(spec, version, value)
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            round_trip(spec, version, value)
        count += 100
    return count / (time.perf_counter() - start)
