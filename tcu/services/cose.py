"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA/Ed25519 (alg -8), sans-I/O, on cbor2 + PyNaCl.

    COSE_Sign1 = #6.18([ protected: bstr .cbor {1: -8}, unprotected: {4: kid}, payload: bstr, signature: bstr ])
    Sig_structure = ["Signature1", protected, external_aad = h'', payload]

Small enough to own (about 130 lines) rather than depend on pycose, whose 1.1.0 cannot decode with
cbor2 >= 6; a test checks our messages against pycose in an isolated environment. The size is checked
before anything is parsed. cbor2 >= 6 decodes what a tag holds immutably (tuples, frozendict): any
sequence and mapping is accepted.

Decoding is strict and total (`decode`): any bytes give a value or RejectedMessageError, whether they
come from an attacker (unsigned) or from the backend's key (signed). The message, its protected header
and the payloads read by tcu.services.provisioning and tcu.services.measure_order all go through it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from tcu.errors import RejectedMessageError
from tcu.services.payload_fields import is_int, shown

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
_HEADER_ALG = 1
_HEADER_KID = 4
MAX_DEPTH = 16  # our payloads nest 4 deep; deeper is an attack on the decoder, not a message


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


def _refuse_tag(*_args: object) -> Any:
    raise ValueError("this tag is not allowed in a signed downlink message")


# Tags cbor2 would turn into datetimes, decimals, regular expressions, MIME messages, UUIDs, sets, IP
# addresses, or (28/29) shared references that can build cyclic values: none belongs in these messages.
# Bignums (2/3) decode to plain ints and meet the same bounds as any integer.
_REFUSED_TAGS = {tag: _refuse_tag for tag in (0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 256, 258, 260, 261)}
_PLAIN = (str, bytes, int, float, type(None))  # bool is an int


def _check_plain(value: object, depth: int, what: str) -> None:
    """Only CBOR's plain data model: numbers, strings, bools, null, arrays and maps, nested <= MAX_DEPTH."""
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
    """Strict CBOR for signed downlink messages: exactly one item, no trailing bytes, no duplicate map
    keys, depth <= MAX_DEPTH, plain data only (under `top_tag`, when given, the one tag allowed on top).

    Any bytes give a value or RejectedMessageError("malformed ..."): cbor2 raises a wide range of
    exceptions on hostile input (its own, ValueError, OverflowError, RecursionError, MemoryError, and
    whatever a tag decoder raises), so everything it raises is caught here, at the boundary.
    """
    stream = io.BytesIO(data)
    try:
        decoded = cbor2.CBORDecoder(
            stream, allow_duplicate_keys=False, max_depth=MAX_DEPTH, semantic_decoders=_REFUSED_TAGS
        ).decode()
    except Exception as exc:  # the docstring says why: every failure of the decoder is "malformed"
        raise RejectedMessageError(f"malformed {what}: not valid CBOR ({_short(exc)})") from exc
    if stream.tell() != len(data):
        raise RejectedMessageError(
            f"malformed {what}: {len(data) - stream.tell()} trailing byte(s) after the CBOR item"
        )
    inner = decoded
    if top_tag is not None:
        if not isinstance(decoded, cbor2.CBORTag) or decoded.tag != top_tag:
            raise RejectedMessageError(f"malformed {what}: not a CBOR item with tag {top_tag}")
        inner = decoded.value
    _check_plain(inner, 0, what)
    return inner


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
