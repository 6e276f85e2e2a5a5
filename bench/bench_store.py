"""Records stored per second, the record store on PostgreSQL against SQLite: `python -m bench.bench_store
[records]`. A measurement, not a test.

Both through the same interface, one transaction per batch of 100 as the backend's ingest commits a
batch: `add_record` per record, and `add_records` per batch (PostgreSQL: one INSERT of the whole batch
instead of a round trip per record). The same records (50 vehicles, 12 signals each, 712-byte bodies)
and the same durability: SQLite WAL with `synchronous=FULL`, PostgreSQL with fsync and
`synchronous_commit=on` (its defaults) — every commit on disk before it returns. PostgreSQL runs on
this machine (`hil.postgres.PostgresServer`, loopback TCP): a remote server adds a network round trip
per statement. Interleaved three times, each round on a fresh database; the ratio is of the medians.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backend_stub.store import BackendStore
from bench.comparison import Better, Figures, interleave, ratio
from hil.postgres import PostgresServer
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis

VEHICLES = 50
BATCH = 100
START = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
_SIGNALS = (
    "Vehicle.Speed",
    "Vehicle.TraveledDistance",
    "Vehicle.CurrentLocation.Latitude",
    "Vehicle.CurrentLocation.Longitude",
    "Vehicle.Powertrain.CombustionEngine.Speed",
    "Vehicle.Powertrain.CombustionEngine.ECT",
    "Vehicle.Powertrain.FuelSystem.RelativeLevel",
    "Vehicle.LowVoltageBattery.CurrentVoltage",
    "Vehicle.Exterior.AirTemperature",
    "Vehicle.Chassis.Accelerator.PedalPosition",
    "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen",
    "Vehicle.Body.Lights.Beam.Low.IsOn",
)

Opener = Callable[[], BackendStore]


def vin_of(index: int) -> str:
    return f"WBA{index:014d}"


def fleet_records(count: int) -> list[ReceivedRecord]:
    """`count` telemetry records, round robin over the vehicles, each vehicle's in sequence order."""
    records = []
    for index in range(count):
        vehicle, seq = index % VEHICLES, index // VEHICLES + 1
        at = START + timedelta(seconds=seq)
        stamp = to_millis(at)
        signals = {path: {"v": (seq * 7 + offset) % 250 + 0.5, "t": stamp} for offset, path in enumerate(_SIGNALS)}
        signals["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"] = {"v": seq % 2 == 0, "t": stamp}
        body = {"signals": signals}
        vin = vin_of(vehicle)
        records.append(
            ReceivedRecord(vin=vin, seq=seq, kind=RecordKind.TELEMETRY, epoch=b"e" * 16, created=at, body=body)
        )
    return records


def records_per_second(open_store: Opener, records: list[ReceivedRecord], *, batched: bool = False) -> float:
    """Store `records` in batches of `BATCH` on a fresh store, by `add_records` when `batched`, else one
    `add_record` each; records/s, commits included."""
    with contextlib.closing(open_store()) as store:
        for vehicle in range(VEHICLES):
            store.enroll(vin_of(vehicle), b"k" * 32, START)
        start = time.perf_counter()
        for first in range(0, len(records), BATCH):
            with store.transaction():
                if batched:
                    store.add_records(records[first : first + BATCH], START)
                else:
                    for record in records[first : first + BATCH]:
                        store.add_record(record, START)
        elapsed = time.perf_counter() - start
        assert store.count(vin_of(0)) == len(records) // VEHICLES, "every record stored once"
    return len(records) / elapsed


def sqlite_opener(directory: Path) -> Opener:
    return lambda: BackendStore(directory / f"{uuid.uuid4().hex}.sqlite3")


def postgres_opener(server: PostgresServer) -> Opener:
    """A fresh schema on `server` per store opened: each round starts from empty tables."""
    import psycopg  # noqa: PLC0415 - the optional extra

    from backend_stub.store_postgres import PostgresStore  # noqa: PLC0415
    from backend_stub.store_url import PostgresUrl  # noqa: PLC0415

    def opened() -> BackendStore:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        return PostgresStore(PostgresUrl(server.url(options=f"-csearch_path%3D{schema}")))

    return opened


CONTENDERS = ("PostgreSQL batched", "SQLite batched", "PostgreSQL one by one", "SQLite one by one")


async def compare(count: int = 5000) -> dict[str, Figures]:
    """Records/s of each of `CONTENDERS`, interleaved three times."""
    records = fleet_records(count)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        async with PostgresServer(durable=True) as server:
            postgres, sqlite = postgres_opener(server), sqlite_opener(Path(directory))

            def contender(opener: Opener, *, batched: bool) -> Callable[[], Awaitable[float]]:
                async def measured() -> float:
                    return await asyncio.to_thread(records_per_second, opener, records, batched=batched)

                return measured

            samples = await interleave(
                [
                    contender(postgres, batched=True),
                    contender(sqlite, batched=True),
                    contender(postgres, batched=False),
                    contender(sqlite, batched=False),
                ]
            )
    return {name: Figures.of(values) for name, values in zip(CONTENDERS, samples, strict=True)}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    figures = asyncio.run(compare(count))
    print(f"records stored, {count} records of {VEHICLES} vehicles, batches of {BATCH}, every commit durable")
    for name, measured in figures.items():
        shown = ", ".join(f"{value:,.0f}" for value in measured.values)
        print(f"  {name:<21} {measured.median:>9,.0f} records/s median, {measured.min:,.0f} min  ({shown})")
    for way in ("batched", "one by one"):
        shown = ratio(figures[f"PostgreSQL {way}"], figures[f"SQLite {way}"], Better.HIGHER)
        print(f"  ratio PostgreSQL/SQLite, {way}: {shown:.2f} (medians)")
    gain = ratio(figures["PostgreSQL batched"], figures["PostgreSQL one by one"], Better.HIGHER)
    print(f"  PostgreSQL batched / one by one: {gain:.2f}")


if __name__ == "__main__":
    main()
