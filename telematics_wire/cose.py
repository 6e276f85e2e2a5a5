"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA/Ed25519 (alg -8), sans-I/O, on cbor2 + PyNaCl.

    COSE_Sign1 = #6.18([ protected: bstr .cbor {1: -8}, unprotected: {4: kid}, payload: bstr, signature: bstr ])
    Sig_structure = ["Signature1", protected, external_aad = h'', payload]

Small enough to own (about 130 lines) rather than depend on pycose, whose 1.1.0 cannot decode with
cbor2 >= 6; a test checks our messages against pycose in an isolated environment. The size is checked
before anything is parsed. cbor2 >= 6 decodes what a tag holds immutably (tuples, frozendict): any
sequence and mapping is accepted.

Decoding is strict and total (`decode`): any bytes give a value or RejectedMessageError, whether they
come from an attacker (unsigned) or from the backend's key (signed). The message, its protected header
and the payloads read by telematics_wire.provisioning and telematics_wire.measure_order all go through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from telematics_wire.errors import CborError, RejectedMessageError
from telematics_wire.payload_fields import is_int, shown
from telematics_wire.strict_cbor import MAX_DEPTH, loads_strict

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


_PLAIN = (str, bytes, int, float, type(None))  # bool is an int


def _check_plain(value: object, depth: int, what: str) -> None:
    """Only CBOR's plain data model below the top tag: no tag 18 nested inside the message."""
    if depth > MAX_DEPTH:
        raise RejectedMessageError(f"malformed {what}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_plain(item, depth + 1, what)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_plain(key, depth + 1, what)
            _check_plain(item, depth + 1, what)
    else:
        raise RejectedMessageError(f"malformed {what}: unsupported CBOR item ({type(value).__name__})")


def decode(data: bytes, *, what: str, top_tag: int | None = None) -> Any:
    """Strict CBOR for signed downlink messages (`telematics_wire.strict_cbor`: one item, no duplicate map
    keys, bounded depth, no tags but bignums), with `top_tag`, when given, allowed on top only.

    Any bytes give a value or RejectedMessageError("malformed ...").
    """
    try:
        decoded = loads_strict(data, what, allowed_tags=() if top_tag is None else (top_tag,))
    except CborError as exc:
        raise RejectedMessageError(str(exc)) from exc
    if top_tag is None:
        return decoded
    if not isinstance(decoded, cbor2.CBORTag) or decoded.tag != top_tag:
        raise RejectedMessageError(f"malformed {what}: not a CBOR item with tag {top_tag}")
    _check_plain(decoded.value, 0, what)
    return decoded.value


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:120] + "..."


def _label(headers: Mapping[Any, Any], label: int) -> Any:
    """A header by its integer label; a bool key (True == 1) is not the label 1."""
    return next((value for key, value in headers.items() if is_int(key) and key == label), None)


def verify1(message: bytes, key: VerifyKey, *, max_bytes: int, what: str = "message") -> VerifiedMessage:
    """Verify a COSE_Sign1 message; any bytes give a VerifiedMessage or RejectedMessageError with the reason."""
    if len(message) > max_bytes:
        raise RejectedMessageError(f"oversize {what}: {len(message)} bytes > limit {max_bytes}", code="oversize")
    parts = decode(message, what=what, top_tag=COSE_SIGN1_TAG)
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise RejectedMessageError(f"malformed {what}: COSE_Sign1 must be an array of four items")
    protected, unprotected, payload, signature = parts
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)) or not isinstance(unprotected, Mapping):
        raise RejectedMessageError(f"malformed {what}: COSE_Sign1 items have the wrong types")
    headers = decode(protected, what=f"{what} protected header") if protected else {}
    if not isinstance(headers, Mapping):
        raise RejectedMessageError(f"malformed {what}: the protected header is {shown(headers)}, not a map")
    alg = _label(headers, _HEADER_ALG)
    if not is_int(alg) or alg != ALG_EDDSA:
        raise RejectedMessageError(
            f"{what} refused: algorithm must be EdDSA (-8), got {shown(alg)}", code="bad_signature"
        )
    try:
        key.verify(_sig_structure(protected, payload), signature)
    except (CryptoError, ValueError, TypeError) as exc:
        raise RejectedMessageError(
            f"{what} refused: bad signature (not signed by the pinned backend key)", code="bad_signature"
        ) from exc
    kid = _label(unprotected, _HEADER_KID)
    return VerifiedMessage(payload=payload, kid=kid if isinstance(kid, bytes) else None)
