"""OBD-II (SAE J1979) payloads, sans-I/O: mode 01 PID formulas, supported-PID bitmaps, VIN, DTCs.

A payload here is what one ECU answered, service byte first, with any transport framing (CAN header,
ISO-TP PCI) already removed by `tcu.sources.elm327`: `41 0C 1A F8` is engine speed 1726 rpm.

Every mode 01 PID we know is linear: `value = raw * scale + offset`, `raw` the big-endian unsigned
integer of its data bytes, so one table serves both decoding (the TCU) and encoding (the simulator in
`hil/`). Decoders raise `ProtocolError` with a reason that names the PID and what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tcu.errors import ProtocolError

MODE_CURRENT_DATA = 0x01
MODE_STORED_DTCS = 0x03
MODE_VEHICLE_INFO = 0x09
POSITIVE_OFFSET = 0x40  # a positive answer's service byte is the request's plus 0x40
NEGATIVE_RESPONSE = 0x7F
INFOTYPE_VIN = 0x02
SUPPORTED_PID_BASES = (0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0)

_VIN_RE = re.compile(r"[A-HJ-NPR-Z0-9]{17}")  # ISO 3779: no I, O or Q
_DTC_RE = re.compile(r"[PCBU][0-3][0-9A-F]{3}")
_DTC_LETTERS = "PCBU"

# ISO 14229 negative response codes an OBD ECU may send.
_NRC = {
    0x10: "general reject",
    0x11: "service not supported",
    0x12: "sub-function not supported",
    0x21: "busy, repeat request",
    0x22: "conditions not correct",
    0x31: "request out of range",
    0x78: "response pending",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PidSpec:
    """One mode 01 PID: its size and linear formula."""

    pid: int
    name: str
    size: int
    unit: str
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.pid <= 0xFF:
            raise ValueError(f"PID 0x{self.pid:X} is not one byte")
        if not 1 <= self.size <= 4:
            raise ValueError(f"PID 0x{self.pid:02X}: size {self.size} must be 1..4 bytes")

    @property
    def resolution(self) -> float:
        """The smallest step the PID can express (one raw count)."""
        return abs(self.scale)

    def decode(self, data: bytes) -> float:
        if len(data) < self.size:
            raise ProtocolError(
                f"PID 01{self.pid:02X} ({self.name}) carries {len(data)} data byte(s), expected {self.size}"
            )
        # Rounded so that 14200 * 0.001 reads 14.2, not 14.200000000000001.
        return round(int.from_bytes(data[: self.size], "big") * self.scale + self.offset, 9)

    def encode(self, value: float) -> bytes:
        """Raw bytes for a physical value, rounded to the nearest count and clamped to the PID's range."""
        raw = round((value - self.offset) / self.scale)
        raw = min(max(raw, 0), (1 << (8 * self.size)) - 1)
        return raw.to_bytes(self.size, "big")


PIDS: dict[int, PidSpec] = {
    spec.pid: spec
    for spec in (
        PidSpec(pid=0x04, name="engine load", size=1, unit="percent", scale=100 / 255),
        PidSpec(pid=0x05, name="coolant temperature", size=1, unit="celsius", offset=-40),
        PidSpec(pid=0x0C, name="engine speed", size=2, unit="rpm", scale=0.25),
        PidSpec(pid=0x0D, name="vehicle speed", size=1, unit="km/h"),
        PidSpec(pid=0x0F, name="intake air temperature", size=1, unit="celsius", offset=-40),
        PidSpec(pid=0x11, name="throttle position", size=1, unit="percent", scale=100 / 255),
        PidSpec(pid=0x1F, name="run time since engine start", size=2, unit="s"),
        PidSpec(pid=0x21, name="distance with MIL on", size=2, unit="km"),
        PidSpec(pid=0x2F, name="fuel level", size=1, unit="percent", scale=100 / 255),
        PidSpec(pid=0x31, name="distance since codes cleared", size=2, unit="km"),
        PidSpec(pid=0x33, name="barometric pressure", size=1, unit="kPa"),
        PidSpec(pid=0x42, name="control module voltage", size=2, unit="V", scale=0.001),
        PidSpec(pid=0x46, name="ambient air temperature", size=1, unit="celsius", offset=-40),
        PidSpec(pid=0x5C, name="engine oil temperature", size=1, unit="celsius", offset=-40),
        PidSpec(pid=0xA6, name="odometer", size=4, unit="km", scale=0.1),
    )
}


