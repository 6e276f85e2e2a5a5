"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA/Ed25519 (alg -8), sans-I/O, on cbor2 + PyNaCl.

    COSE_Sign1 = #6.18([ protected: bstr .cbor {1: -8}, unprotected: {4: kid}, payload: bstr, signature: bstr ])
    Sig_structure = ["Signature1", protected, external_aad = h'', payload]

Small enough to own (about 60 lines) rather than depend on pycose, whose 1.1.0 cannot decode with
cbor2 >= 6; a test checks our messages against pycose in an isolated environment. The size is checked
before anything is parsed. cbor2 >= 6 decodes what a tag holds immutably (tuples, frozendict): any
sequence and mapping is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from tcu.errors import RejectedMessageError

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
_HEADER_ALG = 1
_HEADER_KID = 4


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    payload: bytes
    kid: bytes | None


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign1(payload: bytes, key: SigningKey, *, kid: bytes | None = None) -> bytes:
    protected = cbor2.dumps({_HEADER_ALG: ALG_EDDSA})
    unprotected = {} if kid is None else {_HEADER_KID: kid}
    signature = key.sign(_sig_structure(protected, payload)).signature
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, unprotected, payload, signature]))


def verify1(message: bytes, key: VerifyKey, *, max_bytes: int, what: str = "message") -> VerifiedMessage:
    """Verify a COSE_Sign1 message; raises RejectedMessageError with the reason."""
    if len(message) > max_bytes:
        raise RejectedMessageError(f"oversize {what}: {len(message)} bytes > limit {max_bytes}", code="oversize")
    try:
        decoded: Any = cbor2.loads(message)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise RejectedMessageError(f"malformed {what}: not CBOR ({exc})") from exc
    if not isinstance(decoded, cbor2.CBORTag) or decoded.tag != COSE_SIGN1_TAG:
        raise RejectedMessageError(f"malformed {what}: not a tagged COSE_Sign1 message")
    parts = decoded.value
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise RejectedMessageError(f"malformed {what}: COSE_Sign1 must be an array of four items")
    protected, unprotected, payload, signature = parts
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)) or not isinstance(unprotected, Mapping):
        raise RejectedMessageError(f"malformed {what}: COSE_Sign1 items have the wrong types")
    try:
        headers = cbor2.loads(protected) if protected else {}
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise RejectedMessageError(f"malformed {what}: protected header is not CBOR") from exc
    if not isinstance(headers, Mapping) or headers.get(_HEADER_ALG) != ALG_EDDSA:
        raise RejectedMessageError(
            f"{what} refused: algorithm must be EdDSA (-8), got {headers!r}", code="bad_signature"
        )
    try:
        key.verify(_sig_structure(protected, payload), signature)
    except (BadSignatureError, ValueError) as exc:
        raise RejectedMessageError(
            f"{what} refused: bad signature (not signed by the pinned backend key)", code="bad_signature"
        ) from exc
    kid = unprotected.get(_HEADER_KID)
    return VerifiedMessage(payload=payload, kid=kid if isinstance(kid, bytes) else None)
