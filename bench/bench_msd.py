"""MSD encode+decode throughput: `python -m bench.bench_msd [seconds]`. A measurement, not a test.

Ours (`MsdCodec`: `Msd` in, validated, encoded, decoded, validated, `Msd` out) against plain asn1tools
on the same module and the same MSD as a dict (bench/baseline_asn1tools.py), interleaved three times;
the ratio is of the medians (and of the minima) of the rates.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.baseline_asn1tools import asn1tools_round_trips_per_s
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


@dataclass(frozen=True, slots=True)
class Comparison:
    """Round trips/s of ours and of plain asn1tools, one figure per interleaved round."""

    ours: tuple[float, ...]
    baseline: tuple[float, ...]

    @property
    def ratio_median(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.baseline)

    @property
    def ratio_min(self) -> float:
        return min(self.ours) / min(self.baseline)


def compare(version: int = 2, seconds: float = 1.0, rounds: int = 3) -> Comparison:
    """Ours and asn1tools on the same MSD, interleaved `rounds` times (the machine is shared and noisy)."""
    codec = MsdCodec()
    ours: list[float] = []
    baseline: list[float] = []
    for _ in range(rounds):
        ours.append(round_trips_per_second(codec, version, seconds))
        baseline.append(asn1tools_round_trips_per_s(version, seconds))
    return Comparison(tuple(ours), tuple(baseline))


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    for version in (2, 3):
        result = compare(version, seconds)
        print(
            f"MSD v{version} encode+decode: ours min/median {min(result.ours):,.0f} / "
            f"{statistics.median(result.ours):,.0f} /s, asn1tools {min(result.baseline):,.0f} / "
            f"{statistics.median(result.baseline):,.0f} /s, ratio {result.ratio_min:.2f} / {result.ratio_median:.2f}"
        )
    for form, codec in (("omitted", MsdCodec()), ("explicit", MsdCodec(explicit_propulsion_defaults=True))):
        for version in (2, 3):
            rate = round_trips_per_second(codec, version, seconds)
            print(f"MSD v{version} {form:8} form: {rate:8.0f} encode+decode round trips/s ({1e6 / rate:.0f} µs each)")


if __name__ == "__main__":
    main()
