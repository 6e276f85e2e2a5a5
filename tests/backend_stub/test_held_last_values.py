"""A transaction's last values are held and written folded at its commit (`backend_stub.held_last_values`):
the store must end exactly as if each record's readings were upserted one by one, whatever the batch
holds. Run on SQLite and on PostgreSQL (`open_store`), which holds its writes its own way."""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from backend_stub.held_last_values import HeldRecord, folded_rows
from backend_stub.storable import signal_problem, usable_signals
from backend_stub.store import Added, BackendStore
from telematics_wire.records import ReceivedRecord, RecordKind
from telematics_wire.strict_cbor import describe
from tests.backend_stub.conftest import OpenStore

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
PATHS = ("Vehicle.Speed", "Vehicle.Mode")
EXAMPLES = int(os.environ.get("HELD_LAST_VALUES_EXAMPLES", "40"))  # more on demand


@dataclass(frozen=True)
class Step:
    """One record of a vehicle's (0 or 1); `undone`: handled in a savepoint that then fails, so the
    batch keeps nothing of it; `read`: the last values read after it, inside the transaction."""

    vehicle: int
    epoch: bytes
    seq: int
    received_ms: int  # after NOW; not rising on purpose (a clock that steps back)
    kind: RecordKind
    signals: dict[str, Any]
    undone: bool = False
    read: bool = False


_readings = st.fixed_dictionaries(
    {},
    optional={
        path: st.one_of(
            st.builds(
                lambda value, stamp: {"v": value, "t": stamp}, st.integers(-5, 5) | st.booleans(), st.integers(0, 9)
            ),
            st.just({"v": None, "t": 1}),  # no reading: stays in the body, named as skipped
        )
        for path in PATHS
    },
)
_steps = st.builds(
    Step,
    vehicle=st.integers(0, 1),
    epoch=st.sampled_from([b"", b"A", b"B"]),  # the legacy epoch and two queues
    seq=st.integers(1, 6),  # small: duplicates and sequence numbers out of order
    received_ms=st.integers(0, 2),
    kind=st.sampled_from([RecordKind.TELEMETRY, RecordKind.TELEMETRY, RecordKind.EVENT, RecordKind.ECALL]),
    signals=_readings,
    undone=st.sampled_from([False, False, True]),
    read=st.sampled_from([False, False, True]),
)
_vins = (f"1H{number:015d}" for number in itertools.count())  # fresh vehicles for every example


class _UndoneError(Exception):
    pass


def _record(step: Step, vin: str) -> ReceivedRecord:
    return ReceivedRecord(
        vin=vin, seq=step.seq, kind=step.kind, epoch=step.epoch, created=NOW, body={"signals": step.signals}
    )


def _received(step: Step) -> datetime:
    return NOW + timedelta(milliseconds=step.received_ms)


def _rows(store: BackendStore, vins: list[str]) -> list[tuple[Any, ...]]:
    """Every column of the vehicles' last values, the VIN replaced by its place (the two sides differ) and
    the ordinal by its epoch: the rule only compares ordinals for equality, and PostgreSQL keeps an epoch
    first seen in an undone message registered (`PostgresStore`), which shifts the ordinals after it."""
    query = (
        "SELECT l.path, l.value, l.ts_ms, l.seq, e.epoch, l.received_ms FROM last_values l "
        "JOIN epochs e ON e.vin = l.vin AND e.ordinal = l.ordinal WHERE l.vin=? ORDER BY l.path"
    )
    return [
        (place, path, bytes(value), ts, seq, bytes(epoch), received)
        for place, vin in enumerate(vins)
        for path, value, ts, seq, epoch, received in store._db.execute(query, (vin,))
    ]


def _one_by_one(store: BackendStore, batches: list[list[Step]]) -> tuple[list[list[Added]], list[Any]]:
    """The reference: each record stored outside any transaction, its readings upserted at once."""
    vins = [next(_vins), next(_vins)]
    added, reads = [], []
    for batch in batches:
        added.append([])
        for step in batch:
            if not step.undone:
                added[-1].append(store.add_record(_record(step, vins[step.vehicle]), _received(step)))
            if step.read:
                reads.append(_rows(store, vins))
    return added, [*reads, _rows(store, vins)]


def _batched(store: BackendStore, batches: list[list[Step]]) -> tuple[list[list[Added]], list[Any]]:
    """Each batch in one transaction, as ingest stores it: each record in a savepoint of its own."""
    vins = [next(_vins), next(_vins)]
    added, reads = [], []
    for batch in batches:
        added.append([])
        with store.transaction():
            for step in batch:
                with contextlib.suppress(_UndoneError), store.savepoint():
                    stored = store.add_record(_record(step, vins[step.vehicle]), _received(step))
                    if step.read:  # inside the savepoint: undoing it undoes what the read wrote
                        store.last_values(vins[0])
                    if step.undone:
                        raise _UndoneError
                    added[-1].append(stored)
                if step.read:
                    store.last_values(vins[1])
                    reads.append(_rows(store, vins))
    return added, [*reads, _rows(store, vins)]


def _telemetry(epoch: bytes, seq: int, received_ms: int, speed: int) -> Step:
    return Step(0, epoch, seq, received_ms, RecordKind.TELEMETRY, {PATHS[0]: {"v": speed, "t": 0}})


