"""Account messages into the car (security code, account link): anything else is one refusal with the reason,
never a pairing, never a crash."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from tcu.clock import ManualClock
from tcu.services.account_link import AccountMessages
from tcu.services.personal import PersonalData, PersonalStore
from telematics_wire.cose import sign1
from telematics_wire.records import to_millis
from tests.conftest import OTHER_VIN, VIN

KEY = SigningKey.generate()
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
GOOD: dict[str, Any] = {
    "type": "account_link",
    "vin": VIN,
    "n": 5,
    "issued": to_millis(NOW),
    "expires": to_millis(NOW) + 60_000,
    "account": "anna@example.org",
    "linked": True,
}


async def _car(tmp_path: Path) -> tuple[AccountMessages, PersonalStore]:
    personal = PersonalStore(tmp_path / "personal.cbor")
    await personal.save(PersonalData(messages_seen=1))
    return AccountMessages(vin=VIN, verify_key=KEY.verify_key, personal=personal, clock=ManualClock(wall=NOW)), personal


async def test_a_good_message_pairs(tmp_path: Path) -> None:
    car, personal = await _car(tmp_path)
    assert await car.receive(sign1(cbor2.dumps(GOOD), KEY)) is not None
    assert personal.current().paired_accounts == ("anna@example.org",)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"vin": OTHER_VIN}, "for vehicle"),
        ({"n": True}, "'n' must be an integer"),
        ({"n": 2**64}, "'n' must lie in"),
        ({"n": -1}, "'n' must lie in"),
        ({"n": 1}, "not newer than message 1"),
        ({"n": 5.0}, "'n' must be an integer"),
        ({"expires": to_millis(NOW)}, "expired"),
        ({"expires": 2**63}, "between 1970-01-01 and 9999-12-31"),
        ({"issued": float("nan")}, "time field 'issued' must be integer"),
        ({"type": "pairing_code", "code": "1234abcd"}, "not 8 digits"),
        ({"type": "pairing_code", "code": "１２３４５６７８"}, "not 8 digits"),  # noqa: RUF001 - full-width digits
        ({"type": "unpair_everything"}, "unknown type"),
        ({"linked": 1}, "true or false"),
        ({"account": "a" * 65}, "1 to 64 characters"),
        ({"account": "anna\nroot"}, "letters, digits"),
    ],
)
async def test_a_signed_but_wrong_message_is_refused_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, Any], reason: str
) -> None:
    car, personal = await _car(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert await car.receive(sign1(cbor2.dumps({**GOOD, **change}), KEY)) is None
    assert reason in caplog.text
    assert personal.current() == PersonalData(messages_seen=1)


async def test_a_message_not_signed_by_the_backend_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    car, personal = await _car(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert await car.receive(sign1(cbor2.dumps(GOOD), SigningKey.generate())) is None
    assert "bad signature" in caplog.text
    assert personal.current().paired_accounts == ()


async def test_duplicate_keys_a_2_to_the_64_bignum_and_trailing_bytes_are_refused(tmp_path: Path) -> None:
    car, personal = await _car(tmp_path)
    payload = cbor2.dumps(GOOD)
    duplicate = b"\xa8" + payload[1:] + cbor2.dumps("linked") + cbor2.dumps(True)  # one key twice
    for bad in (duplicate, payload + b"\x00", cbor2.dumps({**GOOD, "n": cbor2.CBORTag(2, b"\x01" + bytes(8))})):
        assert await car.receive(sign1(bad, KEY)) is None
    assert personal.current() == PersonalData(messages_seen=1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
async def test_any_bytes_are_a_refusal_never_a_crash(tmp_path_factory: pytest.TempPathFactory, payload: bytes) -> None:
    car, personal = await _car(tmp_path_factory.mktemp("car"))
    for message in (payload, sign1(payload, KEY)):
        assert await car.receive(message) is None
    assert personal.current() == PersonalData(messages_seen=1)
