"""CarData tokens: what a device-code sign-in yields, stored only as keyed digests.

One approved sign-in is a *grant* (owner gcid, client, scope). Each token request on it yields a
`TokenSet`: an opaque access token (1 h, BMW's lifetime), an opaque refresh token (2 weeks), and, with
the `openid` scope, an id_token (a JWT, `backend_stub.cardata.id_token`) that is the MQTT password.

Access tokens are opaque random strings rather than JWTs: the backend is the only one that reads them,
a lookup by digest makes a forged one simply unknown, and revoking a grant ends its tokens at once.

Refresh tokens rotate (RFC 6749 §10.4, OAuth 2.0 Security BCP §4.14): each is good for one refresh,
and a second use of a spent one means it was stolen (or a response lost) — the whole grant is revoked,
so the thief's fresh tokens die with the owner's.

Nothing here stores a token: the tables hold HMAC-SHA256 digests under a key derived from the backend
key, so a copy of the database yields no usable token. The caller holds the transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from nacl.signing import SigningKey

from backend_stub.cardata.errors import Unauthorized
from backend_stub.cardata.id_token import IdTokenSigner, derive_key
from backend_stub.cardata.oauth_errors import OAuthError
from telematics_wire.records import from_millis, to_millis

__all__ = [
    "ACCESS_TOKEN_TTL_S",
    "REFRESH_TOKEN_TTL_S",
    "SCHEMA",
    "SCOPES",
    "SCOPES_KNOWN",
    "SCOPE_API",
    "SCOPE_OPENID",
    "SCOPE_OWNER",
    "SCOPE_STREAMING",
    "Grant",
    "Refusal",
    "TokenDigest",
    "TokenSet",
    "TokenStore",
]

ACCESS_TOKEN_TTL_S: Final = 3600
REFRESH_TOKEN_TTL_S: Final = 14 * 24 * 3600  # BMW's client notes: 1,209,600 s
SCOPE_OPENID: Final = "openid"
SCOPE_API: Final = "cardata:api:read"
SCOPE_STREAMING: Final = "cardata:streaming:read"
# In BMW's order; a request without a scope gets all of them (BMW's description of `scope`).
SCOPES: Final = ("authenticate_user", SCOPE_OPENID, SCOPE_STREAMING, SCOPE_API)
# Ours: the owner's own pages (reports, consents). Never among the defaults, and kept in a grant only
# when the owner approves a sign-in as their own (`DeviceFlow.approve(..., owner=True)`).
SCOPE_OWNER: Final = "cardata:owner"
SCOPES_KNOWN: Final = (*SCOPES, SCOPE_OWNER)
_MAX_OPAQUE_CHARS = 256  # ours are 43; a longer one is refused before it is digested

SCHEMA = """
CREATE TABLE IF NOT EXISTS cardata_grants (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    gcid           TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    id_expires_ms  INTEGER,          -- the newest id_token's expiry (the MQTT password's end)
    revoked_ms     INTEGER,
    revoked_reason TEXT
);
CREATE INDEX IF NOT EXISTS cardata_grants_owner ON cardata_grants (gcid, client_id);
CREATE TABLE IF NOT EXISTS cardata_tokens (
    digest     BLOB PRIMARY KEY,     -- keyed digest; the token itself is only ever with the client
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    grant_id   INTEGER NOT NULL REFERENCES cardata_grants (id),
    expires_ms INTEGER NOT NULL,
    used_ms    INTEGER               -- a refresh token is spent by its one refresh
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cardata_tokens_grant ON cardata_tokens (grant_id);
"""


class TokenDigest:
    """Keyed digests of secrets handed to clients (tokens, device and user codes)."""

    def __init__(self, backend_key: SigningKey) -> None:
        self._key = derive_key(backend_key, "cardata token digest v1")

    def of(self, secret: str) -> bytes:
        return hmac.new(self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenSet:
    """The token endpoint's answer (BMW's `TokenResponse`), plus when its tokens expire."""

    gcid: str
    client_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    id_token: str | None = field(repr=False)  # only with the openid scope
    scope: str
    expires: datetime  # of the access token and the id_token
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int = ACCESS_TOKEN_TTL_S

    def as_response(self) -> dict[str, Any]:
        """The JSON body of a successful token request."""
        body: dict[str, Any] = {
            "gcid": self.gcid,
            "token_type": self.token_type,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "scope": self.scope,
            "expires_in": self.expires_in,
        }
        if self.id_token is not None:
            body["id_token"] = self.id_token
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """What a valid access token lets its bearer do."""

    gcid: str
    client_id: str
    scope: frozenset[str]
    expires: datetime

    def allows(self, scope: str) -> bool:
        return scope in self.scope


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused refresh, and the owner whose tokens it revoked (a spent refresh token used again)."""

    error: OAuthError
    revoked_gcid: str | None = None


