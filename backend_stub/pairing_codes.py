"""Security codes that pair a vehicle with a ConnectedDrive account (AGB 1.6 a).

The code is sent into the car (by the caller, as an account message) and typed into the portal by the
customer; here it is only ever a keyed digest. A wrong code is counted (`MAX_ATTEMPTS`, then the code is
void), an old one expires (`CODE_TTL`), and a new request replaces the pending one. The table lives in
the account store's database; the caller holds the transaction.
"""

from __future__ import annotations

import hmac
import re
import secrets
import sqlite3
from datetime import datetime, timedelta
from typing import Protocol

from backend_stub.errors import AccountError
from telematics_wire.records import from_millis, to_millis

CODE_TTL = timedelta(minutes=15)
MAX_ATTEMPTS = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairing_codes (
    vin        TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    digest     BLOB NOT NULL,   -- keyed digest: the code itself is only ever in the car
    issued_ms  INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
);
"""

_CODE = re.compile(r"[0-9]{8}")


class Digest(Protocol):
    def digest(self, text: str) -> bytes: ...


class PairingCodes:
    def __init__(self, db: sqlite3.Connection, keyed: Digest) -> None:
        self._db, self._keyed = db, keyed

    def issue(self, vin: str, account: str, now: datetime) -> tuple[str, datetime]:
        """A new code for `vin` and `account` (replacing a pending one), and when it expires."""
        code = f"{secrets.randbelow(10**8):08d}"
        expires = now + CODE_TTL
        self._db.execute(
            "INSERT OR REPLACE INTO pairing_codes VALUES (?, ?, ?, ?, ?, 0)",
            (vin, account, self._keyed.digest(f"{vin}:{code}"), to_millis(now), to_millis(expires)),
        )
        return code, expires

    def check(self, vin: str, account: str, code: str, now: datetime) -> str | None:
        """None when `code` is the pending code of `vin` for `account` (it is used up); else why not."""
        row = self._db.execute(
            "SELECT account, digest, expires_ms, attempts FROM pairing_codes WHERE vin=?", (vin,)
        ).fetchone()
        if row is None:
            return "no security code is pending for this vehicle; request one (account request-code)"
        wanted, digest, expires_ms, attempts = row[0], bytes(row[1]), int(row[2]), int(row[3])
        if now >= from_millis(expires_ms):
            self.forget(vin)
            return f"the security code expired at {from_millis(expires_ms).isoformat()}; request a new one"
        if account != wanted or not hmac.compare_digest(digest, self._keyed.digest(f"{vin}:{code}")):
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                self.forget(vin)
                return f"wrong security code; after {MAX_ATTEMPTS} wrong attempts the code is void: request a new one"
            self._db.execute("UPDATE pairing_codes SET attempts=? WHERE vin=?", (attempts, vin))
            return f"wrong security code for this account ({MAX_ATTEMPTS - attempts} attempt(s) left)"
        self.forget(vin)
        return None

    def forget(self, vin: str) -> None:
        self._db.execute("DELETE FROM pairing_codes WHERE vin=?", (vin,))


def check_code_format(code: str) -> str:
    """A security code as the car shows it: 8 digits (spaces allowed, as a person may type them)."""
    compact = code.replace(" ", "")
    if not _CODE.fullmatch(compact):
        raise AccountError("a security code is the 8 digits the car shows")
    return compact
