"""The PostgreSQL record store with several writers at once (ingest workers on several hosts), and the
`[store] url` configuration. Every other store behaviour is checked on both stores by the tests that
open theirs through `open_store` (test_ingest.py, test_retention.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from backend_stub.config import load_backend_config
from backend_stub.errors import BackendConfigError
from backend_stub.store import Added, BackendStore
from backend_stub.store_location import open_record_store
from backend_stub.store_url import PostgresUrl
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis
from tests.backend_stub.conftest import require_postgres
from tests.conftest import OTHER_VIN, VIN

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SPEED = "Vehicle.Speed"
_T = TypeVar("_T")


def _record(seq: int, speed: float, *, vin: str = VIN, epoch: bytes = b"q1", path: str = SPEED) -> ReceivedRecord:
    body = {"signals": {path: {"v": speed, "t": to_millis(NOW)}}}
    return ReceivedRecord(vin=vin, seq=seq, kind=RecordKind.TELEMETRY, epoch=epoch, created=NOW, body=body)


@pytest.fixture
def workers(postgres_url: PostgresUrl) -> Iterator[tuple[BackendStore, BackendStore]]:
    """Two workers' stores on one database, each on its own connection."""
    from backend_stub.store_postgres import PostgresStore  # noqa: PLC0415 - optional extra

    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def _waiting_on_a_lock(postgres_url: PostgresUrl, store: BackendStore) -> bool:
    """Whether `store`'s connection waits for a row lock another transaction holds."""
    import psycopg  # noqa: PLC0415 - optional extra

    pid = store._pg.raw.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(postgres_url.url, autocommit=True) as probe:
        row = probe.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def _blocked(postgres_url: PostgresUrl, store: BackendStore, job: Future[_T]) -> None:
    deadline = time.monotonic() + 10
    while not _waiting_on_a_lock(postgres_url, store):
        assert not job.done(), f"finished without waiting: {job.result()}"
        assert time.monotonic() < deadline, "the second worker never waited for the first one's lock"
        time.sleep(0.01)


def _in_transaction(store: BackendStore, *records: ReceivedRecord) -> Callable[[], list[Added]]:
    def run() -> list[Added]:
        with store.transaction():
            return [store.add_record(record, NOW) for record in records]

    return run


@pytest.mark.postgres
@pytest.mark.parametrize("first_seq", [3, 2], ids=["newer commits first", "older commits first"])
def test_two_workers_storing_one_vehicle_at_once_keep_the_newest_last_value(
    workers: tuple[BackendStore, BackendStore], pool: ThreadPoolExecutor, postgres_url: PostgresUrl, first_seq: int
) -> None:
    """Worker A has written its last value (a read made it write it) and not committed; worker B's
    commit waits for A's row lock, then applies the rule to the row A committed."""
    first, second = workers
    second_seq = 5 - first_seq
    with first.transaction():
        first.add_record(_record(first_seq, float(first_seq)), NOW)
        assert first.last_value(VIN, SPEED) == float(first_seq)  # written now: A holds the row
        job = pool.submit(_in_transaction(second, _record(second_seq, float(second_seq))))
        _blocked(postgres_url, second, job)
    assert job.result()[0].new
    assert first.last_value(VIN, SPEED) == second.last_value(VIN, SPEED) == 3.0  # seq 3 is newer in q1
    assert first.seqs(VIN) == [2, 3]


@pytest.mark.postgres
def test_one_record_delivered_to_two_workers_at_once_is_stored_once(
    workers: tuple[BackendStore, BackendStore], pool: ThreadPoolExecutor, postgres_url: PostgresUrl
) -> None:
    """A resend crossing the original: the second insert waits for the first's commit, then is a duplicate."""
    first, second = workers
    with first.transaction():
        assert first.add_record(_record(7, 1.0), NOW).new
        job = pool.submit(_in_transaction(second, _record(7, 1.0)))
        _blocked(postgres_url, second, job)
    [added] = job.result()
    assert not added.new
    assert second.seqs(VIN) == [7]


