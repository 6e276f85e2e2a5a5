"""ConnectedDrive accounts and their link with a vehicle: pairing by a security code, unlinking, consents.

AGB 1.6 a): the customer asks the portal to pair a vehicle with their account; the backend sends a
security code *into that car* (a signed `account` downlink, tcu.services.account_link); the customer
reads it in the car and enters it in the portal (`backend-stub account pair`). The contract begins
when the vehicle appears in the portal, i.e. with the link. A wrong code is refused and counted
(`MAX_ATTEMPTS`, then the code is void), an old one expires (`CODE_TTL`), and only one account is
linked to a vehicle at a time.

AGB 7.2: the link ends when the customer ends it in the portal or when the car reports an owner
change; the account-bound consents (data sharing with third parties through CarData, privacy part H)
end with it. An ended link is contract data, deleted one year after the end (privacy part A,
backend_stub.retention).

Contact data is personal: it is stored sealed (XSalsa20-Poly1305) under a key derived from the
backend's private key, never in plaintext ("Sensible Daten werden zudem nur in verschlüsselter Form
gespeichert"). The security code itself is never stored: only a keyed digest of it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from backend_stub.database import checkpoint, open_database, transaction
from backend_stub.errors import AccountError, UnknownVehicleError
from tcu.services.account_link import ACCOUNT_LINK, ACCOUNT_PATTERN, PAIRING_CODE
from tcu.services.cose import sign1
from tcu.uplink.records import from_millis, to_millis

_LOGGER = logging.getLogger(__name__)

CODE_TTL = timedelta(minutes=15)
MAX_ATTEMPTS = 5
LINK_MESSAGE_TTL = timedelta(days=7)  # a car that is off for a while still learns of its link
MAX_RECIPIENT_CHARS = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account    TEXT PRIMARY KEY,
    contact    BLOB NOT NULL,   -- sealed CBOR {"name", "email"}
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS account_links (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    vin        TEXT NOT NULL,
    account    TEXT NOT NULL,
    linked_ms  INTEGER NOT NULL,
    ended_ms   INTEGER,
    end_reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS account_links_one_active ON account_links (vin) WHERE ended_ms IS NULL;
CREATE TABLE IF NOT EXISTS pairing_codes (
    vin        TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    digest     BLOB NOT NULL,   -- keyed digest: the code itself is only ever in the car
    issued_ms  INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS account_consents (
    link_id    INTEGER NOT NULL,
    recipient  TEXT NOT NULL,
    granted_ms INTEGER NOT NULL,
    ended_ms   INTEGER,
    PRIMARY KEY (link_id, recipient)
);
CREATE TABLE IF NOT EXISTS account_messages (
    n            INTEGER PRIMARY KEY AUTOINCREMENT,  -- the car applies only numbers above the last it applied
    vin          TEXT NOT NULL,
    signed       BLOB NOT NULL,
    expires_ms   INTEGER NOT NULL,
    published_ms INTEGER
);
CREATE TABLE IF NOT EXISTS owner_changes (
    vin        TEXT NOT NULL,
    epoch      BLOB NOT NULL,
    seq        INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    handled_ms INTEGER NOT NULL,
    link_id    INTEGER,
    handover   BLOB NOT NULL,  -- CBOR list: the services the new owner is told of (AGB 7.3)
    PRIMARY KEY (vin, epoch, seq)
);
"""


