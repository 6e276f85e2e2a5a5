"""Sans-I/O codec of the sealed envelopes, both directions (docs/protocol.md is the spec).

Vehicle → backend record:   CBOR {"v": 1, "vin": str, "seq": uint, ["epoch": bstr(16)], "nonce": bstr(24), "box": bstr}
Backend → vehicle ack:      CBOR {"v": 1, "vin": str, ["epoch": bstr(16)], "nonce": bstr(24), "box": bstr}

`box` is NaCl crypto_box (X25519 + XSalsa20-Poly1305) of a CBOR map between the vehicle's and the
backend's keys. The sealed map repeats the clear header ("vin", "epoch", and "seq" for records)
because crypto_box has no associated data: the opener compares them, so a header cannot be altered
without failing authentication. A record's sequence number is assigned by the durable queue and never
reused within its queue's `epoch` (a random identity created with the queue; absent for queues that
predate epochs). Decoding is total: any bytes give a value or an `EnvelopeError` with the reason.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from nacl.bindings import crypto_box_easy_afternm
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.utils import random

from telematics_wire.errors import CborError, EnvelopeError
from telematics_wire.records import MAX_MILLIS, ReceivedRecord, Record, RecordKind, from_millis, to_millis
from telematics_wire.strict_cbor import describe, loads_strict

ENVELOPE_VERSION = 1
NONCE_BYTES = Box.NONCE_SIZE
EPOCH_BYTES = 16
LEGACY_EPOCH = b""  # the queue of an agent older than epochs: the envelope carries no "epoch"
DEFAULT_MAX_PAYLOAD = 64 * 1024
# 2^53 - 1: exact in every JSON and JavaScript consumer and in a float64; at 1,000 records/s a
# queue needs 285,000 years to reach it, so the bound costs nothing.
MAX_SEQ = 2**53 - 1
# An ack names at most this many ranges; a vehicle keeps at most 500 records in flight, so an honest
# ack never comes near it.
MAX_ACK_RANGES = 1024
MAX_ACK_RANGE_WIDTH = 1_000_000
MAX_KIND_CHARS = 32

_RECORD_KEYS = frozenset({"v", "vin", "seq", "epoch", "nonce", "box"})
_ACK_KEYS = frozenset({"v", "vin", "epoch", "nonce", "box"})


def _loads_map(payload: bytes, what: str, max_bytes: int) -> dict[Any, Any]:
    if len(payload) > max_bytes:
        raise EnvelopeError(f"oversize {what}: {len(payload)} bytes > limit {max_bytes}")
    try:
        value = loads_strict(payload, what)
    except CborError as exc:
        raise EnvelopeError(str(exc)) from exc
    if not isinstance(value, dict):
        raise EnvelopeError(f"malformed {what}: expected a CBOR map, got {type(value).__name__}")
    return value


def _field(data: Mapping[Any, Any], key: str, kind: type, what: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EnvelopeError(f"malformed {what}: field {key!r} missing or not {kind.__name__}")
    return value


def _uint(data: Mapping[Any, Any], key: str, what: str, low: int, high: int) -> int:
    value = _field(data, key, int, what)
    if not low <= value <= high:
        raise EnvelopeError(f"malformed {what}: {key!r} is {describe(value)}, outside {low}..{high}")
    return int(value)


def _epoch(data: Mapping[Any, Any], what: str) -> bytes:
    if "epoch" not in data:
        return LEGACY_EPOCH
    epoch = _field(data, "epoch", bytes, what)
    if len(epoch) != EPOCH_BYTES:
        raise EnvelopeError(f"malformed {what}: epoch is {len(epoch)} bytes, expected {EPOCH_BYTES}")
    return bytes(epoch)


def _open_outer(payload: bytes, what: str, max_bytes: int, keys: frozenset[str]) -> tuple[dict[Any, Any], bytes, bytes]:
    outer = _loads_map(payload, what, max_bytes)
    version = outer.get("v")
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise EnvelopeError(
            f"unsupported {what} version {describe(version)}; this side speaks the integer {ENVELOPE_VERSION}"
        )
    unknown = [key for key in outer if key not in keys]
    if unknown:
        raise EnvelopeError(f"malformed {what}: unknown clear field(s) {', '.join(describe(k) for k in unknown[:5])}")
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


class _Encoder(threading.local):
    """One cbor2 encoder per thread, used again for every value: making one per `cbor2.dumps` is about a
    quarter of the cost of encoding a telemetry record. The bytes are `cbor2.dumps`'s."""

    def __init__(self) -> None:
        self.output = io.BytesIO()
        self.encoder = cbor2.CBOREncoder(self.output)

    def dumps(self, value: object) -> bytes:
        output = self.output
        output.seek(0)
        output.truncate()
        try:
            self.encoder.encode(value)
        except BaseException:
            self.encoder = cbor2.CBOREncoder(output)  # a failed encoding may leave the old one's state half-way
            raise
        return output.getvalue()


_ENCODER = _Encoder()


def _seal(box: Box, header: dict[str, Any], content: dict[str, Any], nonce: bytes | None = None) -> bytes:
    nonce = random(NONCE_BYTES) if nonce is None else nonce
    # The binding `Box.encrypt` calls, without its EncryptedMessage (a copy of nonce + ciphertext) we drop.
    ciphertext = crypto_box_easy_afternm(_ENCODER.dumps(content), nonce, box.shared_key())
    return _ENCODER.dumps({"v": ENVELOPE_VERSION, **header, "nonce": nonce, "box": ciphertext})


