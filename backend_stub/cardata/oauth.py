"""OAuth 2.0 device authorization grant (RFC 8628) with PKCE S256 (RFC 7636), as BMW CarData runs it.

    client ──start(client_id, scope, S256 challenge)──► device_code + user_code (pending)
    owner  ──approve(user_code, account) / deny(user_code)──► approved | denied
    client ──exchange(client_id, device_code, verifier) every `interval` s──►
               authorization_pending | slow_down | access_denied | expired_token | invalid_grant | TokenSet

The device code, the user code and every token are stored only as keyed digests. Polling faster than
the interval answers `slow_down` and raises that code's interval by 5 s for good (RFC 8628 §3.5); a
code is exchanged once; a wrong PKCE verifier is `invalid_grant` and tells nothing about the code's
state. An owner approves by user code (`backend-stub cardata approve CODE`); the account becomes its
gcid through the `Directory` (CarData's `CardataStore`), which is asked outside our transaction: it
writes through its own connection, and two write locks on one file would wait on each other.

Every refusal is an `OAuthError` carrying the RFC word and BMW's HTTP status; the operator-side calls
(`approve`, `deny`) raise the customer API's errors (`NotFound`, `Conflict`, `BadRequest`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from nacl.signing import SigningKey

from backend_stub.cardata.errors import BadRequest, Conflict, Forbidden, NotFound
from backend_stub.cardata.id_token import IdTokenSigner
from backend_stub.cardata.oauth_errors import OAuthError
from backend_stub.cardata.tokens import SCHEMA as TOKEN_SCHEMA
from backend_stub.cardata.tokens import (
    SCOPE_OWNER,
    SCOPES,
    SCOPES_KNOWN,
    Grant,
    Refusal,
    TokenDigest,
    TokenSet,
    TokenStore,
)
from backend_stub.database import open_database, transaction
from tcu.clock import Clock
from telematics_wire.records import from_millis, to_millis

__all__ = [
    "CODE_TTL_S",
    "POLL_INTERVAL_S",
    "SLOW_DOWN_STEP_S",
    "DeviceCode",
    "DeviceFlow",
    "Directory",
    "SignInRequest",
    "TokenListener",
    "pkce_challenge",
]
_LOGGER = logging.getLogger(__name__)

CODE_TTL_S: Final = 300  # BMW's example expires_in
POLL_INTERVAL_S: Final = 5  # RFC 8628's default, BMW's example
SLOW_DOWN_STEP_S: Final = 5  # RFC 8628 §3.5
_KEEP_EXPIRED = timedelta(days=1)  # an expired code still answers expired_token (not "unknown") this long
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels (no words), no 0/O or 1/I
_USER_CODE_CHARS = 8  # 20^8 ≈ 2^34.6 codes, for a code that lives 5 minutes
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, unpadded
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1
_MAX_ID_CHARS = 64  # a client_id is a UUID; anything longer is refused unlooked-up
_MAX_SCOPE_CHARS = 512
_MAX_SECRET_CHARS = 256  # device codes we hand out are 43 characters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cardata_device_codes (
    device_digest BLOB PRIMARY KEY,
    user_digest   BLOB NOT NULL UNIQUE,
    client_id     TEXT NOT NULL,
    scope         TEXT NOT NULL,
    challenge     TEXT NOT NULL,     -- PKCE S256 challenge (public by design)
    issued_ms     INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    interval_s    INTEGER NOT NULL,  -- grows by 5 s with each slow_down
    last_poll_ms  INTEGER,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'used')),
    account       TEXT,
    gcid          TEXT
) WITHOUT ROWID;
"""


class TokenListener(Protocol):
    """Told after each commit: `StreamingCredentials` keeps the broker's passwords in step this way."""

    def tokens_issued(self, tokens: TokenSet) -> None: ...

    def tokens_revoked(self, gcid: str) -> None: ...

    async def applied(self, gcid: str) -> None:
        """Return once what was last told for `gcid` is in force (the token endpoint awaits it)."""
        ...