class TokenStore:
    """The grant and token tables on a connection the caller holds a transaction on."""

    def __init__(self, db: sqlite3.Connection, digest: TokenDigest, signer: IdTokenSigner) -> None:
        self._db, self._digest, self._signer = db, digest, signer

    def open_grant(self, *, gcid: str, client_id: str, scope: str, now: datetime) -> TokenSet:
        """A new grant (an approved sign-in) and its first tokens."""
        cursor = self._db.execute(
            "INSERT INTO cardata_grants (gcid, client_id, scope, created_ms) VALUES (?, ?, ?, ?)",
            (gcid, client_id, scope, to_millis(now)),
        )
        assert cursor.lastrowid is not None  # an INSERT into a rowid table always has one
        return self._issue(cursor.lastrowid, gcid=gcid, client_id=client_id, scope=scope, now=now)

    def refresh(self, *, client_id: str, refresh_token: object, now: datetime) -> TokenSet | Refusal:
        """New tokens for a refresh token of `client_id`, which is spent; else the invalid_grant to answer.

        A refusal is returned, not raised: a reuse revokes the grant, and the caller must commit that.
        """
        row = self._lookup(refresh_token, "refresh")
        if row is None or row["client_id"] != client_id:
            return Refusal(OAuthError("invalid_grant", "the refresh token is unknown or belongs to another client"))
        if row["revoked_ms"] is not None:
            return Refusal(OAuthError("invalid_grant", "the sign-in this refresh token belongs to was revoked"))
        if row["expires_ms"] <= to_millis(now):
            return Refusal(OAuthError("invalid_grant", "the refresh token has expired; sign in again"))
        if row["used_ms"] is not None:
            # Reuse of a spent token: one of the two users is a thief. End both.
            self.revoke_grant(row["grant_id"], now=now, reason="a spent refresh token was used again")
            error = OAuthError("invalid_grant", "the refresh token was already used; this sign-in is revoked")
            return Refusal(error, revoked_gcid=row["gcid"])
        self._db.execute("UPDATE cardata_tokens SET used_ms=? WHERE digest=?", (to_millis(now), row["digest"]))
        return self._issue(row["grant_id"], gcid=row["gcid"], client_id=client_id, scope=row["scope"], now=now)

    def verify_access_token(self, token: object, now: datetime) -> Grant:
        """The grant behind a valid access token; `Unauthorized` for anything else (any value at all)."""
        row = self._lookup(token, "access")
        if row is None:
            raise Unauthorized("the access token is unknown")
        if row["revoked_ms"] is not None:
            raise Unauthorized("the access token was revoked")
        if row["expires_ms"] <= to_millis(now):
            raise Unauthorized("the access token has expired; refresh it")
        return Grant(
            gcid=row["gcid"],
            client_id=row["client_id"],
            scope=frozenset(row["scope"].split()),
            expires=from_millis(row["expires_ms"]),
        )

    def revoke_grant(self, grant_id: int, *, now: datetime, reason: str) -> None:
        self._db.execute(
            "UPDATE cardata_grants SET revoked_ms=?, revoked_reason=? WHERE id=? AND revoked_ms IS NULL",
            (to_millis(now), reason, grant_id),
        )

    def revoke(self, gcid: str, *, now: datetime, reason: str, client_id: str | None = None) -> int:
        """Revoke every grant of `gcid` (of one client when given); how many were live."""
        cursor = self._db.execute(
            "UPDATE cardata_grants SET revoked_ms=?, revoked_reason=? "
            "WHERE gcid=? AND (? IS NULL OR client_id=?) AND revoked_ms IS NULL",
            (to_millis(now), reason, gcid, client_id, client_id),
        )
        return cursor.rowcount

    def forget(self, gcid: str) -> None:
        """Delete the grants of `gcid` and their tokens."""
        self._db.execute(
            "DELETE FROM cardata_tokens WHERE grant_id IN (SELECT id FROM cardata_grants WHERE gcid=?)", (gcid,)
        )
        self._db.execute("DELETE FROM cardata_grants WHERE gcid=?", (gcid,))

    def streaming_expiries(self) -> dict[str, datetime]:
        """Per gcid with a streaming grant that is not revoked: when its newest id_token expires."""
        return {gcid: from_millis(expires_ms) for gcid, (_, expires_ms) in self._streaming_logins().items()}

    def streaming_holders(self) -> dict[str, str]:
        """Per gcid with a streaming grant that is not revoked: the client of the newest id_token."""
        return {gcid: client_id for gcid, (client_id, _) in self._streaming_logins().items()}

    def _streaming_logins(self) -> dict[str, tuple[str, int]]:
        rows = self._db.execute(
            "SELECT gcid, client_id, id_expires_ms FROM cardata_grants WHERE revoked_ms IS NULL "
            "AND id_expires_ms IS NOT NULL AND ' ' || scope || ' ' LIKE ? ORDER BY id_expires_ms, id",
            (f"% {SCOPE_STREAMING} %",),
        ).fetchall()
        return {gcid: (client_id, expires_ms) for gcid, client_id, expires_ms in rows}  # the newest of each stays

    def purge(self, now: datetime) -> None:
        """Forget tokens past their expiry (a spent refresh token is kept until then, to catch its reuse)."""
        self._db.execute("DELETE FROM cardata_tokens WHERE expires_ms <= ?", (to_millis(now),))

    def _issue(self, grant_id: int, *, gcid: str, client_id: str, scope: str, now: datetime) -> TokenSet:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = now + timedelta(seconds=ACCESS_TOKEN_TTL_S)
        refresh_expires = now + timedelta(seconds=REFRESH_TOKEN_TTL_S)
        self._db.executemany(
            "INSERT INTO cardata_tokens (digest, kind, grant_id, expires_ms) VALUES (?, ?, ?, ?)",
            [
                (self._digest.of(access), "access", grant_id, to_millis(expires)),
                (self._digest.of(refresh), "refresh", grant_id, to_millis(refresh_expires)),
            ],
        )
        id_token = None
        if SCOPE_OPENID in scope.split():
            id_token, id_expires = self._signer.sign(gcid=gcid, client_id=client_id, now=now)
            self._db.execute("UPDATE cardata_grants SET id_expires_ms=? WHERE id=?", (to_millis(id_expires), grant_id))
        return TokenSet(
            gcid=gcid,
            client_id=client_id,
            access_token=access,
            refresh_token=refresh,
            id_token=id_token,
            scope=scope,
            expires=expires,
        )

    def _lookup(self, token: object, kind: str) -> sqlite3.Row | None:
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_OPAQUE_CHARS:
            return None
        cursor = self._db.execute(
            "SELECT t.digest, t.grant_id, t.expires_ms, t.used_ms, g.gcid, g.client_id, g.scope, g.revoked_ms "
            "FROM cardata_tokens t JOIN cardata_grants g ON g.id = t.grant_id WHERE t.digest=? AND t.kind=?",
            (self._digest.of(token), kind),
        )
        cursor.row_factory = sqlite3.Row
        row: sqlite3.Row | None = cursor.fetchone()
        return row
