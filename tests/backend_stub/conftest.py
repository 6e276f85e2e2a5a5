"""The record store under test, SQLite or PostgreSQL: `store_kind` parametrizes every test that opens
its store through `open_store`, so the store's behaviour is checked on both.

One PostgreSQL server per session (`postgres_server`, ~5 s to initdb and start), a schema of its own
per test (`postgres_url`: milliseconds, where CREATE DATABASE would copy a template). Without the
server binaries or psycopg the PostgreSQL cases skip with the reason, except on CI, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend_stub.store import BackendStore
from backend_stub.store_url import PostgresUrl
from hil.postgres import PostgresServer, postgres_bin_dir

TEST_DATABASE = "tcu_tests"

OpenStore = Callable[[], BackendStore]


def require_postgres() -> None:
    missing = None
    if postgres_bin_dir() is None:
        missing = "the PostgreSQL server is not installed (apt-get install postgresql)"
    else:
        try:
            import psycopg  # noqa: F401, PLC0415 - optional extra
        except ImportError:
            missing = "psycopg is not installed (pip install tcu-sim[postgres])"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing + ": CI must test the PostgreSQL record store")
        pytest.skip(missing)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require_postgres()
    with PostgresServer(durable=False) as server:  # its data dies with it: no fsync
        server.create_database(TEST_DATABASE)
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[PostgresUrl]:
    """A fresh, empty schema: the store's tables are created in it on first connect."""
    import psycopg  # noqa: PLC0415 - optional extra

    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = postgres_server.url(TEST_DATABASE)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    yield PostgresUrl(postgres_server.url(TEST_DATABASE, options=f"-csearch_path%3D{schema}"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which record store; a test that holds for one only parametrizes `store_kind` itself."""
    return str(request.param)


@pytest.fixture
def open_store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> OpenStore:
    """Opens the test's record store, on a connection of its own each call (a second one reads what
    the first committed); the caller closes what it opened."""
    if store_kind == "sqlite":
        return lambda: BackendStore(tmp_path / "backend.sqlite3")
    from backend_stub.store_postgres import PostgresStore  # noqa: PLC0415 - optional extra

    url: PostgresUrl = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore(url, side_file=tmp_path / "backend.sqlite3")
