"""MSD encode+decode throughput: `python bench/bench_msd.py [seconds]`. A measurement, not a test."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

from telematics_wire.msd import LocationDelta, Msd, MsdCodec, Propulsion, VehicleType

MSD = Msd(
    automatic_activation=True,
    test_call=False,
    position_can_be_trusted=True,
    vehicle_type=VehicleType.M1,
    vin="WM9VDSVDSYA123456",
    propulsion=Propulsion.GASOLINE | Propulsion.ELECTRIC,
    timestamp=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    latitude_mas=174_600_000,
    longitude_mas=41_400_000,
    direction=45,
    recent_n1=LocationDelta(latitude=-12, longitude=30),
    recent_n2=LocationDelta(latitude=-10, longitude=28),
    number_of_passengers=2,
)


def round_trips_per_second(codec: MsdCodec, version: int, seconds: float) -> float:
    assert codec.decode(codec.encode(MSD, version)) is not None  # also compiles the module before timing
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            codec.decode(codec.encode(MSD, version))
        count += 100
    return count / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    for form, codec in (("omitted", MsdCodec()), ("explicit", MsdCodec(explicit_propulsion_defaults=True))):
        for version in (2, 3):
            rate = round_trips_per_second(codec, version, seconds)
            print(f"MSD v{version} {form:8} form: {rate:8.0f} encode+decode round trips/s ({1e6 / rate:.0f} µs each)")


if __name__ == "__main__":
    main()