class Sealer:
    """Seals personal values at rest under a key derived from the backend's private key."""

    def __init__(self, backend_private_key: bytes) -> None:
        derived = hashlib.blake2b(b"backend-stub storage v1", key=backend_private_key, digest_size=64).digest()
        self._box = SecretBox(derived[:32])
        self._mac_key = derived[32:]

    def seal(self, value: Any) -> bytes:
        return bytes(self._box.encrypt(cbor2.dumps(value)))

    def open(self, sealed: bytes) -> Any:
        try:
            return cbor2.loads(self._box.decrypt(sealed))
        except CryptoError as exc:
            raise AccountError("sealed account data cannot be opened: the backend's private key changed") from exc

    def digest(self, text: str) -> bytes:
        return hmac.new(self._mac_key, text.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    link_id: int
    vin: str
    account: str
    linked: datetime
    ended: datetime | None = None
    end_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Consent:
    recipient: str
    granted: datetime
    ended: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerChange:
    vin: str
    seq: int
    created: datetime
    handled: datetime
    ended_link: Link | None
    handover: list[dict[str, Any]]


def _account_id(account: str) -> str:
    if not ACCOUNT_PATTERN.fullmatch(account):
        raise AccountError(f"account {account[:70]!r} is not 1..64 letters, digits or ._@+-")
    return account


class AccountStore:
    def __init__(
        self,
        path: Path,
        *,
        sealer: Sealer,
        signing_key: SigningKey | None = None,
        enrolled: Callable[[str], bool] = lambda _vin: True,
    ) -> None:
        self._db = open_database(path, _SCHEMA)
        self._sealer = sealer
        self._key = signing_key
        self._enrolled = enrolled

    def close(self) -> None:
        self._db.close()

    # -- accounts --------------------------------------------------------------------------------

    def create(self, account: str, *, name: str, email: str, now: datetime) -> None:
        account = _account_id(account)
        with transaction(self._db):
            if self._db.execute("SELECT 1 FROM accounts WHERE account=?", (account,)).fetchone():
                raise AccountError(f"account {account} exists already")
            self._db.execute(
                "INSERT INTO accounts VALUES (?, ?, ?)",
                (account, self._sealer.seal({"name": name, "email": email}), to_millis(now)),
            )

    def contact(self, account: str) -> dict[str, str] | None:
        row = self._db.execute("SELECT contact FROM accounts WHERE account=?", (account,)).fetchone()
        return None if row is None else dict(self._sealer.open(bytes(row[0])))

    # -- pairing (AGB 1.6 a) ----------------------------------------------------------------------

    def request_code(self, vin: str, account: str, now: datetime) -> datetime:
        """Send a new security code into the car; returns when it expires. The code is not returned:
        the customer reads it in the car."""
        account = _account_id(account)
        if not self._enrolled(vin):
            raise UnknownVehicleError(f"vehicle {vin} is not enrolled")
        with transaction(self._db):
            if not self._db.execute("SELECT 1 FROM accounts WHERE account=?", (account,)).fetchone():
                raise AccountError(f"no account {account}: create it first (backend-stub account create)")
            active = self.link(vin)
            if active is not None:
                whose = "this account" if active.account == account else "another account"
                raise AccountError(
                    f"vehicle {vin} is linked to {whose} already; the link ends in the portal (account unlink, "
                    "AGB 7.2) or when the car reports an owner change"
                )
            code = f"{secrets.randbelow(10**8):08d}"
            expires = now + CODE_TTL
            self._db.execute(
                "INSERT OR REPLACE INTO pairing_codes VALUES (?, ?, ?, ?, ?, 0)",
                (vin, account, self._sealer.digest(f"{vin}:{code}"), to_millis(now), to_millis(expires)),
            )
            self._queue(vin, {"type": PAIRING_CODE, "account": account, "code": code}, now, expires)
        _LOGGER.info("security code for account %s sent into vehicle %s, valid until %s", account, vin, expires)
        return expires

    def pair(self, vin: str, account: str, code: str, now: datetime) -> Link:
        """The customer enters the code read in the car: the link (and the contract) begins, or a refusal."""
        account = _account_id(account)
        with transaction(self._db):  # a refusal commits too: the count of wrong attempts must stand
            outcome = self._try_code(vin, account, code, now)
        if isinstance(outcome, str):
            _LOGGER.warning("pairing of vehicle %s refused: %s", vin, outcome)
            raise AccountError(f"pairing of vehicle {vin} refused: {outcome}")
        _LOGGER.info("vehicle %s paired with account %s", vin, account)
        return outcome

    def _try_code(self, vin: str, account: str, code: str, now: datetime) -> Link | str:
        row = self._db.execute(
            "SELECT account, digest, expires_ms, attempts FROM pairing_codes WHERE vin=?", (vin,)
        ).fetchone()
        if row is None:
            return "no security code is pending for this vehicle; request one (account request-code)"
        wanted, digest, expires_ms, attempts = row[0], bytes(row[1]), int(row[2]), int(row[3])
        if now >= from_millis(expires_ms):
            self._db.execute("DELETE FROM pairing_codes WHERE vin=?", (vin,))
            return f"the security code expired at {from_millis(expires_ms).isoformat()}; request a new one"
        if account != wanted or not hmac.compare_digest(digest, self._sealer.digest(f"{vin}:{code}")):
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                self._db.execute("DELETE FROM pairing_codes WHERE vin=?", (vin,))
                return f"wrong security code; after {MAX_ATTEMPTS} wrong attempts the code is void: request a new one"
            self._db.execute("UPDATE pairing_codes SET attempts=? WHERE vin=?", (attempts, vin))
            return f"wrong security code for this account ({MAX_ATTEMPTS - attempts} attempt(s) left)"
        self._db.execute("DELETE FROM pairing_codes WHERE vin=?", (vin,))
        cursor = self._db.execute(
            "INSERT INTO account_links (vin, account, linked_ms) VALUES (?, ?, ?)", (vin, account, to_millis(now))
        )
        self._queue(vin, {"type": ACCOUNT_LINK, "account": account, "linked": True}, now, now + LINK_MESSAGE_TTL)
        return Link(link_id=int(cursor.lastrowid or 0), vin=vin, account=account, linked=now)

    # -- links -----------------------------------------------------------------------------------

    def link(self, vin: str) -> Link | None:
        row = self._db.execute(
            "SELECT id, vin, account, linked_ms, ended_ms, end_reason FROM account_links "
            "WHERE vin=? AND ended_ms IS NULL",
            (vin,),
        ).fetchone()
        return None if row is None else _link(row)

    def links(self, vin: str) -> list[Link]:
        return [
            _link(row)
            for row in self._db.execute(
                "SELECT id, vin, account, linked_ms, ended_ms, end_reason FROM account_links WHERE vin=? ORDER BY id",
                (vin,),
            )
        ]

    def unlink(self, vin: str, now: datetime, *, reason: str, tell_vehicle: bool = True) -> Link | None:
        """End the vehicle's active link and its consents (AGB 7.2); None when there was none."""
        with transaction(self._db):
            ended = self._end_link(vin, now, reason)
            if ended is not None and tell_vehicle:
                body = {"type": ACCOUNT_LINK, "account": ended.account, "linked": False}
                self._queue(vin, body, now, now + LINK_MESSAGE_TTL)
        return ended

    def _end_link(self, vin: str, now: datetime, reason: str) -> Link | None:
        self._db.execute("DELETE FROM pairing_codes WHERE vin=?", (vin,))
        active = self.link(vin)
        if active is None:
            return None
        self._db.execute(
            "UPDATE account_links SET ended_ms=?, end_reason=? WHERE id=?", (to_millis(now), reason, active.link_id)
        )
        self._db.execute(
            "UPDATE account_consents SET ended_ms=? WHERE link_id=? AND ended_ms IS NULL",
            (to_millis(now), active.link_id),
        )
        _LOGGER.info("link of vehicle %s with account %s ended: %s", vin, active.account, reason)
        return Link(
            link_id=active.link_id, vin=vin, account=active.account, linked=active.linked, ended=now, end_reason=reason
        )

    # -- consents (privacy part H: data sharing through CarData, bound to the account's link) ------

    def grant_consent(self, vin: str, recipient: str, now: datetime) -> None:
        if not 1 <= len(recipient) <= MAX_RECIPIENT_CHARS or not recipient.isprintable():
            raise AccountError(f"consent recipient must be 1..{MAX_RECIPIENT_CHARS} printable characters")
        with transaction(self._db):
            active = self.link(vin)
            if active is None:
                raise AccountError(f"vehicle {vin} has no linked account: a consent is given by the linked account")
            self._db.execute(
                "INSERT OR REPLACE INTO account_consents VALUES (?, ?, ?, NULL)",
                (active.link_id, recipient, to_millis(now)),
            )

    def consents(self, vin: str) -> list[Consent]:
        return [
            Consent(recipient=r, granted=from_millis(g), ended=None if e is None else from_millis(e))
            for r, g, e in self._db.execute(
                "SELECT c.recipient, c.granted_ms, c.ended_ms FROM account_consents c "
                "JOIN account_links l ON l.id = c.link_id WHERE l.vin=? ORDER BY c.granted_ms, c.recipient",
                (vin,),
            )
        ]

    # -- owner change (AGB 7.2, 7.3) ---------------------------------------------------------------

    def owner_change(
        self, vin: str, *, epoch: bytes, seq: int, created: datetime, now: datetime, handover: list[dict[str, Any]]
    ) -> OwnerChange | None:
        """The car reported an owner change: end the link and its consents, keep the handover list.
        None when this report was handled already (the same record taken twice)."""
        with transaction(self._db):
            known = self._db.execute(
                "SELECT 1 FROM owner_changes WHERE vin=? AND epoch=? AND seq=?", (vin, epoch, seq)
            ).fetchone()
            if known is not None:
                return None
            # The car wiped itself: telling it to unlink changes nothing there.
            ended = self._end_link(vin, now, "owner change reported by the vehicle")
            self._db.execute(
                "INSERT INTO owner_changes VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    vin,
                    epoch,
                    seq,
                    to_millis(created),
                    to_millis(now),
                    None if ended is None else ended.link_id,
                    cbor2.dumps(handover),
                ),
            )
        return OwnerChange(vin=vin, seq=seq, created=created, handled=now, ended_link=ended, handover=handover)

    def owner_changes(self, vin: str | None = None) -> list[tuple[str, bytes, int]]:
        """(vin, epoch, seq) of every owner change reported, oldest first."""
        query = "SELECT vin, epoch, seq FROM owner_changes"
        params: tuple[str, ...] = ()
        if vin is not None:
            query, params = query + " WHERE vin=?", (vin,)
        return [(v, bytes(e), int(s)) for v, e, s in self._db.execute(query + " ORDER BY handled_ms", params)]

    def last_handover(self, vin: str) -> tuple[datetime, list[dict[str, Any]]] | None:
        row = self._db.execute(
            "SELECT handled_ms, handover FROM owner_changes WHERE vin=? ORDER BY handled_ms DESC LIMIT 1", (vin,)
        ).fetchone()
        return None if row is None else (from_millis(row[0]), list(cbor2.loads(row[1])))

    # -- contract data retention (privacy part A) ---------------------------------------------------

    def delete_ended_links(self, due: Callable[[datetime], bool]) -> int:
        """Delete the ended links (contract data) whose end makes them `due`, their consents, and an
        account left with no link at all. Returns how many links went."""
        with transaction(self._db):
            rows = [
                (int(link_id), account)
                for link_id, account, ended in self._db.execute(
                    "SELECT id, account, ended_ms FROM account_links WHERE ended_ms IS NOT NULL"
                ).fetchall()
                if due(from_millis(ended))
            ]
            for link_id, _ in rows:
                self._db.execute("DELETE FROM account_consents WHERE link_id=?", (link_id,))
                self._db.execute("DELETE FROM account_links WHERE id=?", (link_id,))
                self._db.execute("UPDATE owner_changes SET link_id=NULL WHERE link_id=?", (link_id,))
            for account in {account for _, account in rows}:
                if not self._db.execute("SELECT 1 FROM account_links WHERE account=?", (account,)).fetchone():
                    self._db.execute("DELETE FROM accounts WHERE account=?", (account,))
                    _LOGGER.info("account %s deleted: its last contract ended over a year ago", account)
        return len(rows)

    # -- messages into the car -------------------------------------------------------------------

    def _queue(self, vin: str, body: dict[str, Any], now: datetime, expires: datetime) -> None:
        if self._key is None:
            raise AccountError("[keys] signing_key is not configured: messages into the car cannot be signed")
        cursor = self._db.execute(
            "INSERT INTO account_messages (vin, signed, expires_ms) VALUES (?, x'', ?)", (vin, to_millis(expires))
        )
        number = int(cursor.lastrowid or 0)
        payload = {**body, "vin": vin, "n": number, "issued": to_millis(now), "expires": to_millis(expires)}
        signed = sign1(cbor2.dumps(payload), self._key, kid=b"backend")
        self._db.execute("UPDATE account_messages SET signed=? WHERE n=?", (signed, number))

    def pending_messages(self, now: datetime) -> list[tuple[int, str, bytes]]:
        """(n, vin, signed) not yet published and not expired, oldest first; expired ones are deleted
        (a pairing code message holds the code: it is kept no longer than the code is valid)."""
        with transaction(self._db):
            self._db.execute("DELETE FROM account_messages WHERE expires_ms <= ?", (to_millis(now),))
        return [
            (int(n), vin, bytes(signed))
            for n, vin, signed in self._db.execute(
                "SELECT n, vin, signed FROM account_messages WHERE published_ms IS NULL ORDER BY n"
            )
        ]

    def mark_published(self, number: int, now: datetime) -> None:
        """Delivered to the broker (which holds it for an offline car): the signed bytes, a security
        code among them, are not kept."""
        with transaction(self._db):
            self._db.execute(
                "UPDATE account_messages SET published_ms=?, signed=x'' WHERE n=?", (to_millis(now), number)
            )
        checkpoint(self._db)


def _link(row: tuple[Any, ...]) -> Link:
    link_id, vin, account, linked, ended, reason = row
    return Link(
        link_id=int(link_id),
        vin=vin,
        account=account,
        linked=from_millis(linked),
        ended=None if ended is None else from_millis(ended),
        end_reason=reason,
    )


_CODE = re.compile(r"[0-9]{8}")


def check_code_format(code: str) -> str:
    """A security code as the car shows it: 8 digits (spaces allowed, as a person may type them)."""
    compact = code.replace(" ", "")
    if not _CODE.fullmatch(compact):
        raise AccountError("a security code is the 8 digits the car shows")
    return compact
