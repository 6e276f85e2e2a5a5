"""CarData's tables in the backend's database: gcids, clients, consents, containers, transfers.

Identity: an owner is a backend account (backend_stub.accounts); CarData knows it by its **gcid**, a
UUID made on first use and kept. A **client** is a third party (insurer, fleet manager, a Home
Assistant install) the operator registers: an OAuth client_id with a name.

Consent (the seed: "nur nach vorheriger ausdrücklicher Freigabe", "jederzeit ... freigeben, ablehnen
oder eine erteilte Freigabe wieder zurückziehen"): per *active account link* of a VIN and client, a set
of keys. It lives beside `account_consents` (privacy part H's free-text recipient), not in it: a CarData
consent names a registered client and its keys, and has a history of its own. Both hang on the same
`account_links.id`, and a consent counts only while that link is active (`ended_ms IS NULL`): an owner
change or an unlink ends the link, and with it every CarData consent, in the same transaction that
ends the link, without this module being told. A new owner starts with none.

Every transfer to a client is logged (the seed's transaction report: "wann die BMW Group ... Telematikdaten
an Dritte übermittelt hat"): who, when, which vehicle, which keys, by which channel.

The store opens its own connection to the database AccountStore uses (its tables must exist: open the
AccountStore first, as the backend does).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend_stub.cardata.catalogue import CardataCatalogue, load_cardata_catalogue
from backend_stub.cardata.errors import BadRequest, Conflict, Forbidden, NotFound, quoted
from backend_stub.cardata.records import (
    CHANNELS,
    MAX_CLIENT_NAME_CHARS,
    MAX_CONTAINER_NAME_CHARS,
    MAX_CONTAINERS,
    MAX_PURPOSE_CHARS,
    Channel,
    Client,
    Container,
    Transfer,
    check_text,
    check_uuid,
)
from backend_stub.database import open_database, transaction
from backend_stub.errors import BackendConfigError
from telematics_wire.records import from_millis, to_millis

__all__ = ["CardataStore"]
_LOGGER = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS cardata_gcids (
    account TEXT PRIMARY KEY,
    gcid    TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS cardata_clients (
    client_id  TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cardata_consents (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    link_id    INTEGER NOT NULL,   -- account_links.id: counts only while that link is active
    client_id  TEXT NOT NULL,
    keys       TEXT NOT NULL,      -- JSON list of CarData keys
    granted_ms INTEGER NOT NULL,
    ended_ms   INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS cardata_consents_one_open
    ON cardata_consents (link_id, client_id) WHERE ended_ms IS NULL;
CREATE TABLE IF NOT EXISTS cardata_containers (
    container_id TEXT PRIMARY KEY,
    gcid         TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    keys         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    deleted_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS cardata_containers_owner ON cardata_containers (gcid, client_id);
CREATE TABLE IF NOT EXISTS cardata_transfers (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    gcid      TEXT NOT NULL,
    client_id TEXT NOT NULL,
    vin       TEXT NOT NULL,
    channel   TEXT NOT NULL,
    keys      TEXT NOT NULL,
    at_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cardata_transfers_gcid ON cardata_transfers (gcid, at_ms);
"""

# A consent row that counts: open, granted by `now`, on a link that is still active.
_ACTIVE_CONSENTS = (
    "FROM cardata_consents c JOIN account_links l ON l.id = c.link_id "
    "WHERE l.ended_ms IS NULL AND c.ended_ms IS NULL AND c.granted_ms <= ?"
)


def _keys(text: str) -> frozenset[str]:
    return frozenset(json.loads(text))


def _dump(keys: Iterable[str]) -> str:
    return json.dumps(sorted(keys))