def _epoch_header(epoch: bytes) -> dict[str, bytes]:
    if epoch and len(epoch) != EPOCH_BYTES:
        raise ValueError(f"a queue epoch is {EPOCH_BYTES} bytes (or empty for a legacy queue), not {len(epoch)}")
    return {"epoch": epoch} if epoch else {}


def seal_record(
    box: Box, vin: str, seq: int, record: Record, *, epoch: bytes = LEGACY_EPOCH, nonce: bytes | None = None
) -> bytes:
    """Seal a record with the vehicle→backend box (vehicle private key, backend public key).

    `nonce` exists for reproducible test vectors only; by default every seal draws a fresh random one.
    """
    if not 1 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence number {describe(seq)} outside 1..{MAX_SEQ}")
    header: dict[str, Any] = {"vin": vin, "seq": seq, **_epoch_header(epoch)}
    content = {**header, "kind": record.kind.value, "ts": to_millis(record.created), "body": dict(record.body)}
    return _seal(box, header, content, nonce)


def peek_vin(payload: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD) -> str:
    """The VIN an envelope claims, before any key is chosen to open it."""
    return str(_field(_loads_map(payload, "envelope", max_bytes), "vin", str, "envelope"))


def open_record(box: Box, payload: bytes, *, topic_vin: str, max_bytes: int = DEFAULT_MAX_PAYLOAD) -> ReceivedRecord:
    """Open a record the backend received on `vehicles/{topic_vin}/up/records`."""
    outer, nonce, ciphertext = _open_outer(payload, "envelope", max_bytes, _RECORD_KEYS)
    vin = _field(outer, "vin", str, "envelope")
    if vin != topic_vin:
        raise EnvelopeError(f"envelope names VIN {vin:.40} but arrived on the topic of VIN {topic_vin}")
    seq = _uint(outer, "seq", "envelope", 1, MAX_SEQ)
    epoch = _epoch(outer, "envelope")
    inner = _decrypt(box, nonce, ciphertext, "envelope", vin)
    if (
        inner.get("vin") != vin
        or type(inner.get("seq")) is not int
        or inner["seq"] != seq
        or _epoch(inner, "") != epoch
    ):
        raise EnvelopeError(f"envelope from VIN {vin}: sealed header does not match the clear header (tampered)")
    kind = _field(inner, "kind", str, "record")
    if not 1 <= len(kind) <= MAX_KIND_CHARS:
        raise EnvelopeError(
            f"malformed record from VIN {vin}: kind {describe(kind)} is not 1..{MAX_KIND_CHARS} characters"
        )
    return ReceivedRecord(
        vin=vin,
        seq=seq,
        epoch=epoch,
        kind=RecordKind(kind),
        kind_name=kind,
        created=from_millis(_uint(inner, "ts", "record", 0, MAX_MILLIS)),
        body=_field(inner, "body", dict, "record"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The backend has stored these sequence numbers of this queue epoch; the vehicle may forget them."""

    vin: str
    epoch: bytes
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


def seal_ack(
    box: Box, vin: str, seqs: Iterable[int], *, epoch: bytes = LEGACY_EPOCH, nonce: bytes | None = None
) -> bytes:
    """Seal an ack with the backend→vehicle box (backend private key, vehicle public key)."""
    header = {"vin": vin, **_epoch_header(epoch)}
    return _seal(box, header, {**header, "acks": seq_ranges(seqs)}, nonce)


def open_ack(box: Box, payload: bytes, *, vin: str, max_bytes: int = DEFAULT_MAX_PAYLOAD) -> Ack:
    outer, nonce, ciphertext = _open_outer(payload, "ack", max_bytes, _ACK_KEYS)
    if outer.get("vin") != vin:
        raise EnvelopeError(f"ack names VIN {describe(outer.get('vin'))}, not this vehicle {vin}")
    epoch = _epoch(outer, "ack")
    inner = _decrypt(box, nonce, ciphertext, "ack", vin)
    if inner.get("vin") != vin or _epoch(inner, "sealed ack content") != epoch:
        raise EnvelopeError(f"ack for VIN {vin}: sealed header does not match the clear header (tampered)")
    ranges = _field(inner, "acks", list, "ack")
    if len(ranges) > MAX_ACK_RANGES:
        raise EnvelopeError(f"malformed ack for VIN {vin}: {len(ranges)} ranges, at most {MAX_ACK_RANGES}")
    seqs: set[int] = set()
    for item in ranges:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(type(x) is int for x in item)
            or not 1 <= item[0] <= item[1] <= MAX_SEQ
            or item[1] - item[0] >= MAX_ACK_RANGE_WIDTH
        ):
            raise EnvelopeError(f"malformed ack for VIN {vin}: bad range {describe(item)}")
        seqs.update(range(item[0], item[1] + 1))
    return Ack(vin=vin, epoch=epoch, seqs=frozenset(seqs))


def vehicle_box(vehicle_key: PrivateKey, backend_key: PublicKey) -> Box:
    return Box(vehicle_key, backend_key)


def backend_box(backend_key: PrivateKey, vehicle_key: PublicKey) -> Box:
    return Box(backend_key, vehicle_key)
