"""The envelope and ack codecs against hostile input: every input gives a value or an EnvelopeError."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import Box

from telematics_wire.envelope import MAX_ACK_RANGES, MAX_SEQ, open_ack, open_record, seal_ack, seal_record
from telematics_wire.errors import CborError, EnvelopeError, WireError
from telematics_wire.records import Record, RecordKind
from telematics_wire.strict_cbor import describe, loads_strict
from tests.conftest import VIN

CREATED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EPOCH = bytes(range(16))
T = TypeVar("T")
BIGNUM = 10**5000  # past Python's 4,300-digit int-to-str limit: str() of it raises ValueError


def _record() -> Record:
    return Record(kind=RecordKind.TELEMETRY, created=CREATED, body={"signals": {"Vehicle.Speed": {"v": 50, "t": 1}}})


def _outer(vehicle_box: Box, **changes: Any) -> bytes:
    outer = cbor2.loads(seal_record(vehicle_box, VIN, 1, _record(), epoch=EPOCH))
    outer.update(changes)
    return cbor2.dumps(outer)


def _sealed(vehicle_box: Box, content: dict[str, Any], *, seq: int = 1, **clear: Any) -> bytes:
    """An envelope sealed with the real vehicle key around arbitrary content: the authenticated attacker."""
    nonce = os.urandom(24)
    box = vehicle_box.encrypt(cbor2.dumps(content), nonce).ciphertext
    return cbor2.dumps({"v": 1, "vin": VIN, "seq": seq, **clear, "nonce": nonce, "box": box})


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (True, "version True"),
        (1.0, "version 1.0"),
        pytest.param(BIGNUM, "version an integer of 16610 bits", id="bignum"),
        (-(2**64), "version -18446744073709551616"),
        ("1", "version '1'"),
    ],
)
def test_version_must_be_the_integer_one(vehicle_box: Box, backend_box: Box, version: Any, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        open_record(backend_box, _outer(vehicle_box, v=version), topic_vin=VIN)


@pytest.mark.parametrize("seq", [0, -1, 2**53, 2**63, 2**64, pytest.param(BIGNUM, id="bignum"), True, 1.0])
def test_sequence_numbers_outside_the_documented_range_are_refused(
    vehicle_box: Box, backend_box: Box, seq: Any
) -> None:
    with pytest.raises(EnvelopeError, match="'seq'"):
        open_record(backend_box, _outer(vehicle_box, seq=seq), topic_vin=VIN)


def test_the_largest_sequence_number_opens(vehicle_box: Box, backend_box: Box) -> None:
    payload = seal_record(vehicle_box, VIN, MAX_SEQ, _record(), epoch=EPOCH)
    assert open_record(backend_box, payload, topic_vin=VIN).seq == MAX_SEQ


def test_trailing_bytes_after_the_envelope_are_refused(vehicle_box: Box, backend_box: Box) -> None:
    payload = seal_record(vehicle_box, VIN, 1, _record(), epoch=EPOCH) + b"\x00"
    with pytest.raises(EnvelopeError, match="1 byte"):
        open_record(backend_box, payload, topic_vin=VIN)


def test_a_duplicate_clear_key_is_refused(vehicle_box: Box, backend_box: Box) -> None:
    # {"vin": A, ..., "vin": B}: cbor2 alone keeps the last, another decoder may keep the first.
    payload = seal_record(vehicle_box, VIN, 1, _record(), epoch=EPOCH)
    duplicated = b"\xa7" + payload[1:] + cbor2.dumps("vin") + cbor2.dumps(VIN)
    with pytest.raises(EnvelopeError, match="Duplicate map key: 'vin'"):
        open_record(backend_box, duplicated, topic_vin=VIN)


def test_unknown_clear_fields_are_refused(vehicle_box: Box, backend_box: Box) -> None:
    with pytest.raises(EnvelopeError, match="unknown clear field"):
        open_record(backend_box, _outer(vehicle_box, smuggled=b"x"), topic_vin=VIN)


@pytest.mark.parametrize("ts", [-1, 253_402_300_800_000, 2**63, pytest.param(BIGNUM, id="bignum"), True, 1.5])
def test_sealed_creation_time_outside_year_9999_is_refused(vehicle_box: Box, backend_box: Box, ts: Any) -> None:
    content = {"vin": VIN, "seq": 1, "kind": "telemetry", "ts": ts, "body": {}}
    with pytest.raises(EnvelopeError, match="'ts'"):
        open_record(backend_box, _sealed(vehicle_box, content), topic_vin=VIN)


def test_a_sealed_bool_sequence_number_does_not_pass_for_one(vehicle_box: Box, backend_box: Box) -> None:
    content = {"vin": VIN, "seq": True, "kind": "telemetry", "ts": 1, "body": {}}
    with pytest.raises(EnvelopeError, match="tampered"):
        open_record(backend_box, _sealed(vehicle_box, content, seq=1), topic_vin=VIN)


def test_epoch_is_authenticated(vehicle_box: Box, backend_box: Box) -> None:
    with pytest.raises(EnvelopeError, match="tampered"):
        open_record(backend_box, _outer(vehicle_box, epoch=bytes(16)), topic_vin=VIN)
    with pytest.raises(EnvelopeError, match="epoch is 3 bytes"):
        open_record(backend_box, _outer(vehicle_box, epoch=b"abc"), topic_vin=VIN)


def test_an_envelope_without_epoch_is_the_legacy_queue(vehicle_box: Box, backend_box: Box) -> None:
    opened = open_record(backend_box, seal_record(vehicle_box, VIN, 3, _record()), topic_vin=VIN)
    assert (opened.seq, opened.epoch) == (3, b"")
    assert (
        open_record(backend_box, seal_record(vehicle_box, VIN, 3, _record(), epoch=EPOCH), topic_vin=VIN).epoch == EPOCH
    )


def test_an_unknown_kind_keeps_its_name(vehicle_box: Box, backend_box: Box) -> None:
    content = {"vin": VIN, "seq": 1, "kind": "diagnosis", "ts": 1, "body": {}}
    opened = open_record(backend_box, _sealed(vehicle_box, content), topic_vin=VIN)
    assert (opened.kind, opened.kind_name) == (RecordKind.UNKNOWN, "diagnosis")
    content["kind"] = "x" * 33
    with pytest.raises(EnvelopeError, match="kind"):
        open_record(backend_box, _sealed(vehicle_box, content), topic_vin=VIN)


# -- acks ---------------------------------------------------------------------------------------


def _ack(backend_box: Box, content: dict[str, Any], **clear: Any) -> bytes:
    nonce = os.urandom(24)
    box = backend_box.encrypt(cbor2.dumps(content), nonce).ciphertext
    return cbor2.dumps({"v": 1, "vin": VIN, **clear, "nonce": nonce, "box": box})


@pytest.mark.parametrize(
    ("field", "value"),
    [pytest.param("v", BIGNUM, id="v-bignum"), pytest.param("vin", BIGNUM, id="vin-bignum"), ("v", True)],
)
def test_an_ack_with_a_bignum_or_bool_header_is_refused(
    backend_box: Box, vehicle_box: Box, field: str, value: Any
) -> None:
    payload = cbor2.loads(seal_ack(backend_box, VIN, [1], epoch=EPOCH))
    payload[field] = value
    with pytest.raises(EnvelopeError):
        open_ack(vehicle_box, cbor2.dumps(payload), vin=VIN)


@pytest.mark.parametrize(
    "ranges",
    [
        [[1, 2**64]],
        pytest.param([[BIGNUM, BIGNUM]], id="bignum"),
        [[True, 2]],
        [[0, 1]],
        [[1, 1_000_001]],
        pytest.param([[n, n] for n in range(1, MAX_ACK_RANGES + 2)], id="too-many-ranges"),
    ],
)
def test_malformed_ack_ranges_are_refused(backend_box: Box, vehicle_box: Box, ranges: list[list[Any]]) -> None:
    with pytest.raises(EnvelopeError, match="malformed ack"):
        open_ack(vehicle_box, _ack(backend_box, {"vin": VIN, "acks": ranges}), vin=VIN)


def test_an_ack_names_its_queue_epoch(backend_box: Box, vehicle_box: Box) -> None:
    ack = open_ack(vehicle_box, seal_ack(backend_box, VIN, [5, 6, 7], epoch=EPOCH), vin=VIN)
    assert (ack.epoch, ack.seqs) == (EPOCH, frozenset({5, 6, 7}))
    tampered = cbor2.loads(seal_ack(backend_box, VIN, [5], epoch=EPOCH))
    tampered["epoch"] = bytes(16)
    with pytest.raises(EnvelopeError, match="tampered"):
        open_ack(vehicle_box, cbor2.dumps(tampered), vin=VIN)


# -- fuzzing ------------------------------------------------------------------------------------

_SCALARS = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
CBOR_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=5),
    max_leaves=30,
)
_HEADER_KEYS = st.sampled_from(["v", "vin", "seq", "epoch", "nonce", "box", "kind", "ts", "body", "acks"])
_FIELD_VALUES = CBOR_VALUES | st.just(VIN) | st.just(1) | st.binary(min_size=16, max_size=24)
ENVELOPE_LIKE = st.dictionaries(_HEADER_KEYS, _FIELD_VALUES, max_size=8)


def _outcome(call: Callable[[], T]) -> T | WireError:
    """The value, or the package's own error: anything else escapes and fails the test."""
    try:
        return call()
    except WireError as exc:
        return exc


_FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


@_FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_open_or_are_refused(backend_box: Box, vehicle_box: Box, payload: bytes) -> None:
    for outcome in (
        _outcome(lambda: open_record(backend_box, payload, topic_vin=VIN)),
        _outcome(lambda: open_ack(vehicle_box, payload, vin=VIN)),
    ):
        assert not isinstance(outcome, EnvelopeError) or str(outcome)


@_FUZZ
@given(ENVELOPE_LIKE, ENVELOPE_LIKE)
def test_any_cbor_clear_or_sealed_content_opens_or_is_refused(
    backend_box: Box, vehicle_box: Box, clear: dict[str, Any], content: dict[str, Any]
) -> None:
    # The sealed content is authenticated with the real key: the hardest case, a compromised car.
    nonce = os.urandom(24)
    header = {"v": 1, "vin": VIN, "seq": 1, **clear, "nonce": nonce}
    record_content = {"vin": VIN, "seq": 1, **content}
    header["box"] = vehicle_box.encrypt(cbor2.dumps(record_content), nonce).ciphertext
    opened = _outcome(lambda: open_record(backend_box, cbor2.dumps(header), topic_vin=VIN))
    if not isinstance(opened, EnvelopeError):
        assert 1 <= opened.seq <= MAX_SEQ
        assert opened.created.year <= 9999
    ack_header = {"v": 1, "vin": VIN, **clear, "nonce": nonce}
    ack_header["box"] = backend_box.encrypt(cbor2.dumps({"vin": VIN, **content}), nonce).ciphertext
    ack = _outcome(lambda: open_ack(vehicle_box, cbor2.dumps(ack_header), vin=VIN))
    if not isinstance(ack, EnvelopeError):
        assert all(1 <= seq <= MAX_SEQ for seq in ack.seqs)


@_FUZZ
@given(st.binary(max_size=200))
def test_strict_decoding_of_any_bytes_is_a_value_or_a_cbor_error(payload: bytes) -> None:
    outcome = _outcome(lambda: loads_strict(payload, "fuzz"))
    assert not isinstance(outcome, CborError) or "fuzz" in str(outcome)


@_FUZZ
@given(CBOR_VALUES)
def test_describe_never_raises_and_stays_short(value: Any) -> None:
    assert len(describe(value)) < 120
    assert len(describe(BIGNUM)) < 60
