"""Shifts and masks give exactly cantools' raw values, for Intel and Motorola, signed and unsigned signals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cantools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcu.vehicle.can_bits import BitField, bit_field, bit_fields

REPO = Path(__file__).parent.parent.parent
LAYOUTS = REPO / "tests" / "data" / "can" / "layouts.dbc"  # Motorola, signed, odd widths, 64-bit, mux, float
DATABASES = {
    "vehicle.dbc": cantools.database.load_file(REPO / "hil" / "vehicle.dbc"),
    "layouts.dbc": cantools.database.load_file(LAYOUTS),
}
MESSAGES = [
    message
    for database in DATABASES.values()
    for message in database.messages
    if not isinstance(bit_fields(message, message.signals), str)
]


@settings(max_examples=200)
@given(message=st.sampled_from(MESSAGES), payload=st.binary(min_size=8, max_size=8))
def test_raw_values_are_what_cantools_decodes(message: Any, payload: bytes) -> None:
    data = payload[: message.length]
    expected = message.decode(data, decode_choices=False, scaling=False)
    fields = bit_fields(message, message.signals)
    assert isinstance(fields, list)
    little, big = int.from_bytes(data, "little"), int.from_bytes(data, "big")
    assert {s.name: f.raw(little, big) for s, f in zip(message.signals, fields, strict=True)} == expected


def test_every_message_but_the_multiplexed_and_the_float_one_takes_the_fast_path() -> None:
    assert len(MESSAGES) == sum(len(database.messages) for database in DATABASES.values()) - 2


def test_both_byte_orders_and_signs_are_covered() -> None:
    layouts = DATABASES["layouts.dbc"]
    fields = [bit_field(signal, 8) for signal in layouts.get_message_by_name("Mixed").signals]
    kinds = {(field.big_endian, field.sign != 0) for field in fields if field is not None}
    assert kinds == {(False, False), (False, True), (True, False), (True, True)}


def test_occupied_bits_are_the_signals_own() -> None:
    """The payload cache keys on these bits: a bit of another signal (an alive counter) must not be in it."""
    mixed = DATABASES["layouts.dbc"].get_message_by_name("Mixed")
    occupied = {s.name: f.occupied for s, f in zip(mixed.signals, bit_fields(mixed, mixed.signals), strict=True)}
    assert occupied["MotorolaUnsigned"] == 0xFF << 16 | 0xF0 << 24  # byte 2, then the high nibble of byte 3
    assert occupied["IntelSigned"] == 0x7FF << 3
    assert sum(bin(mask).count("1") for mask in occupied.values()) == bin(_union(occupied.values())).count("1")


def _union(masks: Any) -> int:
    union = 0
    for mask in masks:
        union |= mask
    return union


@pytest.mark.parametrize(
    ("message", "reason"),
    [("Muxed", "a multiplexed message"), ("Floaty", "Pressure is an IEEE float")],
)
def test_what_shifts_cannot_decode_is_left_to_cantools(message: str, reason: str) -> None:
    found = DATABASES["layouts.dbc"].get_message_by_name(message)
    assert bit_fields(found, found.signals) == reason


def test_a_signal_outside_its_frame_is_left_to_cantools() -> None:
    wide = DATABASES["layouts.dbc"].get_message_by_name("IntelWide").signals[0]
    assert isinstance(bit_field(wide, 8), BitField)
    assert bit_field(wide, 7) is None  # a 64-bit signal in a 7-byte frame (cantools' non-strict load allows it)