class Directory(Protocol):
    """Who is who: `CardataStore` (backend_stub.cardata.consents) fits."""

    def gcid_of(self, account: str) -> str: ...

    def client(self, client_id: str) -> object | None: ...


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 §4.2): what a client sends at start."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCode:
    """The device authorization response (BMW's `DeviceCodeResponse`)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int

    def as_response(self) -> dict[str, Any]:
        return {
            "device_code": self.device_code,
            "user_code": self.user_code,
            "verification_uri": self.verification_uri,
            "verification_uri_complete": self.verification_uri_complete,
            "expires_in": self.expires_in,
            "interval": self.interval,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SignInRequest:
    """What an owner approved or denied: which client asked for what, and until when."""

    client_id: str
    scope: str
    expires: datetime
    gcid: str | None


def normalise_user_code(text: str) -> str:
    """What a person may type ("bdwp-hqpk ") as the code we issued ("BDWPHQPK")."""
    return "".join(char for char in text.upper() if char not in "- ")


class DeviceFlow:
    """Device codes, approvals and the token endpoint's grants on the backend's database."""

    def __init__(
        self,
        path: Path,
        clock: Clock,
        signing_key: SigningKey,
        *,
        directory: Directory,
        issuer: str,
        verification_uri: str,
        interval_s: int = POLL_INTERVAL_S,
        code_ttl_s: int = CODE_TTL_S,
        listener: TokenListener | None = None,
    ) -> None:
        if interval_s < 0 or code_ttl_s <= 0:
            raise ValueError("the poll interval must be >= 0 s and the code lifetime > 0 s")
        self._clock, self._directory, self.listener = clock, directory, listener
        self._verification_uri = verification_uri
        self._interval_s, self._code_ttl_s = interval_s, code_ttl_s
        self._db = open_database(path, _SCHEMA + TOKEN_SCHEMA)
        self._digest = TokenDigest(signing_key)
        self.signer = IdTokenSigner(signing_key, issuer=issuer)
        self._tokens = TokenStore(self._db, self._digest, self.signer)
        # One connection, called from the event loop and from worker threads: one caller at a time.
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # -- the client's side ---------------------------------------------------------------------

    def start(
        self,
        client_id: str,
        scope: str,
        code_challenge: str,
        code_challenge_method: str,
        *,
        response_type: str = "device_code",
        now: datetime | None = None,
    ) -> DeviceCode:
        """A new pending sign-in for `client_id`: the codes to show and to poll with."""
        now = now or self._clock.now()
        if response_type != "device_code":
            raise OAuthError("unsupported_response_type", "response_type must be device_code")
        self._require_client(client_id, http_status=400)  # BMW documents only 400 at the device-code endpoint
        granted = _normalise_scope(scope)
        if code_challenge_method != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256 (plain is refused)")
        if not isinstance(code_challenge, str) or not _CHALLENGE.fullmatch(code_challenge):
            raise OAuthError("invalid_request", "code_challenge must be the 43-character base64url SHA-256")
        device_code = secrets.token_urlsafe(32)
        with self._lock, transaction(self._db):
            forgotten = to_millis(now - _KEEP_EXPIRED)
            self._db.execute("DELETE FROM cardata_device_codes WHERE expires_ms <= ?", (forgotten,))
            self._tokens.purge(now)
            user_code = self._insert_code(device_code, client_id, granted, code_challenge, now)
        _LOGGER.info("CarData sign-in started by client %s for scope %r", client_id, granted)
        return DeviceCode(
            device_code=device_code,
            user_code=user_code,
            verification_uri=self._verification_uri,
            verification_uri_complete=f"{self._verification_uri}?user_code={user_code}",
            expires_in=self._code_ttl_s,
            interval=self._interval_s,
        )

    def exchange(
        self, client_id: str, device_code: str, code_verifier: str, *, now: datetime | None = None
    ) -> TokenSet:
        """Tokens for an approved device code (once); else the `OAuthError` the client must act on."""
        now = now or self._clock.now()
        self._require_client(client_id)
        if not isinstance(code_verifier, str) or not _VERIFIER.fullmatch(code_verifier):
            raise OAuthError("invalid_request", "code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~")
        with self._lock, transaction(self._db):
            outcome = self._poll(client_id, device_code, code_verifier, now)
        if isinstance(outcome, OAuthError):  # raised after the commit: the poll time and interval stay booked
            raise outcome
        _LOGGER.info("CarData tokens issued to client %s for gcid %s", client_id, outcome.gcid)
        self._issued(outcome)
        return outcome

    def refresh(self, client_id: str, refresh_token: str, *, now: datetime | None = None) -> TokenSet:
        """New tokens for a refresh token (which is spent: a second use revokes the whole sign-in)."""
        now = now or self._clock.now()
        self._require_client(client_id)
        with self._lock, transaction(self._db):
            outcome = self._tokens.refresh(client_id=client_id, refresh_token=refresh_token, now=now)
        if isinstance(outcome, Refusal):
            _LOGGER.info("CarData refresh refused for client %s: %s", client_id, outcome.error.description)
            if outcome.revoked_gcid is not None and self.listener is not None:
                self.listener.tokens_revoked(outcome.revoked_gcid)
            raise outcome.error
        self._issued(outcome)
        return outcome

    def verify_access_token(self, token: object, now: datetime | None = None) -> Grant:
        """The grant behind a bearer token; `Unauthorized` for an expired, revoked, forged or odd one."""
        now = now or self._clock.now()
        with self._lock:
            return self._tokens.verify_access_token(token, now)

    # -- the owner's and the operator's side ------------------------------------------------------

    def approve(
        self, user_code: str, account: str, *, owner: bool = False, now: datetime | None = None
    ) -> SignInRequest:
        """The owner of `account` lets the client that shows `user_code` in.

        `owner`: the account holder signs in for themselves (their own app or portal), so the grant
        keeps `cardata:owner` if the client asked for it. Without it (a third party's sign-in, a
        bench's auto-approval) that scope is dropped: a third party never reads the owner's reports."""
        now = now or self._clock.now()
        gcid = self._directory.gcid_of(account)  # before our transaction: it writes on its own connection
        with self._lock, transaction(self._db):
            request = self._decide(user_code, now)
            asked = request.scope.split()
            scope = request.scope if owner else " ".join(name for name in asked if name != SCOPE_OWNER)
            if not scope:
                raise Forbidden("this sign-in asks only for the owner's own pages: approve it as the owner, or deny it")
            self._db.execute(
                "UPDATE cardata_device_codes SET state='approved', account=?, gcid=?, scope=? WHERE user_digest=?",
                (account, gcid, scope, self._digest.of(normalise_user_code(user_code))),
            )
        if scope != request.scope:
            _LOGGER.info(
                "CarData sign-in of client %s: %s dropped (not approved as the owner's own)",
                request.client_id,
                SCOPE_OWNER,
            )
        _LOGGER.info("CarData sign-in of client %s approved for gcid %s", request.client_id, gcid)
        return SignInRequest(client_id=request.client_id, scope=scope, expires=request.expires, gcid=gcid)

    def deny(self, user_code: str, *, now: datetime | None = None) -> SignInRequest:
        """The owner refuses: the client's next poll answers access_denied."""
        now = now or self._clock.now()
        with self._lock, transaction(self._db):
            request = self._decide(user_code, now)
            self._db.execute(
                "UPDATE cardata_device_codes SET state='denied' WHERE user_digest=?",
                (self._digest.of(normalise_user_code(user_code)),),
            )
        _LOGGER.info("CarData sign-in of client %s denied", request.client_id)
        return request

    def revoke(self, gcid: str, *, reason: str, client_id: str | None = None, now: datetime | None = None) -> int:
        """End every token of `gcid` (for one client when given) at once; how many sign-ins were live."""
        now = now or self._clock.now()
        with self._lock, transaction(self._db):
            revoked = self._tokens.revoke(gcid, now=now, reason=reason, client_id=client_id)
        if self.listener is not None:
            self.listener.tokens_revoked(gcid)
        return revoked

    def forget(self, gcid: str) -> None:
        """Delete every grant and token of `gcid` (its account was deleted by retention)."""
        with self._lock, transaction(self._db):
            self._tokens.forget(gcid)
        if self.listener is not None:
            self.listener.tokens_revoked(gcid)

    def streaming_expiries(self) -> dict[str, datetime]:
        """gcid → when its newest streaming id_token expires (for `StreamingCredentials` at start)."""
        with self._lock:
            return self._tokens.streaming_expiries()

    def streaming_holders(self) -> dict[str, str]:
        """gcid → the client whose id_token is its streaming password (for `StreamingCredentials` at start)."""
        with self._lock:
            return self._tokens.streaming_holders()

    # -- inside --------------------------------------------------------------------------------

    def _issued(self, tokens: TokenSet) -> None:
        if self.listener is not None:
            self.listener.tokens_issued(tokens)

    def _require_client(self, client_id: str, *, http_status: int | None = None) -> None:
        known = isinstance(client_id, str) and 0 < len(client_id) <= _MAX_ID_CHARS
        if not known or self._directory.client(client_id) is None:
            raise OAuthError("invalid_client", "client_id is not a registered client", http_status=http_status)

    def _insert_code(self, device_code: str, client_id: str, scope: str, challenge: str, now: datetime) -> str:
        for _ in range(5):  # a user code already pending is drawn again
            user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(_USER_CODE_CHARS))
            try:
                self._db.execute(
                    "INSERT INTO cardata_device_codes (device_digest, user_digest, client_id, scope, challenge, "
                    "issued_ms, expires_ms, interval_s, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                    (
                        self._digest.of(device_code),
                        self._digest.of(user_code),
                        client_id,
                        scope,
                        challenge,
                        to_millis(now),
                        to_millis(now + timedelta(seconds=self._code_ttl_s)),
                        self._interval_s,
                    ),
                )
            except sqlite3.IntegrityError:
                continue
            return user_code
        raise OAuthError("invalid_request", "no free user code; try again")  # 5 collisions in 2^34: never

    def _poll(self, client_id: str, device_code: object, verifier: str, now: datetime) -> TokenSet | OAuthError:
        if not isinstance(device_code, str) or not 0 < len(device_code) <= _MAX_SECRET_CHARS:
            return OAuthError("invalid_grant", "the device code is unknown")
        digest = self._digest.of(device_code)
        row = self._db.execute(
            "SELECT client_id, scope, challenge, expires_ms, interval_s, last_poll_ms, state, gcid "
            "FROM cardata_device_codes WHERE device_digest=?",
            (digest,),
        ).fetchone()
        if row is None or row[0] != client_id:
            return OAuthError("invalid_grant", "the device code is unknown")
        _, scope, challenge, expires_ms, interval_s, last_poll_ms, state, gcid = row
        now_ms = to_millis(now)
        if state == "used":
            return OAuthError("invalid_grant", "the device code was already exchanged for tokens")
        if now_ms >= expires_ms:
            return OAuthError("expired_token", "the device code has expired; start the sign-in again")
        too_fast = last_poll_ms is not None and now_ms - last_poll_ms < interval_s * 1000
        interval_s += SLOW_DOWN_STEP_S if too_fast else 0
        self._db.execute(
            "UPDATE cardata_device_codes SET last_poll_ms=?, interval_s=? WHERE device_digest=?",
            (now_ms, interval_s, digest),
        )
        if too_fast:
            return OAuthError("slow_down", f"poll at most every {interval_s} s")
        if not hmac.compare_digest(pkce_challenge(verifier), challenge):
            return OAuthError("invalid_grant", "the code_verifier does not match the code_challenge")
        if state == "pending":
            return OAuthError("authorization_pending", "the owner has not yet approved the sign-in")
        if state == "denied":
            return OAuthError("access_denied", "the owner has declined the sign-in")
        self._db.execute("UPDATE cardata_device_codes SET state='used' WHERE device_digest=?", (digest,))
        return self._tokens.open_grant(gcid=gcid, client_id=client_id, scope=scope, now=now)

    def _decide(self, user_code: str, now: datetime) -> SignInRequest:
        code = normalise_user_code(user_code) if isinstance(user_code, str) else ""
        if len(code) != _USER_CODE_CHARS or any(char not in _USER_CODE_ALPHABET for char in code):
            raise BadRequest(f"a user code is {_USER_CODE_CHARS} letters of {_USER_CODE_ALPHABET}")
        row = self._db.execute(
            "SELECT client_id, scope, expires_ms, state FROM cardata_device_codes WHERE user_digest=?",
            (self._digest.of(code),),
        ).fetchone()
        if row is None:
            raise NotFound("no sign-in waits for this user code")
        client_id, scope, expires_ms, state = row
        if to_millis(now) >= expires_ms:
            raise NotFound("this user code has expired; the client must start the sign-in again")
        if state != "pending":
            raise Conflict(f"this sign-in was already {'approved' if state == 'used' else state}")
        return SignInRequest(client_id=client_id, scope=scope, expires=from_millis(expires_ms), gcid=None)


def _normalise_scope(scope: str) -> str:
    """The requested scopes in BMW's order (ours last); none requested means all of BMW's (BMW's
    description) and never the owner's own `cardata:owner`, which a client must ask for by name."""
    if not isinstance(scope, str) or len(scope) > _MAX_SCOPE_CHARS:
        raise OAuthError("invalid_scope", "scope is too long")
    requested = set(scope.split())
    unknown = requested - set(SCOPES_KNOWN)
    if unknown:
        known = " ".join(SCOPES_KNOWN)
        raise OAuthError("invalid_scope", f"unknown scope {sorted(unknown)[0][:40]!r}; known: {known}")
    if not requested:
        return " ".join(SCOPES)
    return " ".join(name for name in SCOPES_KNOWN if name in requested)
