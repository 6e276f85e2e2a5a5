"""The connection the record store's queries run on, as `BackendStore` uses it: SQLite's own, or
PostgreSQL's through `backend_stub.store_postgres_connection` (same calls, `?` placeholders).

Only what the store calls is named here, so both drivers fit without a wrapper on the SQLite side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class SqlCursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> SqlCursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> SqlCursor: ...

    def close(self) -> None: ...
