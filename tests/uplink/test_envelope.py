from __future__ import annotations

import itertools
from datetime import UTC, datetime

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import Box, PrivateKey

from telematics_wire.envelope import open_ack, open_record, peek_vin, seal_ack, seal_record, seq_ranges
from telematics_wire.errors import EnvelopeError
from telematics_wire.records import Record, RecordKind
from tests.conftest import OTHER_VIN, VIN

CREATED = datetime(2026, 11, 23, 10, 0, 0, 123000, tzinfo=UTC)


def _record(**body: object) -> Record:
    return Record(kind=RecordKind.TELEMETRY, created=CREATED, body=body or {"signals": {"Vehicle.Speed": {"v": 50}}})


def test_sealed_record_opens_with_every_field(vehicle_box: Box, backend_box: Box) -> None:
    payload = seal_record(vehicle_box, VIN, 42, _record())
    opened = open_record(backend_box, payload, topic_vin=VIN)
    assert (opened.vin, opened.seq, opened.kind, opened.created) == (VIN, 42, RecordKind.TELEMETRY, CREATED)
    assert opened.body == {"signals": {"Vehicle.Speed": {"v": 50}}}
    assert peek_vin(payload) == VIN


def test_body_is_not_readable_on_the_wire(vehicle_box: Box) -> None:
    payload = seal_record(vehicle_box, VIN, 1, _record(secret="home-address"))
    assert b"home-address" not in payload
    assert b"Vehicle.Speed" not in seal_record(vehicle_box, VIN, 2, _record())


def test_each_seal_uses_a_fresh_nonce(vehicle_box: Box) -> None:
    first = cbor2.loads(seal_record(vehicle_box, VIN, 1, _record()))
    second = cbor2.loads(seal_record(vehicle_box, VIN, 1, _record()))
    assert first["nonce"] != second["nonce"]


def test_forged_envelope_from_another_key_is_refused(backend_key: PrivateKey, backend_box: Box) -> None:
    forger = Box(PrivateKey.generate(), backend_key.public_key)
    payload = seal_record(forger, VIN, 1, _record())
    with pytest.raises(EnvelopeError, match=f"VIN {VIN} failed authentication"):
        open_record(backend_box, payload, topic_vin=VIN)


def test_tampered_ciphertext_is_refused(vehicle_box: Box, backend_box: Box) -> None:
    outer = cbor2.loads(seal_record(vehicle_box, VIN, 1, _record()))
    outer["box"] = bytes([outer["box"][0] ^ 1]) + outer["box"][1:]
    with pytest.raises(EnvelopeError, match="failed authentication"):
        open_record(backend_box, cbor2.dumps(outer), topic_vin=VIN)


def test_altered_clear_sequence_number_is_refused(vehicle_box: Box, backend_box: Box) -> None:
    outer = cbor2.loads(seal_record(vehicle_box, VIN, 7, _record()))
    outer["seq"] = 8
    with pytest.raises(EnvelopeError, match="sealed header does not match"):
        open_record(backend_box, cbor2.dumps(outer), topic_vin=VIN)


