"""A PostgreSQL connection the record store's SQL runs on unchanged: `?` placeholders become psycopg's
`%s`, and the tables are created on first connect (`backend_stub.store_postgres_schema`).

The connection is in autocommit mode: `PostgresStore` opens its transactions itself (`BEGIN`,
`SAVEPOINT`, `COMMIT`), as the SQLite store does, so a read outside a transaction sees the latest
commit of every worker. Durability is PostgreSQL's default: `synchronous_commit=on`, a commit returns
once its WAL is flushed — as strong as SQLite's `synchronous=FULL`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from backend_stub.errors import DatabaseError
from backend_stub.store_postgres_schema import create_tables
from backend_stub.store_url import PostgresUrl

CONNECT_TIMEOUT_S = 10


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    # The store's statements hold no literal `?` or `%`: every value is a parameter.
    return sql.replace("?", "%s")


class PostgresConnection:
    """psycopg's connection with SQLite's calling convention (`execute(sql, params)` → cursor)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.raw = connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(_placeholders(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(_placeholders(sql), parameters)  # one pipeline, not a round trip per row
        return cursor

    def close(self) -> None:
        self.raw.close()


def connect(url: PostgresUrl, *, read_only: bool = False) -> PostgresConnection:
    """A connection to the record store's database, its tables created; `read_only` refuses writes.

    Raises `DatabaseError` naming the server (never the password) when it cannot be reached."""
    try:
        raw = psycopg.connect(url.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to the record store at {url.shown}: {_first_line(exc)}") from None
    try:
        create_tables(raw)
        if read_only:  # a reader beside the running backend: a write is an error, as in SQLite
            raw.execute("SET default_transaction_read_only = on")
    except psycopg.Error as exc:
        raw.close()
        raise DatabaseError(f"cannot prepare the record store at {url.shown}: {_first_line(exc)}") from exc
    return PostgresConnection(raw)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
