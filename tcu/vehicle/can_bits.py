"""Where a DBC signal's bits sit in a frame, worked out once, so its raw value is a shift and a mask.

`BitField.raw` gives exactly the integer cantools' `Message.decode(data, decode_choices=False,
scaling=False)` gives for the signal (tests/vehicle/test_can_bits.py checks it on random payloads),
without cantools' per-frame work on every signal of the message. A frame is read as two integers
once: little-endian for Intel signals, big-endian for Motorola ones.

`bit_fields` says why a message is left to cantools instead: multiplexed and container
messages (which signals a frame carries depends on its payload) and IEEE float signals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BitField:
    """One integer signal of a message of `frame_length` bytes."""

    shift: int  # position of the signal's least significant bit in the frame read as an integer
    mask: int  # (1 << length) - 1
    sign: int  # value of the sign bit for a signed signal, 0 for an unsigned one
    big_endian: bool  # Motorola: `shift` counts in the frame read big-endian
    occupied: int  # the signal's bits in the frame read little-endian (a key that ignores other signals)

    def raw(self, little: int, big: int) -> int:
        """The raw value from the frame read both ways (`int.from_bytes(data[:length], ...)`)."""
        raw = ((big if self.big_endian else little) >> self.shift) & self.mask
        return raw - (self.sign << 1) if raw & self.sign else raw


def bit_field(signal: Any, frame_length: int) -> BitField | None:
    """The field of a cantools integer signal; None when its bits do not all lie inside the frame."""
    length = signal.length
    if length <= 0:
        return None
    if signal.byte_order == "little_endian":
        # Intel: bit n of the DBC is bit n of the frame read little-endian; the signal runs upwards.
        positions = list(range(signal.start, signal.start + length))
        shift, big_endian = signal.start, False
    else:
        # Motorola: the DBC names the most significant bit in "sawtooth" numbering (bit 7 of byte 0
        # first); in network order (the frame read big-endian from its first bit) the signal is contiguous.
        first = 8 * (signal.start // 8) + (7 - signal.start % 8)
        network = range(first, first + length)
        positions = [8 * (n // 8) + 7 - n % 8 for n in network]
        shift, big_endian = 8 * frame_length - first - length, True
    if shift < 0 or any(not 0 <= p < 8 * frame_length for p in positions):
        return None
    return BitField(
        shift=shift,
        mask=(1 << length) - 1,
        sign=1 << (length - 1) if signal.is_signed else 0,
        big_endian=big_endian,
        occupied=_mask(positions),
    )


def _mask(positions: Iterable[int]) -> int:
    mask = 0
    for position in positions:
        mask |= 1 << position
    return mask


def bit_fields(message: Any, signals: Sequence[Any]) -> list[BitField] | str:
    """The fields of `signals` of a cantools `message`, or why cantools must decode them instead."""
    if message.is_container:
        return "a container message"
    if message.is_multiplexed():
        return "a multiplexed message"
    fields = []
    for signal in signals:
        if signal.is_float:
            return f"{signal.name} is an IEEE float"
        field = bit_field(signal, message.length)
        if field is None:
            return f"{signal.name} does not lie inside the frame"
        fields.append(field)
    return fields