@pytest.mark.postgres
def test_a_commit_locks_last_values_in_vehicle_order_whatever_order_the_batch_had(
    workers: tuple[BackendStore, BackendStore], pool: ThreadPoolExecutor, postgres_url: PostgresUrl
) -> None:
    """Every worker locks in (vin, path) order, so two batches holding the same vehicles in opposite
    orders cannot deadlock. Seen here: with OTHER_VIN's row held elsewhere, a batch of (OTHER_VIN, VIN)
    has locked VIN's row ("WMW..." < "WVW...") before it waits."""
    import psycopg  # noqa: PLC0415 - optional extra

    first, second = workers
    with first.transaction():
        first.add_record(_record(1, 0.0, vin=VIN), NOW)
        first.add_record(_record(1, 0.0, vin=OTHER_VIN), NOW)
    assert VIN < OTHER_VIN
    with psycopg.connect(postgres_url.url, autocommit=True) as holder, holder.transaction():
        holder.execute("SELECT 1 FROM last_values WHERE vin = %s FOR UPDATE", (OTHER_VIN,))
        job = pool.submit(_in_transaction(second, _record(2, 2.0, vin=OTHER_VIN), _record(2, 2.0, vin=VIN)))
        _blocked(postgres_url, second, job)
        probe = psycopg.connect(postgres_url.url, autocommit=True)
        with contextlib.closing(probe), pytest.raises(psycopg.errors.LockNotAvailable):  # the batch holds it
            probe.execute("SELECT 1 FROM last_values WHERE vin = %s FOR UPDATE NOWAIT", (VIN,))
    assert [added.new for added in job.result()] == [True, True]
    assert first.last_value(VIN, SPEED) == first.last_value(OTHER_VIN, SPEED) == 2.0


@pytest.mark.postgres
def test_two_workers_seeing_new_epochs_at_once_agree_on_their_order(
    workers: tuple[BackendStore, BackendStore], pool: ThreadPoolExecutor
) -> None:
    first, second = workers
    barrier = threading.Barrier(2)

    def see(store: BackendStore, epoch: bytes) -> Added:
        with store.transaction():
            barrier.wait(timeout=10)
            return store.add_record(_record(1, 1.0, epoch=epoch), NOW)

    jobs = [pool.submit(see, first, b"q1"), pool.submit(see, second, b"q2")]
    assert all(job.result().new_epoch for job in jobs)
    assert sorted(epoch.ordinal for epoch in first.epochs(VIN)) == [1, 2]
    # The same epoch, seen by the second worker after the first registered it: known, not new.
    with second.transaction():
        assert not second.add_record(_record(2, 1.0, epoch=b"q1"), NOW).new_epoch


@pytest.mark.postgres
def test_a_new_epoch_in_a_batch_that_rolled_back_is_new_again_on_the_resend(
    workers: tuple[BackendStore, BackendStore],
) -> None:
    """As with SQLite: the epoch's first record counts it as new when it is finally stored."""
    store, _ = workers

    def failing_batch() -> None:
        with store.transaction():
            assert store.add_record(_record(1, 1.0, epoch=b"q9"), NOW).new_epoch
            raise RuntimeError("the batch failed after the record")

    with pytest.raises(RuntimeError):
        failing_batch()
    with store.transaction():
        assert store.add_record(_record(1, 1.0, epoch=b"q9"), NOW).new_epoch
    with store.transaction():
        assert not store.add_record(_record(2, 1.0, epoch=b"q9"), NOW).new_epoch


