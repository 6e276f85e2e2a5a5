"""Messages from the account store into the car: the pairing code, and that the account link began or
ended (tcu.services.account_link).

Each is a COSE_Sign1 message numbered per store (the car applies only numbers above the last it applied)
with an expiry; the account service publishes the pending ones. What is published or expired is not kept:
a pairing code is in the signed bytes. The table lives in the account store's database; the caller holds
the transaction when queueing.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import cbor2
from nacl.signing import SigningKey

from backend_stub.database import checkpoint, transaction
from backend_stub.errors import AccountError
from telematics_wire.cose import sign1
from telematics_wire.records import to_millis

SCHEMA = """
CREATE TABLE IF NOT EXISTS account_messages (
    n            INTEGER PRIMARY KEY AUTOINCREMENT,  -- the car applies only numbers above the last it applied
    vin          TEXT NOT NULL,
    signed       BLOB NOT NULL,
    expires_ms   INTEGER NOT NULL,
    published_ms INTEGER
);
"""


class AccountMessages:
    def __init__(self, db: sqlite3.Connection, signing_key: SigningKey | None) -> None:
        self._db, self._key = db, signing_key

    def queue(self, vin: str, body: dict[str, Any], now: datetime, expires: datetime) -> None:
        if self._key is None:
            raise AccountError("[keys] signing_key is not configured: messages into the car cannot be signed")
        cursor = self._db.execute(
            "INSERT INTO account_messages (vin, signed, expires_ms) VALUES (?, x'', ?)", (vin, to_millis(expires))
        )
        number = int(cursor.lastrowid or 0)
        payload = {**body, "vin": vin, "n": number, "issued": to_millis(now), "expires": to_millis(expires)}
        signed = sign1(cbor2.dumps(payload), self._key, kid=b"backend")
        self._db.execute("UPDATE account_messages SET signed=? WHERE n=?", (signed, number))

    def pending(self, now: datetime) -> list[tuple[int, str, bytes]]:
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