def test_envelope_on_another_vehicles_topic_is_refused(vehicle_box: Box, backend_box: Box) -> None:
    payload = seal_record(vehicle_box, VIN, 1, _record())
    with pytest.raises(EnvelopeError, match=f"names VIN {VIN} but arrived on the topic of VIN {OTHER_VIN}"):
        open_record(backend_box, payload, topic_vin=OTHER_VIN)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\x00garbage", "malformed CBOR"),
        (b"", "malformed CBOR"),
        (cbor2.dumps([1, 2, 3]), "expected a CBOR map"),
        (cbor2.dumps({"v": 2}), "unsupported envelope version 2"),
        (cbor2.dumps({"v": 1, "vin": VIN, "seq": 1, "nonce": b"short", "box": b""}), "nonce is 5 bytes"),
        (cbor2.dumps({"v": 1, "vin": VIN, "nonce": bytes(24), "box": b""}), "field 'seq' missing"),
        (cbor2.dumps({"v": 1, "vin": VIN, "seq": True, "nonce": bytes(24), "box": b""}), "field 'seq'"),
        (cbor2.dumps({"v": 1, "vin": VIN, "seq": 0, "nonce": bytes(24), "box": b""}), "'seq' is 0, outside 1.."),
        (b"\x9f" * 100_000, "oversize envelope"),
    ],
)
def test_malformed_envelopes_are_refused_with_the_reason(backend_box: Box, payload: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        open_record(backend_box, payload, topic_vin=VIN)


def test_deeply_nested_cbor_is_refused_not_crashing(backend_box: Box) -> None:
    with pytest.raises(EnvelopeError, match="malformed"):
        open_record(backend_box, b"\x81" * 20_000 + b"\x00", topic_vin=VIN)


def test_ack_round_trip_and_ranges(vehicle_box: Box, backend_box: Box) -> None:
    ack = open_ack(vehicle_box, seal_ack(backend_box, VIN, [5, 1, 2, 3, 9]), vin=VIN)
    assert ack.seqs == {1, 2, 3, 5, 9}
    assert seq_ranges([5, 1, 2, 3, 9]) == [[1, 3], [5, 5], [9, 9]]


def test_forged_ack_is_refused(vehicle_box: Box, vehicle_key: PrivateKey) -> None:
    forger = Box(PrivateKey.generate(), vehicle_key.public_key)
    with pytest.raises(EnvelopeError, match=r"ack for VIN .* failed authentication"):
        open_ack(vehicle_box, seal_ack(forger, VIN, [1]), vin=VIN)


def test_ack_for_another_vehicle_is_refused(vehicle_box: Box, backend_box: Box) -> None:
    with pytest.raises(EnvelopeError, match="not this vehicle"):
        open_ack(vehicle_box, seal_ack(backend_box, OTHER_VIN, [1]), vin=VIN)


@pytest.mark.parametrize("bad_range", [[3, 1], [0, 2], [1], ["a", "b"], [1, 10_000_000]])
def test_ack_with_bad_range_is_refused(vehicle_box: Box, backend_box: Box, bad_range: list[object]) -> None:
    from telematics_wire.envelope import _seal  # noqa: PLC0415 - craft a well-sealed but malformed ack

    payload = _seal(backend_box, {"vin": VIN}, {"vin": VIN, "acks": [bad_range]})
    with pytest.raises(EnvelopeError, match="bad range"):
        open_ack(vehicle_box, payload, vin=VIN)


@given(st.sets(st.integers(min_value=1, max_value=10_000), max_size=300))
def test_seq_ranges_cover_exactly_the_given_numbers(seqs: set[int]) -> None:
    ranges = seq_ranges(seqs)
    covered = [n for low, high in ranges for n in range(low, high + 1)]
    assert covered == sorted(seqs)
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(ranges))


def test_sealing_gives_the_bytes_cbor2_gives_even_after_a_body_that_cannot_be_encoded(vehicle_box: Box) -> None:
    """The sealer keeps one CBOR encoder per thread: what it seals must stay byte for byte `cbor2.dumps`'s,
    a value seen twice in one body included, and after an encoding that failed half-way."""
    nonce = bytes(24)
    signal = {"v": 50.5, "t": 1}
    record = _record(signals={"Vehicle.Speed": signal, "Vehicle.Other": signal})  # one dict, twice
    with pytest.raises(cbor2.CBOREncodeError):
        seal_record(vehicle_box, VIN, 1, _record(signals={"Vehicle.Speed": signal, "bad": object()}), nonce=nonce)
    outer = cbor2.loads(seal_record(vehicle_box, VIN, 7, record, nonce=nonce))
    content = {"vin": VIN, "seq": 7, "kind": "telemetry", "ts": 1795428000123, "body": dict(record.body)}
    expected_box = vehicle_box.encrypt(cbor2.dumps(content), nonce).ciphertext
    assert outer == {"v": 1, "vin": VIN, "seq": 7, "nonce": nonce, "box": expected_box}
    assert seal_record(vehicle_box, VIN, 7, record, nonce=nonce) == cbor2.dumps(outer)