class CardataStore:
    def __init__(self, path: Path, catalogue: CardataCatalogue | None = None) -> None:
        self.catalogue = catalogue or load_cardata_catalogue()
        # Told the owner's gcid after a grant or revoke commits (the backend's StreamingCredentials).
        self.consents_changed: Callable[[str], None] | None = None
        self._db = open_database(path, SCHEMA)
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "account_links" not in tables:
            self._db.close()
            raise BackendConfigError(
                f"{path}: no account tables; CarData consents hang on account links: open the AccountStore first"
            )

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db)

    # -- identities --------------------------------------------------------------------------------

    def gcid_of(self, account: str) -> str:
        """The account's gcid, made on first use and never changed."""
        row = self._db.execute("SELECT gcid FROM cardata_gcids WHERE account=?", (account,)).fetchone()
        if row is not None:
            return str(row[0])
        with transaction(self._db):
            if not self._db.execute("SELECT 1 FROM accounts WHERE account=?", (account,)).fetchone():
                raise NotFound(f"no account {quoted(account)}")
            gcid = str(uuid.uuid4())
            self._db.execute("INSERT INTO cardata_gcids VALUES (?, ?) ON CONFLICT DO NOTHING", (account, gcid))
            row = self._db.execute("SELECT gcid FROM cardata_gcids WHERE account=?", (account,)).fetchone()
        return str(row[0])

    def known_gcid(self, account: str) -> str | None:
        """The account's gcid if it has one (never makes one)."""
        row = self._db.execute("SELECT gcid FROM cardata_gcids WHERE account=?", (account,)).fetchone()
        return None if row is None else str(row[0])

    def account_of(self, gcid: str) -> str | None:
        row = self._db.execute("SELECT account FROM cardata_gcids WHERE gcid=?", (gcid,)).fetchone()
        return None if row is None else str(row[0])

    def add_client(self, name: object, now: datetime | None = None) -> Client:
        """Register a third party (the operator's step); its client_id is a new UUID."""
        name = check_text(name, what="client name", limit=MAX_CLIENT_NAME_CHARS)
        created = now or datetime.now(UTC)  # bookkeeping only: nothing decides by it
        client = Client(client_id=str(uuid.uuid4()), name=name, created=created)
        with transaction(self._db):
            self._db.execute(
                "INSERT INTO cardata_clients VALUES (?, ?, ?)", (client.client_id, name, to_millis(created))
            )
        _LOGGER.info("CarData client %s registered: %s", client.client_id, name)
        return client

    def client(self, client_id: str) -> Client | None:
        row = self._db.execute(
            "SELECT client_id, name, created_ms FROM cardata_clients WHERE client_id=?", (client_id,)
        ).fetchone()
        return None if row is None else Client(client_id=row[0], name=row[1], created=from_millis(row[2]))

    def clients(self) -> list[Client]:
        rows = self._db.execute("SELECT client_id, name, created_ms FROM cardata_clients ORDER BY created_ms")
        return [Client(client_id=c, name=n, created=from_millis(ms)) for c, n, ms in rows]

    def vehicles_of(self, gcid: str) -> list[str]:
        """The VINs linked to the gcid's account now."""
        rows = self._db.execute(
            "SELECT l.vin FROM account_links l JOIN cardata_gcids g ON g.account = l.account "
            "WHERE g.gcid=? AND l.ended_ms IS NULL ORDER BY l.vin",
            (gcid,),
        )
        return [str(row[0]) for row in rows]

    def owner_link(self, vin: str) -> tuple[int, str, datetime] | None:
        """(link id, account, linked since) of the VIN's active link."""
        row = self._db.execute(
            "SELECT id, account, linked_ms FROM account_links WHERE vin=? AND ended_ms IS NULL", (vin,)
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), from_millis(row[2]))

    # -- consent -------------------------------------------------------------------------------------

    def grant(self, vin: str, client_id: str, keys_or_categories: Iterable[object], now: datetime) -> frozenset[str]:
        """The linked owner consents to `client_id` receiving these keys (added to what it had).
        Returns the keys the consent now covers."""
        granted = self.catalogue.expand(keys_or_categories)
        if not granted:
            raise BadRequest("a consent names at least one CarData key or a category with keys")
        with transaction(self._db):
            self._known_client(client_id)
            link = self.owner_link(vin)
            if link is None:
                raise Forbidden(f"vehicle {vin} has no linked account: only its owner can consent")
            current = self._open_consent(link[0], client_id)
            keys = granted if current is None else granted | current[1]
            self._replace_consent(link[0], client_id, current, keys, now)
        _LOGGER.info("CarData consent for vehicle %s: client %s may receive %d keys", vin, client_id, len(keys))
        self._changed(link[1])
        return keys

    def revoke(
        self, vin: str, client_id: str, now: datetime, *, keys_or_categories: Iterable[object] | None = None
    ) -> frozenset[str]:
        """Withdraw consent: all of it, or only these keys. Returns the keys still consented."""
        withdrawn = None if keys_or_categories is None else self.catalogue.expand(keys_or_categories)
        with transaction(self._db):
            link = self.owner_link(vin)
            current = None if link is None else self._open_consent(link[0], client_id)
            if link is None or current is None:
                return frozenset()
            left = frozenset() if withdrawn is None else current[1] - withdrawn
            self._replace_consent(link[0], client_id, current, left, now)
        _LOGGER.info("CarData consent for vehicle %s: client %s keeps %d keys", vin, client_id, len(left))
        self._changed(link[1])
        return left

    def has_consents(self, gcid: str, now: datetime) -> bool:
        """Whether the gcid's account consents to any client on any vehicle linked now."""
        account = self.account_of(gcid)
        row = self._db.execute(f"SELECT 1 {_ACTIVE_CONSENTS} AND l.account=? LIMIT 1", (to_millis(now), account))
        return account is not None and row.fetchone() is not None

    def _changed(self, account: str) -> None:
        if self.consents_changed is not None:
            self.consents_changed(self.gcid_of(account))

    def consented_keys(self, vin: str, client_id: str, now: datetime) -> frozenset[str]:
        row = self._db.execute(
            f"SELECT c.keys {_ACTIVE_CONSENTS} AND l.vin=? AND c.client_id=?", (to_millis(now), vin, client_id)
        ).fetchone()
        return frozenset() if row is None else _keys(row[0])

    def consenting_clients(self, vin: str, now: datetime) -> list[tuple[str, str, frozenset[str]]]:
        """(gcid, client_id, keys) of every client the VIN's owner consents to now."""
        rows = self._db.execute(
            f"SELECT l.account, c.client_id, c.keys {_ACTIVE_CONSENTS} AND l.vin=? ORDER BY c.client_id",
            (to_millis(now), vin),
        ).fetchall()
        return [(self.gcid_of(account), client_id, _keys(keys)) for account, client_id, keys in rows]

    def consents_of(self, gcid: str) -> list[dict[str, Any]]:
        """Every CarData consent the gcid's account gave, open or ended, oldest first (for its reports)."""
        rows = self._db.execute(
            "SELECT l.vin, c.client_id, c.keys, c.granted_ms, coalesce(c.ended_ms, l.ended_ms) "
            "FROM cardata_consents c JOIN account_links l ON l.id = c.link_id "
            "JOIN cardata_gcids g ON g.account = l.account WHERE g.gcid=? ORDER BY c.granted_ms, c.id",
            (gcid,),
        )
        return [
            {
                "vin": vin,
                "client_id": client_id,
                "keys": sorted(_keys(keys)),
                "granted": from_millis(granted),
                "ended": None if ended is None else from_millis(ended),
            }
            for vin, client_id, keys, granted, ended in rows
        ]

    def _open_consent(self, link_id: int, client_id: str) -> tuple[int, frozenset[str]] | None:
        row = self._db.execute(
            "SELECT id, keys FROM cardata_consents WHERE link_id=? AND client_id=? AND ended_ms IS NULL",
            (link_id, client_id),
        ).fetchone()
        return None if row is None else (int(row[0]), _keys(row[1]))

    def _replace_consent(
        self,
        link_id: int,
        client_id: str,
        current: tuple[int, frozenset[str]] | None,
        keys: frozenset[str],
        now: datetime,
    ) -> None:
        """End the open consent (if any) and open one for `keys` (if any): a change is a new row, so the
        report shows what was consented when."""
        if current is not None:
            self._db.execute("UPDATE cardata_consents SET ended_ms=? WHERE id=?", (to_millis(now), current[0]))
        if keys:
            self._db.execute(
                "INSERT INTO cardata_consents (link_id, client_id, keys, granted_ms) VALUES (?, ?, ?, ?)",
                (link_id, client_id, _dump(keys), to_millis(now)),
            )

    def _known_client(self, client_id: str) -> None:
        check_uuid(client_id, what="client_id")
        if self.client(client_id) is None:
            raise NotFound(f"no CarData client {quoted(client_id)}: register it first")

    # -- containers ----------------------------------------------------------------------------------

    def create_container(  # noqa: PLR0917 - the spec's positional signature (H3 calls it so)
        self, gcid: str, client_id: str, name: object, purpose: object, keys: Iterable[object], now: datetime
    ) -> Container:
        name = check_text(name, what="container name", limit=MAX_CONTAINER_NAME_CHARS)
        purpose = check_text(purpose, what="container purpose", limit=MAX_PURPOSE_CHARS)
        chosen = self.catalogue.check_keys(keys, what="technical descriptor")
        container = Container(
            container_id=uuid.uuid4().hex,
            gcid=gcid,
            client_id=client_id,
            name=name,
            purpose=purpose,
            keys=chosen,
            created=now,
        )
        with transaction(self._db):
            count = self._db.execute(
                "SELECT count(*) FROM cardata_containers WHERE gcid=? AND client_id=? AND deleted_ms IS NULL",
                (gcid, client_id),
            ).fetchone()[0]
            if count >= MAX_CONTAINERS:
                raise Conflict(f"at most {MAX_CONTAINERS} containers per account and client: delete one first")
            self._db.execute(
                "INSERT INTO cardata_containers VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (container.container_id, gcid, client_id, name, purpose, _dump(chosen), to_millis(now)),
            )
        return container

    def containers(self, gcid: str, client_id: str) -> list[Container]:
        rows = self._db.execute(
            _SELECT_CONTAINERS + " WHERE gcid=? AND client_id=? AND deleted_ms IS NULL ORDER BY created_ms, rowid",
            (gcid, client_id),
        )
        return [_container(row) for row in rows]

    def container(self, gcid: str, client_id: str, container_id: str) -> Container:
        """The caller's active container; NotFound for any other id: another account's, another
        client's, a deleted one and one that never existed look the same."""
        if not isinstance(container_id, str) or len(container_id) > 64:
            raise NotFound("no such container")
        row = self._db.execute(
            _SELECT_CONTAINERS + " WHERE container_id=? AND gcid=? AND client_id=? AND deleted_ms IS NULL",
            (container_id, gcid, client_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no container {quoted(container_id)} for this account and client")
        return _container(row)

    def delete_container(self, gcid: str, client_id: str, container_id: str, now: datetime) -> None:
        self.container(gcid, client_id, container_id)
        with transaction(self._db):
            self._db.execute(
                "UPDATE cardata_containers SET deleted_ms=? WHERE container_id=? AND deleted_ms IS NULL",
                (to_millis(now), container_id),
            )

    # -- retention (backend_stub.retention) ---------------------------------------------------------

    def purge_ended(self) -> tuple[int, list[str]]:
        """What retention left without its owner: consents of links it deleted (contract data, one
        year after the contract ended, with the link), and of accounts it deleted, their gcid,
        containers and transfers. Returns (rows deleted, the gcids forgotten).

        Transfers are the owner's history (the transaction report can be asked for "jederzeit"): kept
        while the account exists, also for a vehicle sold long ago; they go with the account. A
        container belongs to the account and client, not to a vehicle: it stays while the account does."""
        with transaction(self._db):
            deleted = self._db.execute(
                "DELETE FROM cardata_consents WHERE link_id NOT IN (SELECT id FROM account_links)"
            ).rowcount
            gone = [
                str(row[0])
                for row in self._db.execute(
                    "SELECT gcid FROM cardata_gcids WHERE account NOT IN (SELECT account FROM accounts)"
                ).fetchall()
            ]
            for gcid in gone:
                for table in ("cardata_containers", "cardata_transfers", "cardata_gcids"):
                    deleted += self._db.execute(f"DELETE FROM {table} WHERE gcid=?", (gcid,)).rowcount  # noqa: S608 - our names
        if deleted:
            _LOGGER.info("CarData retention: %d row(s) deleted, %d account(s) forgotten", deleted, len(gone))
        return deleted, gone

    # -- transfers (the transaction report) ----------------------------------------------------------

    def log_transfer(  # noqa: PLR0917 - the spec's positional signature (H4 calls it so)
        self, gcid: str, client_id: str, vin: str, channel: Channel | str, keys: Iterable[str], now: datetime
    ) -> Transfer | None:
        """Log what went to a client; nothing for an empty key set (nothing was transferred)."""
        if channel not in CHANNELS:
            raise ValueError(f"channel {channel!r} is not one of {sorted(CHANNELS)}")
        sent = frozenset(keys)
        if not sent:
            return None
        try:
            self._db.execute(
                "INSERT INTO cardata_transfers (gcid, client_id, vin, channel, keys, at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (gcid, client_id, vin, channel, _dump(sent), to_millis(now)),
            )
        except sqlite3.Error as exc:  # a transfer that happened must be reported: say so loudly
            _LOGGER.error("CarData transfer to %s not logged: %s", client_id, exc)
            raise
        return Transfer(gcid=gcid, client_id=client_id, vin=vin, channel=str(channel), keys=sent, at=now)

    def transfers(self, gcid: str, *, vin: str | None = None, limit: int = 10_000) -> list[Transfer]:
        """The gcid's transfers, newest `limit` of them, oldest first."""
        query = "SELECT gcid, client_id, vin, channel, keys, at_ms FROM cardata_transfers WHERE gcid=?"
        params: list[Any] = [gcid]
        if vin is not None:
            query += " AND vin=?"
            params.append(vin)
        rows = self._db.execute(query + " ORDER BY at_ms DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
        return [
            Transfer(gcid=g, client_id=c, vin=v, channel=ch, keys=_keys(k), at=from_millis(at))
            for g, c, v, ch, k, at in reversed(rows)
        ]


_SELECT_CONTAINERS = (
    "SELECT container_id, gcid, client_id, name, purpose, keys, created_ms, deleted_ms FROM cardata_containers"
)


def _container(row: tuple[Any, ...]) -> Container:
    container_id, gcid, client_id, name, purpose, keys, created, deleted = row
    return Container(
        container_id=container_id,
        gcid=gcid,
        client_id=client_id,
        name=name,
        purpose=purpose,
        keys=_keys(keys),
        created=from_millis(created),
        deleted=None if deleted is None else from_millis(deleted),
    )
