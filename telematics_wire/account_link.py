"""The account messages' wire format (`vehicles/{vin}/down/account`): the pairing code and the link.

Payload, signed COSE_Sign1 like every backend → vehicle message (docs/protocol.md):

    {"type": "pairing_code", "vin": str, "n": uint, "issued": ms, "expires": ms, "account": str, "code": "8 digits"}
    {"type": "account_link", "vin": str, "n": uint, "issued": ms, "expires": ms, "account": str, "linked": bool}

The car's handling of them (numbering, pairing, profiles) is `tcu.services.account_link`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from telematics_wire.cose import decode
from telematics_wire.errors import RejectedMessageError
from telematics_wire.payload_fields import INT64_MAX, flag, integer, moment, shown, text

MAX_MESSAGE_BYTES = 1024
MAX_ACCOUNT_CHARS = 64
ACCOUNT_PATTERN = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
CODE_PATTERN = re.compile(r"[0-9]{8}")
PAIRING_CODE = "pairing_code"
ACCOUNT_LINK = "account_link"


def _malformed(reason: str) -> RejectedMessageError:
    return RejectedMessageError(f"malformed account message: {reason}")


def parse_account_message(payload: bytes, *, vin: str, now: datetime) -> dict[str, Any]:
    """The checked fields of an account message for this vehicle, or RejectedMessageError with the reason."""
    data = decode(payload, what="account message")
    if not isinstance(data, Mapping):
        raise _malformed(f"the payload is {shown(data)}, not a map")
    kind = text(data, "type", _malformed, max_chars=32)
    if kind not in (PAIRING_CODE, ACCOUNT_LINK):
        raise _malformed(f"unknown type {shown(kind)}; expected {PAIRING_CODE} or {ACCOUNT_LINK}")
    target = text(data, "vin", _malformed, max_chars=17)
    if target != vin:
        raise RejectedMessageError(f"account message for vehicle {shown(target)}, this is {vin}", code="other_vehicle")
    number = integer(data, "n", _malformed, low=1, high=INT64_MAX)
    issued = moment(data, "issued", _malformed)
    expires = moment(data, "expires", _malformed)
    if expires <= now:
        raise RejectedMessageError(
            f"account message {number} expired at {expires.isoformat()} (now {now.isoformat()})", code="expired"
        )
    account = text(data, "account", _malformed, max_chars=MAX_ACCOUNT_CHARS)
    if not ACCOUNT_PATTERN.fullmatch(account):
        raise _malformed(f"account {shown(account)} is not 1..64 letters, digits or ._@+-")
    fields: dict[str, Any] = {"type": kind, "n": number, "issued": issued, "expires": expires, "account": account}
    if kind == PAIRING_CODE:
        code = text(data, "code", _malformed, max_chars=8)
        if not CODE_PATTERN.fullmatch(code):
            raise _malformed("the security code is not 8 digits")
        fields["code"] = code
    else:
        fields["linked"] = flag(data, "linked", _malformed)
    return fields