def test_a_batch_moves_last_values_as_its_records_one_by_one(open_store: OpenStore, store_kind: str) -> None:
    """Random batches of two vehicles' records, mixed epochs, duplicates, sequence numbers out of order,
    received times stepping back, signals that are no reading, messages undone, reads inside the
    transaction: what each read and the end find, and what each record's `Added` says, are the same."""
    sqlite = store_kind == "sqlite"

    @settings(max_examples=EXAMPLES * (3 if sqlite else 1), deadline=None)
    @given(batches=st.lists(st.lists(_steps, max_size=12), min_size=1, max_size=3))
    # Folding across epochs: stored (A, 6); then (B, 5) and (A, 4) end at (A, 4), folding A first at B.
    @example(batches=[[_telemetry(b"A", 6, 0, 10)], [_telemetry(b"B", 5, 1, 5), _telemetry(b"A", 4, 2, 8)]])
    # Folding where the received time steps back: stored (B, r1); (A, 1, r2) takes it, (A, 2, r0) follows.
    @example(batches=[[_telemetry(b"B", 1, 1, 1)], [_telemetry(b"A", 1, 2, 2), _telemetry(b"A", 2, 0, 3)]])
    # Folding a resend into the newer record it follows: stored (A, 5); (A, 6) then (A, 3) end at 6.
    @example(batches=[[_telemetry(b"A", 5, 0, 1)], [_telemetry(b"A", 6, 0, 2), _telemetry(b"A", 3, 0, 3)]])
    def check(batches: list[list[Step]]) -> None:
        assert _batched(store, batches) == _one_by_one(store, batches)

    with contextlib.closing(open_store()) as store:
        if sqlite:
            store._db.execute("PRAGMA synchronous=OFF")  # durability is not under test; an fsync per record is
        check()


def test_the_fold_ends_where_one_by_one_ends_across_epochs(open_store: OpenStore) -> None:
    """Stored (A, seq 10); then one batch of (B, seq 5) and (A, seq 8): the later record of another
    epoch wins each time, so the value ends at A's seq 8, not at the stored seq 10."""
    speed = PATHS[0]
    with contextlib.closing(open_store()) as store:
        vin = next(_vins)
        stored = Step(0, b"A", 10, 0, RecordKind.TELEMETRY, {speed: {"v": 10.0, "t": 1}})
        store.add_record(_record(stored, vin), NOW)
        with store.transaction():
            for seq, epoch, value in ((5, b"B", 5.0), (8, b"A", 8.0)):
                step = Step(0, epoch, seq, 1, RecordKind.TELEMETRY, {speed: {"v": value, "t": 1}})
                store.add_record(_record(step, vin), _received(step))
        (last,) = store.last_values(vin)
        assert (last.value, last.seq) == (8.0, 8)


def _held(seq: int, signals: dict[str, Any], *, ordinal: int = 1, received_ms: int = 0) -> HeldRecord:
    return HeldRecord(vin="V", ordinal=ordinal, seq=seq, received_ms=received_ms, signals=signals, paths=signals.keys())


def test_a_run_of_one_vehicle_writes_each_signal_once_with_its_latest_reading() -> None:
    speed, mode = PATHS[0], PATHS[1]
    held = [
        _held(1, {speed: {"v": 1, "t": 5}, mode: {"v": "a", "t": 5}}),
        _held(2, {speed: {"v": 2, "t": 6}}),
        _held(3, {speed: {"v": 3, "t": 7}}, received_ms=1),
    ]
    assert sorted(folded_rows(held)) == [
        ("V", mode, b"aa", 5, 1, 1, 0),
        ("V", speed, b"\x03", 7, 3, 1, 1),
    ]


def test_records_out_of_order_or_of_another_epoch_are_written_in_order() -> None:
    speed = PATHS[0]
    held = [
        _held(5, {speed: {"v": 5, "t": 0}}),
        _held(4, {speed: {"v": 4, "t": 0}}),  # a resend after a newer record: a new run
        _held(9, {speed: {"v": 9, "t": 0}}, ordinal=2),  # another epoch: a new run
        _held(10, {speed: {"v": 10, "t": 0}}, ordinal=2, received_ms=-1),  # the clock stepped back: a new run
    ]
    assert [row[4] for row in folded_rows(held)] == [5, 4, 9, 10]


_odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.lists(st.text(max_size=3) | st.integers(), max_size=3),
    st.binary(max_size=2),
)
_odd_items = st.one_of(
    st.fixed_dictionaries({}, optional={"v": _odd_values, "t": _odd_values | st.integers(-1, 2**62)}),
    _odd_values,
)
_odd_paths = st.one_of(st.sampled_from(PATHS), st.text(max_size=3), st.just("x" * 257), st.just("a\0b"), st.integers())


@given(signals=st.dictionaries(_odd_paths, _odd_items, max_size=5))
def test_usable_signals_takes_what_signal_problem_takes_and_names_the_rest_alike(signals: dict[Any, Any]) -> None:
    problems = {path: signal_problem(path, item) for path, item in signals.items()}
    paths, skipped = usable_signals(signals)
    assert list(paths) == [path for path, problem in problems.items() if problem is None]
    assert skipped == tuple(
        f"signal {describe(path)}: {problem}" for path, problem in problems.items() if problem is not None
    )
