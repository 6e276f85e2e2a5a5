"""ConnectedDrive accounts and their link with a vehicle: pairing by a security code, unlinking, consents.

AGB 1.6 a): the customer asks the portal to pair a vehicle with their account; the backend sends a
security code *into that car* (a signed `account` downlink, tcu.services.account_link); the customer
reads it in the car and enters it in the portal (`backend-stub account pair`). The contract begins
when the vehicle appears in the portal, i.e. with the link. A wrong code is refused and counted
(`MAX_ATTEMPTS`, then the code is void), an old one expires (`CODE_TTL`), and only one account is
linked to a vehicle at a time. The codes: `backend_stub.pairing_codes`; the messages into the car:
`backend_stub.account_messages`.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from backend_stub import account_messages, pairing_codes
from backend_stub.account_messages import AccountMessages
from backend_stub.database import open_database, transaction
from backend_stub.errors import AccountError, UnknownVehicleError
from backend_stub.pairing_codes import CODE_TTL, MAX_ATTEMPTS, PairingCodes, check_code_format
from telematics_wire.account_link import ACCOUNT_LINK, ACCOUNT_PATTERN, PAIRING_CODE
from telematics_wire.records import from_millis, to_millis

__all__ = [  # CODE_TTL, MAX_ATTEMPTS and check_code_format live in backend_stub.pairing_codes
    "CODE_TTL",
    "LINK_MESSAGE_TTL",
    "MAX_ATTEMPTS",
    "MAX_RECIPIENT_CHARS",
    "AccountStore",
    "Consent",
    "Link",
    "OwnerChange",
    "Sealer",
    "check_code_format",
]
_LOGGER = logging.getLogger(__name__)

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
CREATE TABLE IF NOT EXISTS account_consents (
    link_id    INTEGER NOT NULL,
    recipient  TEXT NOT NULL,
    granted_ms INTEGER NOT NULL,
    ended_ms   INTEGER,
    PRIMARY KEY (link_id, recipient)
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
        self._db = open_database(path, _SCHEMA + pairing_codes.SCHEMA + account_messages.SCHEMA)
        self._sealer = sealer
        self._codes = PairingCodes(self._db, sealer)
        self._messages = AccountMessages(self._db, signing_key)
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
            code, expires = self._codes.issue(vin, account, now)
            self._messages.queue(vin, {"type": PAIRING_CODE, "account": account, "code": code}, now, expires)
        _LOGGER.info("security code for account %s sent into vehicle %s, valid until %s", account, vin, expires)
        return expires

    def pair(self, vin: str, account: str, code: str, now: datetime) -> Link:
        """The customer enters the code read in the car: the link (and the contract) begins, or a refusal."""
        account = _account_id(account)
        if not self._db.execute("SELECT 1 FROM accounts WHERE account=?", (account,)).fetchone():
            # A mistyped account name is not a guess at the code: it costs no attempt.
            raise AccountError(f"no account {account}: check the name, or create it (backend-stub account create)")
        with transaction(self._db):  # a refusal commits too: the count of wrong attempts must stand
            outcome = self._try_code(vin, account, code, now)
        if isinstance(outcome, str):
            _LOGGER.warning("pairing of vehicle %s refused: %s", vin, outcome)
            raise AccountError(f"pairing of vehicle {vin} refused: {outcome}")
        _LOGGER.info("vehicle %s paired with account %s", vin, account)
        return outcome

    def _try_code(self, vin: str, account: str, code: str, now: datetime) -> Link | str:
        refused = self._codes.check(vin, account, code, now)
        if refused is not None:
            return refused
        cursor = self._db.execute(
            "INSERT INTO account_links (vin, account, linked_ms) VALUES (?, ?, ?)", (vin, account, to_millis(now))
        )
        self._messages.queue(
            vin, {"type": ACCOUNT_LINK, "account": account, "linked": True}, now, now + LINK_MESSAGE_TTL
        )
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
                self._messages.queue(vin, body, now, now + LINK_MESSAGE_TTL)
        return ended

    def _end_link(self, vin: str, now: datetime, reason: str) -> Link | None:
        self._codes.forget(vin)
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

    # -- messages into the car (backend_stub.account_messages) ----------------------------------------

    def pending_messages(self, now: datetime) -> list[tuple[int, str, bytes]]:
        """(n, vin, signed) not yet published and not expired, oldest first."""
        return self._messages.pending(now)

    def mark_published(self, number: int, now: datetime) -> None:
        self._messages.mark_published(number, now)


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
