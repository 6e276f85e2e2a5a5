"""Sans-I/O codec of the sealed envelopes, both directions (docs/protocol.md is the spec).

Vehicle → backend record:   CBOR {"v": 1, "vin": str, "seq": uint, "nonce": bstr(24), "box": bstr}
Backend → vehicle ack:      CBOR {"v": 1, "vin": str, "nonce": bstr(24), "box": bstr}

`box` is NaCl crypto_box (X25519 + XSalsa20-Poly1305) of a CBOR map between the vehicle's and the
backend's keys. The sealed map repeats the clear header ("vin", and "seq" for records) because
crypto_box has no associated data: the opener compares both, so a header cannot be altered without
failing authentication. A record's sequence number is assigned by the durable queue and never reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.utils import random

from tcu.errors import EnvelopeError
from tcu.uplink.records import ReceivedRecord, Record, RecordKind, from_millis, to_millis

ENVELOPE_VERSION = 1
NONCE_BYTES = Box.NONCE_SIZE
DEFAULT_MAX_PAYLOAD = 64 * 1024


def _loads_map(payload: bytes, what: str, max_bytes: int) -> dict[Any, Any]:
    if len(payload) > max_bytes:
        raise EnvelopeError(f"oversize {what}: {len(payload)} bytes > limit {max_bytes}")
    try:
        value = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise EnvelopeError(f"malformed CBOR in {what}: {exc}") from exc
    if not isinstance(value, dict):
        raise EnvelopeError(f"malformed {what}: expected a CBOR map, got {type(value).__name__}")
    return value


def _field(data: Mapping[Any, Any], key: str, kind: type, what: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EnvelopeError(f"malformed {what}: field {key!r} missing or not {kind.__name__}")
    return value


def _open_outer(payload: bytes, what: str, max_bytes: int) -> tuple[dict[Any, Any], bytes, bytes]:
    outer = _loads_map(payload, what, max_bytes)
    version = outer.get("v")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported {what} version {version!r}; this side speaks {ENVELOPE_VERSION}")
    nonce = _field(outer, "nonce", bytes, what)
    if len(nonce) != NONCE_BYTES:
        raise EnvelopeError(f"malformed {what}: nonce is {len(nonce)} bytes, expected {NONCE_BYTES}")
    return outer, nonce, _field(outer, "box", bytes, what)


def _decrypt(box: Box, nonce: bytes, ciphertext: bytes, what: str, vin: str) -> dict[Any, Any]:
    try:
        plaintext = box.decrypt(ciphertext, nonce)
    except CryptoError as exc:
        raise EnvelopeError(
            f"{what} for VIN {vin} failed authentication: not sealed with the keys enrolled for this "
            "vehicle (forged, tampered or wrong key)"
        ) from exc
    return _loads_map(plaintext, f"sealed {what} content", len(plaintext))


def _seal(box: Box, header: dict[str, Any], content: dict[str, Any], nonce: bytes | None = None) -> bytes:
    nonce = random(NONCE_BYTES) if nonce is None else nonce
    ciphertext = box.encrypt(cbor2.dumps(content), nonce).ciphertext
    return cbor2.dumps({"v": ENVELOPE_VERSION, **header, "nonce": nonce, "box": ciphertext})


def seal_record(box: Box, vin: str, seq: int, record: Record, *, nonce: bytes | None = None) -> bytes:
    """Seal a record with the vehicle→backend box (vehicle private key, backend public key).

    `nonce` exists for reproducible test vectors only; by default every seal draws a fresh random one.
    """
    content = {
        "vin": vin,
        "seq": seq,
        "kind": record.kind.value,
        "ts": to_millis(record.created),
        "body": dict(record.body),
    }
    return _seal(box, {"vin": vin, "seq": seq}, content, nonce)


def peek_vin(payload: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD) -> str:
    """The VIN an envelope claims, before any key is chosen to open it."""
    return str(_field(_loads_map(payload, "envelope", max_bytes), "vin", str, "envelope"))


def open_record(box: Box, payload: bytes, *, topic_vin: str, max_bytes: int = DEFAULT_MAX_PAYLOAD) -> ReceivedRecord:
    """Open a record the backend received on `vehicles/{topic_vin}/up/records`."""
    outer, nonce, ciphertext = _open_outer(payload, "envelope", max_bytes)
    vin = _field(outer, "vin", str, "envelope")
    seq = _field(outer, "seq", int, "envelope")
    if vin != topic_vin:
        raise EnvelopeError(f"envelope names VIN {vin} but arrived on the topic of VIN {topic_vin}")
    if seq < 1:
        raise EnvelopeError(f"malformed envelope from VIN {vin}: sequence number {seq} < 1")
    inner = _decrypt(box, nonce, ciphertext, "envelope", vin)
    if inner.get("vin") != vin or inner.get("seq") != seq:
        raise EnvelopeError(f"envelope from VIN {vin}: sealed header does not match the clear header (tampered)")
    body = _field(inner, "body", dict, "record")
    return ReceivedRecord(
        vin=vin,
        seq=seq,
        kind=RecordKind(_field(inner, "kind", str, "record")),
        created=from_millis(_field(inner, "ts", int, "record")),
        body=body,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The backend has stored these sequence numbers; the vehicle may forget them."""

    vin: str
    seqs: frozenset[int]


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """[1, 2, 3, 7] → [[1, 3], [7, 7]]: acks stay small when the backend confirms a whole burst."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def seal_ack(box: Box, vin: str, seqs: Iterable[int], *, nonce: bytes | None = None) -> bytes:
    """Seal an ack with the backend→vehicle box (backend private key, vehicle public key)."""
    return _seal(box, {"vin": vin}, {"vin": vin, "acks": seq_ranges(seqs)}, nonce)


def open_ack(box: Box, payload: bytes, *, vin: str, max_bytes: int = DEFAULT_MAX_PAYLOAD) -> Ack:
    outer, nonce, ciphertext = _open_outer(payload, "ack", max_bytes)
    if outer.get("vin") != vin:
        raise EnvelopeError(f"ack names VIN {outer.get('vin')!r}, not this vehicle {vin}")
    inner = _decrypt(box, nonce, ciphertext, "ack", vin)
    if inner.get("vin") != vin:
        raise EnvelopeError(f"ack for VIN {vin}: sealed header does not match the clear header (tampered)")
    ranges = _field(inner, "acks", list, "ack")
    seqs: set[int] = set()
    for item in ranges:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
            or not 1 <= item[0] <= item[1]
            or item[1] - item[0] > 1_000_000
        ):
            raise EnvelopeError(f"malformed ack for VIN {vin}: bad range {item!r}")
        seqs.update(range(item[0], item[1] + 1))
    return Ack(vin=vin, seqs=frozenset(seqs))


def vehicle_box(vehicle_key: PrivateKey, backend_key: PublicKey) -> Box:
    return Box(vehicle_key, backend_key)


def backend_box(backend_key: PrivateKey, vehicle_key: PublicKey) -> Box:
    return Box(backend_key, vehicle_key)