def pid_spec(pid: int) -> PidSpec:
    try:
        return PIDS[pid]
    except KeyError:
        raise ProtocolError(f"no formula for PID 01{pid:02X}; add it to tcu.sources.obd_pids.PIDS") from None


def check_positive(payload: bytes, mode: int, what: str) -> None:
    """Raise unless `payload` is a positive answer to `mode` (a negative response names its code)."""
    if not payload:
        raise ProtocolError(f"empty answer to {what}")
    if payload[0] == NEGATIVE_RESPONSE:
        code = payload[2] if len(payload) > 2 else None
        meaning = _NRC.get(code, "unknown code") if code is not None else "no code"
        shown = f"0x{code:02X}" if code is not None else "missing"
        raise ProtocolError(f"ECU refused {what}: negative response code {shown} ({meaning})")
    if payload[0] != mode + POSITIVE_OFFSET:
        raise ProtocolError(
            f"answer to {what} starts with service byte 0x{payload[0]:02X}, expected 0x{mode + POSITIVE_OFFSET:02X}"
        )


def decode_mode01(payload: bytes, pid: int) -> float:
    """Physical value of `pid` from a mode 01 answer `41 <pid> <data>`."""
    what = f"01{pid:02X}"
    check_positive(payload, MODE_CURRENT_DATA, what)
    if len(payload) < 2 or payload[1] != pid:
        got = f"0x{payload[1]:02X}" if len(payload) > 1 else "nothing"
        raise ProtocolError(f"answer to {what} names PID {got}")
    return pid_spec(pid).decode(payload[2:])


def encode_mode01(pid: int, value: float) -> bytes:
    """The positive answer an ECU sends for `pid` at `value`."""
    return bytes((MODE_CURRENT_DATA + POSITIVE_OFFSET, pid)) + pid_spec(pid).encode(value)


def decode_supported(payload: bytes) -> frozenset[int]:
    """PIDs flagged in a `41 <base> A B C D` bitmap: bit 7 of A is base+1, bit 0 of D is base+0x20.

    The last bit says whether the next range (base+0x20) may be asked; it is returned like any PID.
    """
    if len(payload) < 2:
        raise ProtocolError("supported-PID answer is too short to name its range")
    base = payload[1]
    check_positive(payload, MODE_CURRENT_DATA, f"01{base:02X}")
    if base not in SUPPORTED_PID_BASES:
        raise ProtocolError(f"PID 01{base:02X} is not a supported-PID bitmap")
    if len(payload) < 6:
        raise ProtocolError(f"supported-PID bitmap 01{base:02X} has {len(payload) - 2} bytes, expected 4")
    bits = int.from_bytes(payload[2:6], "big")
    return frozenset(base + i for i in range(1, 33) if bits & (1 << (32 - i)))


def encode_supported(base: int, pids: Iterable[int]) -> bytes:
    """The bitmap answer for range `base`; sets the next-range bit when any PID lies beyond it."""
    wanted = set(pids)
    bits = 0
    for i in range(1, 33):
        if base + i in wanted or (i == 32 and any(p > base + 0x20 for p in wanted)):
            bits |= 1 << (32 - i)
    return bytes((MODE_CURRENT_DATA + POSITIVE_OFFSET, base)) + bits.to_bytes(4, "big")


