"""docs/protocol.md's worked example, its golden vector and the code must agree byte for byte."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import cbor2
from nacl.public import Box, PrivateKey, PublicKey

from telematics_wire.envelope import open_ack, open_record, seal_ack, seal_record
from telematics_wire.records import Record, RecordKind

ROOT = Path(__file__).parents[2]
VECTOR = json.loads((ROOT / "tests/data/envelope/worked_example.json").read_text())


def _key(name: str) -> bytes:
    return bytes.fromhex(VECTOR[name])


def test_encoder_reproduces_the_vector() -> None:
    box = Box(PrivateKey(_key("vehicle_private_key")), PublicKey(_key("backend_public_key")))
    record = Record(kind=RecordKind.TELEMETRY, created=datetime(2026, 11, 23, 10, tzinfo=UTC), body=VECTOR["body"])
    assert seal_record(box, VECTOR["vin"], VECTOR["seq"], record, nonce=_key("nonce")).hex() == VECTOR["envelope"]
    ack_box = Box(PrivateKey(_key("backend_private_key")), PublicKey(_key("vehicle_public_key")))
    assert seal_ack(ack_box, VECTOR["vin"], VECTOR["ack_seqs"], nonce=_key("ack_nonce")).hex() == VECTOR["ack"]


def test_vector_decodes_independently_of_our_decoder() -> None:
    envelope = cbor2.loads(_key("envelope"))
    box = Box(PrivateKey(_key("backend_private_key")), PublicKey(_key("vehicle_public_key")))
    plaintext = box.decrypt(envelope["box"], envelope["nonce"])
    assert plaintext.hex() == VECTOR["sealed_content_cbor"]
    assert cbor2.loads(plaintext)["body"] == VECTOR["body"]
    opened = open_record(box, _key("envelope"), topic_vin=VECTOR["vin"])
    assert (opened.seq, opened.created.timestamp() * 1000) == (7, VECTOR["created_ms"])
    assert open_ack(box, _key("ack"), vin=VECTOR["vin"]).seqs == set(VECTOR["ack_seqs"])


def test_protocol_document_shows_the_vector() -> None:
    text = (ROOT / "docs/protocol.md").read_text()
    blocks = {"".join(block.split()) for block in re.findall(r"```\n([0-9a-f\n]+)```", text)}
    assert {VECTOR["sealed_content_cbor"], VECTOR["envelope"], VECTOR["ack"]} <= blocks
    for key in ("vehicle_private_key", "vehicle_public_key", "backend_private_key", "backend_public_key", "nonce"):
        assert VECTOR[key] in text
