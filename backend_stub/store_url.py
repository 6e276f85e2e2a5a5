"""`[store] url`: the PostgreSQL database of the record store (`backend_stub.store_location`).

A PostgreSQL URL may hold a password (`postgresql://user:secret@host/db`, or `?password=` in its query):
`PostgresUrl` never shows it — its `repr` and `str` are the URL without password and query — so a log
line or a traceback that names the store leaks nothing. Prefer no password in the URL at all: libpq
reads `PGPASSWORD` or `~/.pgpass`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from backend_stub.errors import BackendConfigError

SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    url: str = field(repr=False)  # libpq's connection URI, secret included: handed to the driver only

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise BackendConfigError(f"[store] url is not a URL: {exc}") from None
        if parts.scheme not in SCHEMES:
            raise BackendConfigError(
                f"[store] url must start with postgresql:// (got {parts.scheme or 'no scheme'!r}); "
                "leave [store] out to keep the records in the SQLite file"
            )

    @property
    def has_password(self) -> bool:
        parts = urlsplit(self.url)
        return parts.password is not None or "password=" in parts.query

    @property
    def shown(self) -> str:
        """The URL as logs and errors name it: no password, no query (which may carry one)."""
        parts = urlsplit(self.url)
        user = "" if parts.username is None else f"{parts.username}@"
        host = parts.hostname or ""
        port = "" if parts.port is None else f":{parts.port}"
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"PostgresUrl({self.shown!r})"