@pytest.mark.postgres
def test_a_lost_connection_fails_the_batch_and_the_next_one_connects_again(
    workers: tuple[BackendStore, BackendStore], postgres_url: PostgresUrl
) -> None:
    import psycopg  # noqa: PLC0415 - optional extra

    from backend_stub.errors import DatabaseError  # noqa: PLC0415

    store, _ = workers
    pid = store._pg.raw.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(postgres_url.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(DatabaseError), store.transaction():
        store.add_record(_record(1, 1.0), NOW)
    with store.transaction():
        assert store.add_record(_record(1, 1.0), NOW).new


@pytest.mark.postgres
def test_a_second_backend_on_one_record_store_is_refused_and_ingest_workers_are_not(
    workers: tuple[BackendStore, BackendStore], postgres_url: PostgresUrl
) -> None:
    """Its provisioning, measures and accounts would live in a SQLite file of its own and contradict the
    first backend's: refused at start. An ingest worker never claims, so it shares the store."""
    from backend_stub.store_postgres import PostgresStore  # noqa: PLC0415 - optional extra

    backend, _ = workers
    backend.claim_services()
    with contextlib.closing(PostgresStore(postgres_url)) as second:
        with pytest.raises(BackendConfigError, match="another backend already runs its services"):
            second.claim_services()
        with second.transaction():  # the worker's side: storing works all the same
            assert second.add_record(_record(1, 1.0), NOW).new
    backend.close()  # the first backend stops: its claim goes with its connection
    with contextlib.closing(PostgresStore(postgres_url)) as successor:
        successor.claim_services()


# -- configuration -------------------------------------------------------------------------------


def _config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "backend.toml"
    path.write_text(f'database = "backend.sqlite3"\n[keys]\nprivate_key = "k"\n{store}')
    path.chmod(0o600)
    return path


def test_the_store_url_is_read_and_its_password_never_shown(tmp_path: Path) -> None:
    config = load_backend_config(
        _config(tmp_path, '[store]\nurl = "postgresql://ingest:s3cret@db.example:5433/tcu?password=s3cret"\n'), env={}
    )
    assert config.store_url is not None
    assert config.store_url.url.startswith("postgresql://ingest:s3cret@")  # the driver gets it
    assert config.store_url.shown == "postgresql://ingest@db.example:5433/tcu"
    assert "s3cret" not in f"{config!r} {config.store_url} {config.store_url!r}"


def test_without_a_store_url_the_records_stay_in_the_sqlite_file(tmp_path: Path) -> None:
    config = load_backend_config(_config(tmp_path, ""), env={})
    assert config.store_url is None
    with contextlib.closing(open_record_store(config)) as store:
        assert type(store) is BackendStore


@pytest.mark.parametrize(
    ("store", "reason"),
    [
        ('[store]\nurl = "mysql://db/tcu"\n', "must start with postgresql://"),
        ('[store]\nurl = "postgresql://db:port/tcu"\n', "is not a URL"),
        ('[store]\nurl = "postgresql://db/tcu"\nuser = "x"\n', "unknown key"),
    ],
    ids=["another database", "a bad port", "an unknown key"],
)
def test_a_store_url_that_cannot_work_is_refused(tmp_path: Path, store: str, reason: str) -> None:
    with pytest.raises(BackendConfigError, match=reason):
        load_backend_config(_config(tmp_path, store), env={})


def test_a_password_in_a_config_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, '[store]\nurl = "postgresql://ingest:s3cret@db/tcu"\n')
    path.chmod(0o644)
    with pytest.raises(BackendConfigError, match=r"\[store\] url password") as refused:
        load_backend_config(path, env={})
    assert "s3cret" not in str(refused.value)


@pytest.mark.postgres
def test_an_unreachable_server_is_named_without_its_password() -> None:
    require_postgres()
    from backend_stub.errors import DatabaseError  # noqa: PLC0415
    from backend_stub.store_postgres import PostgresStore  # noqa: PLC0415 - optional extra
    from hil.broker import free_port  # noqa: PLC0415

    url = PostgresUrl(f"postgresql://tcu:s3cret@127.0.0.1:{free_port()}/tcu")
    with pytest.raises(DatabaseError, match=r"record store at postgresql://tcu@127\.0\.0\.1:\d+/tcu: ") as refused:
        PostgresStore(url)
    assert "s3cret" not in str(refused.value)
