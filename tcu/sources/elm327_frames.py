"""ELM327 data lines → per-ECU payloads: header splitting and ISO-TP (ISO 15765-2) reassembly.

What a data line holds depends on the adapter's settings:

- headers on (`ATH1`), CAN: `7E8 04 41 0C 1A F8` — 11-bit id (3 hex digits) or 29-bit id (8 hex
  digits, printed `18 DA F1 10`), then the ISO-TP PCI byte and data. Multi-frame answers show their
  raw frames: `10 14 ...` (first frame, 12-bit length) then `21 ...`, `22 ...` (sequence numbers).
- headers on, pre-CAN protocols: 3 header bytes (`48 6B 10`), data, a checksum byte.
- headers off, CAF on (the default): a single frame's payload alone (`41 0C 1A F8`); a multi-frame
  answer as its length in 3 hex digits (`014`) then lines `0: ...`, `1: ...`.
- headers off, CAF off (`ATCAF0`): raw frames with their PCI byte (`04 41 0C 1A F8`, `10 14 ...`).
  They are told apart from CAF payloads by their first byte: every OBD/UDS answer starts with a
  service byte >= 0x40, every PCI byte is < 0x40.

Spaces (`ATS0`/`ATS1`) never matter. Problems are returned as reasons, not raised, so that one
garbled ECU does not hide the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

_CAF_LENGTH = re.compile(r"[0-9A-F]{3}")
_CAF_INDEXED = re.compile(r"([0-9A-F]):\s*([0-9A-F ]*)")
_LOWEST_SERVICE_BYTE = 0x40
_MIN_MULTI_FRAME = 8  # a classic CAN single frame carries up to 7 bytes

Message = tuple[str | None, bytes]  # (ECU id or None with headers off, payload)


class HeaderFormat(StrEnum):
    NONE = "none"  # ATH0
    CAN_11 = "can11"  # 7E8 ...
    CAN_29 = "can29"  # 18 DA F1 10 ...
    LEGACY = "legacy"  # SAE J1850 / ISO 9141-2 / ISO 14230-4: 3 header bytes, data, checksum


_HEADER_DIGITS = {HeaderFormat.CAN_11: 3, HeaderFormat.CAN_29: 8}


def _hex_bytes(digits: str, line: str) -> bytes:
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"line {line!r} has an odd number of hex digits (cut short?)") from None


@dataclass(slots=True)
class _Assembly:
    expected: int
    data: bytearray
    next_seq: int = 1


@dataclass(slots=True)
class _IsoTp:
    """Reassembles ISO-TP frames per sender."""

    messages: list[Message] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _pending: dict[str | None, _Assembly] = field(default_factory=dict)

    def feed(self, ecu: str | None, frame: bytes) -> None:
        who = f"ECU {ecu}" if ecu else "adapter"
        kind, low = frame[0] >> 4, frame[0] & 0xF
        if kind == 0:  # single frame; a zero length escapes to a second length byte (CAN FD)
            size, body = (frame[1], frame[2:]) if low == 0 and len(frame) > 1 else (low, frame[1:])
            if not 0 < size <= len(body):
                self.problems.append(f"{who}: single frame announces {size} byte(s) but carries {len(body)}")
            else:
                self.messages.append((ecu, bytes(body[:size])))
        elif kind == 1:
            if len(frame) < 2:
                self.problems.append(f"{who}: first frame is missing its length byte")
                return
            self._abandon(ecu, who)
            expected = (low << 8) | frame[1]
            if expected < _MIN_MULTI_FRAME:
                # 0 is ISO 15765-2:2016's escape to a 32-bit length (CAN FD); below 8 a single frame does.
                self.problems.append(
                    f"{who}: first frame announces {expected} bytes; a multi-frame answer carries "
                    f"{_MIN_MULTI_FRAME} to 4095 (does the protocol setting match the vehicle?)"
                )
                return
            self._pending[ecu] = _Assembly(expected=expected, data=bytearray(frame[2:]))
        elif kind == 2:
            assembly = self._pending.get(ecu)
            if assembly is None:
                self.problems.append(f"{who}: consecutive frame {low} without a first frame")
            elif low != assembly.next_seq:
                del self._pending[ecu]
                self.problems.append(
                    f"{who}: consecutive frame {low} arrived where {assembly.next_seq} was expected (a frame was lost)"
                )
            else:
                assembly.data += frame[1:]
                assembly.next_seq = (low + 1) & 0xF
                if len(assembly.data) >= assembly.expected:
                    del self._pending[ecu]
                    self.messages.append((ecu, bytes(assembly.data[: assembly.expected])))
        elif kind != 3:  # 3 = flow control, the adapter's business
            self.problems.append(
                f"{who}: byte 0x{frame[0]:02X} is not an ISO-TP PCI byte (does the headers setting match?)"
            )

    def _abandon(self, ecu: str | None, who: str) -> None:
        assembly = self._pending.pop(ecu, None)
        if assembly is not None:
            self.problems.append(
                f"{who}: multi-frame answer announced {assembly.expected} bytes but only {len(assembly.data)} arrived"
            )

    def finish(self) -> None:
        for ecu in list(self._pending):
            self._abandon(ecu, f"ECU {ecu}" if ecu else "adapter")


def reassemble(lines: list[str], headers: HeaderFormat) -> tuple[list[Message], list[str]]:
    """Payloads and problems from the data lines of one reply (status lines already removed)."""
    if headers is HeaderFormat.NONE:
        return _without_headers(lines)
    isotp = _IsoTp()
    for line in lines:
        try:
            sender, frame = _split_header(line, headers)
        except ValueError as exc:
            isotp.problems.append(str(exc))
            continue
        if headers is HeaderFormat.LEGACY:
            isotp.messages.append((sender, frame))  # one message per line, no transport layer
        else:
            isotp.feed(sender, frame)
    isotp.finish()
    return isotp.messages, isotp.problems


def _split_header(line: str, headers: HeaderFormat) -> tuple[str, bytes]:
    """(sender, frame) of a headers-on line; the pre-CAN checksum byte is dropped."""
    compact = "".join(line.split())
    if headers is HeaderFormat.LEGACY:
        data = _hex_bytes(compact, line)
        if len(data) < 5:
            raise ValueError(f"line {line!r} is too short for 3 header bytes, data and a checksum")
        return f"{data[2]:02X}", data[3:-1]
    width = _HEADER_DIGITS[headers]
    if len(compact) <= width + 2:
        raise ValueError(f"line {line!r} is too short for a {width}-digit CAN id and a PCI byte")
    return compact[:width], _hex_bytes(compact[width:], line)


def _without_headers(lines: list[str]) -> tuple[list[Message], list[str]]:
    isotp = _IsoTp()
    caf: _Assembly | None = None  # the CAF multi-frame answer being collected
    next_index = 0
    for line in lines:
        compact = "".join(line.split())
        indexed = _CAF_INDEXED.fullmatch(line)
        if _CAF_LENGTH.fullmatch(compact):
            if caf is not None:
                isotp.problems.append(
                    f"multi-frame answer announced {caf.expected} bytes but only {len(caf.data)} arrived"
                )
            caf, next_index = _Assembly(expected=int(compact, 16), data=bytearray()), 0
        elif indexed and caf is None:
            isotp.problems.append(f"indexed line {line!r} without a length line before it")
        elif indexed and caf is not None:
            index = int(indexed.group(1), 16)
            if index != next_index:
                isotp.problems.append(
                    f"multi-frame line {index} arrived where {next_index} was expected (a line was lost)"
                )
                caf = None
                continue
            try:
                caf.data += _hex_bytes("".join(indexed.group(2).split()), line)
            except ValueError as exc:
                isotp.problems.append(str(exc))
                caf = None
                continue
            next_index = (index + 1) & 0xF
            if len(caf.data) >= caf.expected:
                isotp.messages.append((None, bytes(caf.data[: caf.expected])))
                caf = None
        else:
            try:
                data = _hex_bytes(compact, line)
            except ValueError as exc:
                isotp.problems.append(str(exc))
                continue
            if data and data[0] < _LOWEST_SERVICE_BYTE:
                isotp.feed(None, data)  # CAF off: a raw frame with its PCI byte
            elif data:
                isotp.messages.append((None, data))
    if caf is not None:
        isotp.problems.append(f"multi-frame answer announced {caf.expected} bytes but only {len(caf.data)} arrived")
    isotp.finish()
    return isotp.messages, isotp.problems
