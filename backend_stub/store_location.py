"""Where the record store lives: the backend's SQLite file (the default), or a PostgreSQL database named
by `[store] url` (`backend_stub.store_url.PostgresUrl`), which ingest workers on several hosts can share.

Only the record store (`BackendStore`: vehicles, records, epochs, last values, rejections) moves to
PostgreSQL. Provisioning, measures, accounts, invoices and the PSAP's MSDs stay in the `database` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from backend_stub.errors import BackendConfigError
from backend_stub.store import BackendStore
from backend_stub.store_url import PostgresUrl

__all__ = ["StoreSettings", "open_record_store"]


class StoreSettings(Protocol):
    """What of `BackendConfig` says where the stores are (named here: the config module imports this one)."""

    @property
    def store_url(self) -> PostgresUrl | None: ...

    @property
    def database(self) -> Path: ...


def open_record_store(config: StoreSettings, *, read_only: bool = False) -> BackendStore:
    """The configured record store: PostgreSQL when `[store] url` names one, the SQLite file otherwise.

    Raises `BackendConfigError` when the PostgreSQL driver is missing, `DatabaseError` when the server
    cannot be reached or refuses the connection."""
    if config.store_url is None:
        return BackendStore(config.database, read_only=read_only)
    try:
        from backend_stub.store_postgres import PostgresStore  # noqa: PLC0415 - psycopg is an optional extra
    except ImportError as exc:
        raise BackendConfigError(
            f"[store] url names PostgreSQL, but its driver is missing ({exc}); install tcu-sim[postgres]"
        ) from None
    # The other stores' deletions are in the SQLite file: the store's checkpoint empties its WAL too.
    return PostgresStore(config.store_url, read_only=read_only, side_file=config.database)
