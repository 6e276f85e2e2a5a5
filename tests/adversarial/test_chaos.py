"""Seeded chaos: SIGKILLs of the agent, the broker and the backend, a SIGSTOPped broker and a real 2 MB
data filesystem that fills up; then every sequence number is audited at the backend.

CI runs one short seed. On demand, any number of seeds and seconds:

    TCU_CHAOS_SEEDS=1,2,3 TCU_CHAOS_SECONDS=300 python -m pytest tests/adversarial/test_chaos.py -m chaos_long -s

or without pytest: `tcu-hil chaos --seed 1 --seed 2 --seconds 300`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend_stub.store import BackendStore
from hil.audit import audit_vehicle
from hil.chaos import ChaosRun
from hil.chaos_schedule import ACTIONS, ChaosConfig, chaos_schedule
from hil.small_disk import SmallDiskUnavailableError, fill, free, free_bytes, small_filesystem
from hil.telemetry_holes import Lifetime, telemetry_holes
from telematics_wire.records import ReceivedRecord, RecordKind
from tests.conftest import OTHER_VIN, VIN, require_mosquitto

CI_SEED = 20261123
CI_SECONDS = 30.0
LONG_SECONDS = float(os.environ.get("TCU_CHAOS_SECONDS", "0") or 0)
LONG_SEEDS = [int(seed) for seed in os.environ.get("TCU_CHAOS_SEEDS", "1").split(",") if seed.strip()]
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


# -- the schedule ------------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_schedule_and_another_seed_another() -> None:
    assert chaos_schedule(CI_SEED, CI_SECONDS) == chaos_schedule(CI_SEED, CI_SECONDS)
    assert chaos_schedule(CI_SEED, CI_SECONDS) != chaos_schedule(CI_SEED + 1, CI_SECONDS)


@pytest.mark.parametrize("seed", [CI_SEED, 1, 2, 3, 4, 5])
def test_a_short_run_tries_every_fault_and_never_two_at_once_on_one_process(seed: int) -> None:
    schedule = chaos_schedule(seed, CI_SECONDS)
    assert {fault.action for fault in schedule} == set(ACTIONS)
    assert all(0 < fault.at_s < CI_SECONDS for fault in schedule)
    for target in (("kill_agent",), ("kill_broker", "stop_broker"), ("kill_backend",), ("fill_disk",)):
        faults = [fault for fault in schedule if fault.action in target]
        for first, second in itertools.pairwise(faults):
            assert second.at_s >= first.at_s + first.hold_s, (first, second)


# -- the audit ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BackendStore]:
    opened = BackendStore(tmp_path / "backend.sqlite3")
    opened.enroll(VIN, bytes(32), T0)
    opened.enroll(OTHER_VIN, bytes(32), T0)
    yield opened
    opened.close()


def _add(
    store: BackendStore, seq: int, kind: RecordKind = RecordKind.TELEMETRY, *, vin: str = VIN, **body: object
) -> None:
    created = T0 + timedelta(seconds=seq)
    store.add_record(ReceivedRecord(vin=vin, seq=seq, kind=kind, created=created, body=body or {"n": seq}), created)


def _overflow(store: BackendStore, seq: int, dropped_seqs: object, **more: object) -> None:
    _add(store, seq, RecordKind.EVENT, type="queue_overflow", dropped=0, dropped_seqs=dropped_seqs, **more)


def test_every_seq_stored_once_passes(store: BackendStore) -> None:
    for seq in range(1, 11):
        _add(store, seq)
    result = audit_vehicle(store, VIN, issued_through=10)
    assert result.ok, result.describe()
    assert (result.highest, result.stored) == (10, 10)
    assert "none lost, none twice" in result.describe()


def test_a_gap_no_overflow_event_names_is_a_loss(store: BackendStore) -> None:
    for seq in (1, 2, 5, 6, 9):
        _add(store, seq)
    result = audit_vehicle(store, VIN)
    assert not result.ok
    assert result.missing == [[3, 4], [7, 8]]
    assert "LOST 4 seq(s)" in result.describe()


def test_a_gap_named_by_a_queue_overflow_event_is_explained(store: BackendStore) -> None:
    for seq in (1, 2, 5, 6):
        _add(store, seq)
    _overflow(store, 7, [[3, 4]])
    result = audit_vehicle(store, VIN)
    assert result.ok, result.describe()
    assert result.dropped == [[3, 4]]
    assert result.overflow_events == 1


def test_records_lost_after_the_last_one_stored_count_when_the_vehicle_says_how_far_it_got(
    store: BackendStore,
) -> None:
    for seq in range(1, 6):
        _add(store, seq)
    assert audit_vehicle(store, VIN).ok
    result = audit_vehicle(store, VIN, issued_through=8)
    assert result.missing == [[6, 8]]


def test_an_overflow_event_naming_a_stored_record_is_a_false_report(store: BackendStore) -> None:
    for seq in range(1, 5):
        _add(store, seq)
    _overflow(store, 5, [[2, 3]])
    result = audit_vehicle(store, VIN)
    assert not result.ok
    assert result.named_but_stored == [[2, 3]]
    assert result.missing == []


def test_one_record_stored_under_two_seqs_is_stored_twice(store: BackendStore) -> None:
    """What a queue that re-seals records it already committed would produce: seq 4 is seq 2 again."""
    _add(store, 1)
    _add(store, 2)
    _add(store, 3)
    created = T0 + timedelta(seconds=2)
    store.add_record(ReceivedRecord(vin=VIN, seq=4, kind=RecordKind.TELEMETRY, created=created, body={"n": 2}), created)
    result = audit_vehicle(store, VIN)
    assert not result.ok
    assert result.duplicates == [[2, 4]]
    assert "STORED TWICE 1 record(s)" in result.describe()


def test_unconfirmed_seqs_explain_a_gap_and_may_be_stored(store: BackendStore) -> None:
    """Dropped after they were sent: the backend may or may not have them, both are right."""
    for seq in (1, 2, 4, 6):
        _add(store, seq)
    _overflow(store, 7, [[5, 5]], unconfirmed_seqs=[[2, 3]])
    result = audit_vehicle(store, VIN)
    assert result.ok, result.describe()
    assert result.dropped == [[3, 3], [5, 5]]
    assert result.named_but_stored == []


def test_records_dropped_before_numbering_are_counted(store: BackendStore) -> None:
    _add(store, 1)
    _overflow(store, 2, [], unnumbered=40, unnumbered_span_ms=[1000, 1800])
    _overflow(store, 3, [], unnumbered=2, unnumbered_span_ms=[5000, 5020])
    result = audit_vehicle(store, VIN)
    assert result.ok, result.describe()
    assert result.unnumbered == 42
    assert result.unnumbered_spans_ms == [[1000, 1800], [5000, 5020]]
    assert "42 more dropped before numbering" in result.describe()


@pytest.mark.parametrize(
    "more",
    [
        {"unconfirmed_seqs": [[2, 1]]},
        {"unnumbered": True, "unnumbered_span_ms": [1, 2]},
        {"unnumbered": 3, "unnumbered_span_ms": [5, 2]},
        {"unnumbered": 3},
    ],
    ids=["unconfirmed-reversed", "unnumbered-bool", "span-reversed", "span-missing"],
)
def test_an_unreadable_notice_field_makes_the_notice_unreadable(store: BackendStore, more: dict[str, object]) -> None:
    _add(store, 1)
    _overflow(store, 2, [], **more)
    assert audit_vehicle(store, VIN).malformed_overflow == [2]


def test_two_identical_snapshots_in_one_tick_are_not_a_duplicate_but_the_same_event_twice_is(
    store: BackendStore,
) -> None:
    created = T0 + timedelta(seconds=1)
    for seq in (1, 2):
        store.add_record(
            ReceivedRecord(vin=VIN, seq=seq, kind=RecordKind.TELEMETRY, created=created, body={"v": 1}), created
        )
    for seq in (3, 4):
        store.add_record(
            ReceivedRecord(vin=VIN, seq=seq, kind=RecordKind.EVENT, created=created, body={"type": "door"}), created
        )
    assert audit_vehicle(store, VIN).duplicates == [[3, 4]]


@pytest.mark.parametrize(
    "dropped_seqs",
    [[[1, True]], [[3, 2]], [[1, 2**64]], "1-2", [[1, 2, 3]], [[0, 1]]],
    ids=["bool", "reversed", "huge", "text", "triple", "zero"],
)
def test_an_unreadable_overflow_event_is_named_not_trusted(store: BackendStore, dropped_seqs: object) -> None:
    _add(store, 1)
    _overflow(store, 3, dropped_seqs)
    result = audit_vehicle(store, VIN)
    assert result.malformed_overflow == [3]
    assert result.missing == [[2, 2]]  # nothing the event says is believed


def test_another_vehicle_is_audited_apart(store: BackendStore) -> None:
    _add(store, 1)
    _add(store, 2)
    _add(store, 1, vin=OTHER_VIN)
    _add(store, 3, vin=OTHER_VIN)
    assert audit_vehicle(store, VIN).ok
    assert audit_vehicle(store, OTHER_VIN).missing == [[2, 2]]


# -- holes in time (records that never got a sequence number) ----------------------------------


def _snapshots(start: float, end: float, first_seq: int = 1, every: float = 0.02) -> list[tuple[float, int]]:
    count = int((end - start) / every)
    return [(start + i * every, first_seq + i) for i in range(count)]


def test_telemetry_missing_while_the_agent_ran_is_a_hole() -> None:
    snapshots = _snapshots(101, 110) + _snapshots(115, 130, first_seq=1000)
    holes = telemetry_holes(
        snapshots,
        [Lifetime(start=100, end=130, ended_by="stop")],
        dropped=set(),
        disk_full=[],
        hole_s=3,
        startup_grace_s=6,
    )
    assert [(hole.where, hole.explained) for hole in holes] == [("between snapshots", None)]
    assert holes[0].seconds == pytest.approx(5, abs=0.1)


def test_a_hole_over_seqs_dropped_by_policy_is_explained() -> None:
    snapshots = _snapshots(101, 110) + _snapshots(115, 130, first_seq=1000)
    holes = telemetry_holes(
        snapshots,
        [Lifetime(start=100, end=130, ended_by="stop")],
        dropped={700},
        disk_full=[],
        hole_s=3,
        startup_grace_s=6,
    )
    assert [hole.explained for hole in holes] == ["dropped by policy"]


def test_a_hole_where_records_were_dropped_before_numbering_is_explained() -> None:
    snapshots = _snapshots(101, 110) + _snapshots(115, 130, first_seq=451)
    holes = telemetry_holes(
        snapshots,
        [Lifetime(start=100, end=130, ended_by="stop")],
        dropped=set(),
        disk_full=[],
        hole_s=3,
        startup_grace_s=6,
        unnumbered=[(110.5, 114.5)],
    )
    assert [hole.explained for hole in holes] == ["dropped before numbering, counted in an overflow notice"]


def test_records_in_memory_lost_at_a_sigkill_are_excused_only_on_a_full_disk() -> None:
    snapshots = _snapshots(101, 110)
    life = [Lifetime(start=100, end=118, ended_by="SIGKILL")]
    excused = telemetry_holes(snapshots, life, dropped=set(), disk_full=[(109, 117)], hole_s=3, startup_grace_s=6)
    assert [hole.explained for hole in excused] == ["held in memory on a full disk at the SIGKILL"]
    stalled = telemetry_holes(snapshots, life, dropped=set(), disk_full=[], hole_s=3, startup_grace_s=6)
    assert [(hole.where, hole.explained) for hole in stalled] == [("before SIGKILL", None)]


def test_an_agent_that_never_collects_after_start_is_a_hole() -> None:
    holes = telemetry_holes(
        [], [Lifetime(start=100, end=120, ended_by="stop")], dropped=set(), disk_full=[], hole_s=3, startup_grace_s=6
    )
    assert [hole.where for hole in holes] == ["after start"]


# -- the small disk ----------------------------------------------------------------------------


def test_ballast_fills_a_real_small_filesystem_and_frees_it(tmp_path: Path) -> None:
    try:
        with small_filesystem(tmp_path / "disk", 256 * 1024) as disk:
            assert fill(disk) > 200 * 1024
            assert free_bytes(disk) == 0
            with pytest.raises(OSError, match="No space left"):
                (disk / "one-more").write_bytes(b"x" * 4096)
            free(disk)
            assert free_bytes(disk) == 256 * 1024
    except SmallDiskUnavailableError as exc:
        pytest.skip(str(exc))
    assert not os.path.ismount(tmp_path / "disk")


# -- the chaos runs ----------------------------------------------------------------------------


async def _chaos(tmp_path: Path, settings: ChaosConfig) -> None:
    require_mosquitto()
    try:
        report = await ChaosRun(settings, tmp_path / "chaos", on_line=print).run()
    except SmallDiskUnavailableError as exc:
        pytest.skip(f"chaos needs a real 2 MB filesystem: {exc}")
    print(report.describe())
    assert report.ok, "\n" + report.describe() + f"\nlogs: {tmp_path / 'chaos'}"


@pytest.mark.mosquitto
@pytest.mark.timeout(CI_SECONDS + 150)
async def test_seeded_chaos_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    await _chaos(tmp_path, ChaosConfig(seed=CI_SEED, seconds=CI_SECONDS, drain_timeout_s=30))


@pytest.mark.mosquitto
@pytest.mark.chaos_long
@pytest.mark.timeout(LONG_SECONDS + 300)
@pytest.mark.skipif(not LONG_SECONDS, reason="on demand: set TCU_CHAOS_SECONDS (and TCU_CHAOS_SEEDS=1,2,...)")
@pytest.mark.parametrize("seed", LONG_SEEDS)
async def test_long_seeded_chaos(tmp_path: Path, seed: int) -> None:
    await _chaos(tmp_path, ChaosConfig(seed=seed, seconds=LONG_SECONDS))