def decode_vin(payload: bytes) -> str:
    """VIN from `49 02 01` + 17 ASCII bytes; NUL padding some ECUs add is dropped, nothing else is."""
    check_positive(payload, MODE_VEHICLE_INFO, "0902")
    if len(payload) < 2 or payload[1] != INFOTYPE_VIN:
        raise ProtocolError("answer to 0902 is not a VIN (infotype byte is not 0x02)")
    body = payload[3:] if len(payload) >= 20 else payload[2:]  # CAN carries a data-item count byte
    text = body.strip(b"\x00").decode("ascii", errors="replace")
    if not _VIN_RE.fullmatch(text):
        raise ProtocolError(f"VIN {text!r} is not 17 characters of A-Z (no I, O, Q) and 0-9")
    return text


def encode_vin(vin: str) -> bytes:
    if not _VIN_RE.fullmatch(vin):
        raise ValueError(f"VIN {vin!r} is not 17 characters of A-Z (no I, O, Q) and 0-9")
    return bytes((MODE_VEHICLE_INFO + POSITIVE_OFFSET, INFOTYPE_VIN, 0x01)) + vin.encode("ascii")


def format_dtc(high: int, low: int) -> str:
    """Two DTC bytes as SAE J2012 text: `01 43` → P0143, `C1 96` → U0196."""
    return f"{_DTC_LETTERS[high >> 6]}{(high >> 4) & 0x3}{high & 0xF:X}{low:02X}"


def parse_dtc(code: str) -> bytes:
    if not _DTC_RE.fullmatch(code):
        raise ValueError(f"DTC {code!r} is not a letter P/C/B/U, a digit 0-3 and three hex digits")
    high = (_DTC_LETTERS.index(code[0]) << 6) | (int(code[1]) << 4) | int(code[2], 16)
    return bytes((high, int(code[3:], 16)))


@dataclass(frozen=True, slots=True, kw_only=True)
class DtcList:
    """Stored trouble codes from one mode 03 answer.

    `declared_count` is the count byte CAN ECUs put first; None when the answer had none (the
    pre-CAN layout, or the elm327-emulator quirk): the caller can say so.
    """

    codes: tuple[str, ...]
    declared_count: int | None


def decode_dtcs(payload: bytes) -> DtcList:
    """Mode 03 answer: `43 <count> <hi lo>...` on CAN, `43 <hi lo> x3` (zero-padded) before CAN."""
    check_positive(payload, MODE_STORED_DTCS, "03")
    body = payload[1:]
    declared: int | None = None
    if len(body) % 2:  # an odd length can only come from a count byte before the pairs
        declared, body = body[0], body[1:]
    codes = tuple(format_dtc(body[i], body[i + 1]) for i in range(0, len(body), 2) if body[i] or body[i + 1])
    if declared is not None and declared != len(codes):
        raise ProtocolError(f"mode 03 answer declares {declared} DTC(s) but carries {len(codes)}")
    return DtcList(codes=codes, declared_count=declared)


def encode_dtcs(codes: Iterable[str]) -> bytes:
    """The CAN layout of a mode 03 answer."""
    pairs = [parse_dtc(code) for code in codes]
    return bytes((MODE_STORED_DTCS + POSITIVE_OFFSET, len(pairs))) + b"".join(pairs)


# Extra PIDs a mapping file declares with a formula over their data bytes A, B, C, D (SAE J1979 notation):
# `(A*256+B)/4`. A tiny arithmetic language (numbers, A-D, + - * /, parentheses, unary minus), parsed
# once at start-up into a tree and evaluated without `eval`, so a mapping file cannot run code.
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-D])|([-+*/()]))")
_MAX_FORMULA = 200
MODE_ENHANCED_DATA = 0x22  # ISO 14229 ReadDataByIdentifier: a 16-bit data identifier (DID)

_Node = float | str | tuple[str, "_Node", "_Node"]


@dataclass(frozen=True, slots=True)
class Formula:
    """A parsed byte formula; `evaluate(data)` with `data[0]` as A."""

    text: str
    tree: _Node
    bytes_used: int  # 1 + the highest byte letter used (A → 1, D → 4)

    @classmethod
    def parse(cls, text: str) -> Formula:
        """Raise ValueError with the position and reason when `text` is not a formula over A..D."""
        if not isinstance(text, str) or not text.strip() or len(text) > _MAX_FORMULA:
            raise ValueError(f"formula must be 1..{_MAX_FORMULA} characters of A-D, numbers, + - * / ( )")
        tokens: list[str | float] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                if not text[position:].strip():
                    break
                raise ValueError(f"formula {text!r}: unexpected {text[position:].strip()[:1]!r} at {position}")
            number, letter, symbol = match.groups()
            tokens.append(float(number) if number is not None else letter or symbol)
            position = match.end()
        tree, rest = _expression(tokens, text)
        if rest:
            raise ValueError(f"formula {text!r}: unexpected {rest[0]!r} after a complete expression")
        used = _letters(tree)
        return cls(text=text, tree=tree, bytes_used=max((ord(c) - ord("A") + 1 for c in used), default=0))

    def evaluate(self, data: bytes) -> float:
        return float(_evaluate(self.tree, data))


def _expression(tokens: list[str | float], text: str) -> tuple[_Node, list[str | float]]:
    left, rest = _term(tokens, text)
    while rest and rest[0] in ("+", "-"):
        operator = str(rest[0])
        right, rest = _term(rest[1:], text)
        left = (operator, left, right)
    return left, rest


def _term(tokens: list[str | float], text: str) -> tuple[_Node, list[str | float]]:
    left, rest = _factor(tokens, text)
    while rest and rest[0] in ("*", "/"):
        operator = str(rest[0])
        right, rest = _factor(rest[1:], text)
        left = (operator, left, right)
    return left, rest


def _factor(tokens: list[str | float], text: str) -> tuple[_Node, list[str | float]]:
    if not tokens:
        raise ValueError(f"formula {text!r}: ends where a value was expected")
    head, rest = tokens[0], tokens[1:]
    if head == "-":
        operand, rest = _factor(rest, text)
        return ("-", 0.0, operand), rest
    if head == "(":
        inner, rest = _expression(rest, text)
        if not rest or rest[0] != ")":
            raise ValueError(f"formula {text!r}: a '(' is not closed")
        return inner, rest[1:]
    if isinstance(head, float) or head in ("A", "B", "C", "D"):
        return head, rest
    raise ValueError(f"formula {text!r}: unexpected {head!r} where a value was expected")


def _letters(node: _Node) -> set[str]:
    if isinstance(node, tuple):
        return _letters(node[1]) | _letters(node[2])
    return {node} if isinstance(node, str) else set()


def _evaluate(node: _Node, data: bytes) -> float:
    if isinstance(node, float):
        return node
    if isinstance(node, str):
        return data[ord(node) - ord("A")]
    operator, left, right = node
    a, b = _evaluate(left, data), _evaluate(right, data)
    if operator == "+":
        return a + b
    if operator == "-":
        return a - b
    if operator == "*":
        return a * b
    if b == 0:
        raise ProtocolError("formula divides by zero for these data bytes")
    return a / b


def decode_formula(payload: bytes, *, mode: int, pid: int, size: int, formula: Formula) -> float:
    """The value of a mode 01 (`41 pid data`) or mode 22 (`62 did-hi did-lo data`) answer through `formula`."""
    width = 1 if mode == MODE_CURRENT_DATA else 2
    what = f"{mode:02X}{pid:0{2 * width}X}"
    check_positive(payload, mode, what)
    echoed = int.from_bytes(payload[1 : 1 + width], "big") if len(payload) > width else None
    if echoed != pid:
        raise ProtocolError(f"answer to {what} names {'nothing' if echoed is None else f'{echoed:0{2 * width}X}'}")
    data = payload[1 + width :]
    if len(data) < size:
        raise ProtocolError(f"answer to {what} carries {len(data)} data byte(s), expected {size}")
    value = formula.evaluate(data[:size])
    return round(value, 9)
