"""Lawicel SLCAN (serial line CAN) codec, sans-I/O.

Host → adapter commands end in CR; the adapter answers OK (a lone CR) or error (BEL, 0x07) and, once
the channel is open, streams received frames as text lines:

    t IIIL dd..      11-bit data frame        r IIIL        11-bit remote frame
    T IIIIIIIIL dd.. 29-bit data frame        R IIIIIIIIL   29-bit remote frame

optionally followed by four hex digits of millisecond timestamp (after `Z1`, wrapping at 60000).
`parse_response` / `format_response` cover what an adapter sends, `parse_command` / `format_command`
what a host sends; `SlcanStream` splits a byte stream into responses, turning garbage into
`ProtocolError` values (with the reason) instead of stopping. CAN FD (`d`/`D`/`b`/`B`) is not supported.
"""

from __future__ import annotations

import re
from binascii import unhexlify
from dataclasses import dataclass

from tcu.errors import ProtocolError

OK = b"\r"
BEL = b"\x07"
MAX_STANDARD_ID = 0x7FF
MAX_EXTENDED_ID = 0x1FFF_FFFF
TIMESTAMP_WRAP_MS = 60_000
# The longest legal line is an extended frame with 8 bytes and a timestamp: 1 + 8 + 1 + 16 + 4.
MAX_LINE = 30

# S0..S8 in bit/s; S7 is 800k on most adapters (750k on a few old Lawicel firmwares).
BITRATES: tuple[int, ...] = (10_000, 20_000, 50_000, 100_000, 125_000, 250_000, 500_000, 800_000, 1_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class CanFrame:
    """One classic CAN frame as SLCAN carries it."""

    can_id: int
    data: bytes = b""
    extended: bool = False
    remote: bool = False
    dlc: int = -1  # defaults to len(data); a remote frame states its DLC without data
    timestamp_ms: int | None = None  # adapter time (Z1), 0..59999, wraps; not wall time

    def __post_init__(self) -> None:
        limit = MAX_EXTENDED_ID if self.extended else MAX_STANDARD_ID
        if not 0 <= self.can_id <= limit:
            kind = "29-bit" if self.extended else "11-bit"
            raise ValueError(f"CAN id 0x{self.can_id:X} does not fit a {kind} identifier")
        if self.dlc == -1:
            object.__setattr__(self, "dlc", len(self.data))
        if not 0 <= self.dlc <= 8:
            raise ValueError(f"DLC {self.dlc} outside 0..8 (CAN FD is not supported)")
        if self.remote and self.data:
            raise ValueError("a remote frame carries no data")
        if not self.remote and len(self.data) != self.dlc:
            raise ValueError(f"DLC {self.dlc} does not match {len(self.data)} data bytes")
        if self.timestamp_ms is not None and not 0 <= self.timestamp_ms < TIMESTAMP_WRAP_MS:
            raise ValueError(f"timestamp {self.timestamp_ms} ms outside 0..{TIMESTAMP_WRAP_MS - 1}")


# --- adapter → host -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ok:
    """CR: the last command was accepted."""


@dataclass(frozen=True, slots=True)
class Error:
    """BEL: the last command was refused."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """Reply to `V`: `Vhhss` hardware and software version, two hex digits each."""

    hardware: int
    software: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialNumber:
    """Reply to `N`: `Nxxxx`, four alphanumeric characters."""

    serial: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """Reply to `F`: error flags (bit 0 RX FIFO full, 1 TX FIFO full, 2 error warning, 3 data overrun,
    5 error passive, 6 arbitration lost, 7 bus error)."""

    flags: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TransmitAck:
    """`z` / `Z`: a transmitted standard / extended frame was queued (auto-poll adapters)."""

    extended: bool


Response = CanFrame | Ok | Error | Version | SerialNumber | Status | TransmitAck

_HEX = rb"[0-9A-Fa-f]"
_FRAME = re.compile(
    rb"([tr])(" + _HEX + rb"{3})([0-8])(" + _HEX + rb"*)|([TR])(" + _HEX + rb"{8})([0-8])(" + _HEX + rb"*)"
)
_HEX_ONLY = re.compile(_HEX + rb"*")


def parse_frame(line: bytes) -> CanFrame:
    """Parse `t`/`T`/`r`/`R` without the trailing CR; raises ProtocolError with the precise reason."""
    return _data_frame(line) or _parsed_frame(line)


def _parsed_frame(line: bytes) -> CanFrame:
    """Every kind of frame line, by the frame pattern: remote frames, and the reason for a bad line."""
    match = _FRAME.fullmatch(line)
    if match is None:
        raise ProtocolError(_explain_bad_frame(line))
    kind, ident, dlc_digit, tail = match.group(1, 2, 3, 4) if match.group(1) else match.group(5, 6, 7, 8)
    dlc = dlc_digit[0] - 0x30
    remote = kind in (b"r", b"R")
    payload_len = 0 if remote else 2 * dlc
    if len(tail) == payload_len:
        timestamp = None
    elif len(tail) == payload_len + 4:
        timestamp = int(tail[payload_len:], 16)
        if timestamp >= TIMESTAMP_WRAP_MS:
            raise ProtocolError(f"{_show(line)}: timestamp {timestamp} ms exceeds {TIMESTAMP_WRAP_MS - 1}")
    else:
        raise ProtocolError(
            f"{_show(line)}: DLC {dlc} needs {payload_len} hex digits of data (+4 for a timestamp), got {len(tail)}"
        )
    can_id = int(ident, 16)
    extended = kind in (b"T", b"R")
    if not extended and can_id > MAX_STANDARD_ID:
        raise ProtocolError(f"{_show(line)}: 11-bit identifier 0x{can_id:03X} exceeds 0x7FF")
    if extended and can_id > MAX_EXTENDED_ID:
        raise ProtocolError(f"{_show(line)}: 29-bit identifier 0x{can_id:08X} exceeds 0x1FFFFFFF")
    data = b"" if remote else bytes.fromhex(tail[:payload_len].decode("ascii"))
    return CanFrame(can_id=can_id, data=data, extended=extended, remote=remote, dlc=dlc, timestamp_ms=timestamp)


_HEX_DIGITS = b"0123456789ABCDEFabcdef"
_ID_END = {0x74: 4, 0x54: 9}  # b"t", b"T": where the identifier of a data frame ends
# Slot setters of CanFrame: a frame `_data_frame` has already checked is built without re-running
# `__post_init__` or the frozen dataclass's per-field `object.__setattr__` (a third of the parse time).
_NEW_FRAME = object.__new__
_SET_ID, _SET_DATA, _SET_EXTENDED, _SET_REMOTE, _SET_DLC, _SET_TIMESTAMP = (
    getattr(CanFrame, name).__set__ for name in ("can_id", "data", "extended", "remote", "dlc", "timestamp_ms")
)


def _data_frame(line: bytes) -> CanFrame | None:
    """A well-formed `t`/`T` line as a frame, by slicing; None for anything else, which `parse_frame`
    then parses or rejects with its reason. Only what passes every check `parse_frame` makes is built."""
    id_end = _ID_END.get(line[0]) if line else None
    if id_end is None or len(line) <= id_end or line.translate(None, _HEX_DIGITS) != line[:1]:
        return None
    dlc = line[id_end] - 0x30  # a hex digit: A-F/a-f land above 8
    data_end = id_end + 1 + 2 * dlc
    if dlc > 8:
        return None
    if len(line) == data_end:
        timestamp = None
    elif len(line) == data_end + 4:
        timestamp = int(line[data_end:], 16)
        if timestamp >= TIMESTAMP_WRAP_MS:
            return None
    else:
        return None
    can_id = int(line[1:id_end], 16)
    extended = id_end == 9
    if can_id > (MAX_EXTENDED_ID if extended else MAX_STANDARD_ID):
        return None
    frame = _NEW_FRAME(CanFrame)
    _SET_ID(frame, can_id)
    _SET_DATA(frame, unhexlify(line[id_end + 1 : data_end]))
    _SET_EXTENDED(frame, extended)
    _SET_REMOTE(frame, False)
    _SET_DLC(frame, dlc)
    _SET_TIMESTAMP(frame, timestamp)
    return frame


def _explain_bad_frame(line: bytes) -> str:
    """The slow path: say exactly what is wrong with a line that failed the frame pattern."""
    shown = _show(line)
    kind = line[:1]
    if kind in (b"d", b"D", b"b", b"B"):
        return f"{shown}: CAN FD frame ({kind.decode()}) is not supported"
    id_len = 3 if kind in (b"t", b"r") else 8
    if len(line) < 1 + id_len + 1:
        return f"{shown}: truncated, {len(line)} characters cannot hold identifier and DLC"
    ident, dlc, tail = line[1 : 1 + id_len], line[1 + id_len : 2 + id_len], line[2 + id_len :]
    if not _HEX_ONLY.fullmatch(ident):
        return f"{shown}: identifier {_show(ident)} is not {id_len} hex digits"
    if not dlc.isdigit():
        return f"{shown}: DLC {_show(dlc)} is not a digit"
    if dlc > b"8":
        return f"{shown}: DLC {dlc.decode()} exceeds 8 (CAN FD is not supported)"
    if not _HEX_ONLY.fullmatch(tail):
        return f"{shown}: data {_show(tail)} contains non-hex characters"
    return f"{shown}: malformed frame"


def format_frame(frame: CanFrame) -> bytes:
    """The adapter's line for a frame, CR included (the host sends the same to transmit)."""
    if frame.extended:
        head = f"{'R' if frame.remote else 'T'}{frame.can_id:08X}{frame.dlc}"
    else:
        head = f"{'r' if frame.remote else 't'}{frame.can_id:03X}{frame.dlc}"
    stamp = "" if frame.timestamp_ms is None else f"{frame.timestamp_ms:04X}"
    return f"{head}{frame.data.hex().upper()}{stamp}\r".encode("ascii")


def parse_response(line: bytes) -> Response:
    """Parse one adapter line without its CR (an empty line is OK); BEL alone is an error."""
    if not line:
        return Ok()
    head = line[:1]
    if head in b"tTrRdDbB":  # FD kinds only to be named in the error
        return parse_frame(line)
    if line == BEL:
        return Error()
    if line in (b"z", b"Z"):
        return TransmitAck(extended=line == b"Z")
    body = line[1:]
    if head == b"V" and len(body) == 4 and _HEX_ONLY.fullmatch(body):
        return Version(hardware=int(body[:2], 16), software=int(body[2:], 16))
    if head == b"N" and len(body) == 4 and body.isalnum() and body.isascii():
        return SerialNumber(serial=body.decode("ascii"))
    if head == b"F" and len(body) == 2 and _HEX_ONLY.fullmatch(body):
        return Status(flags=int(body, 16))
    if head in (b"V", b"N", b"F"):
        raise ProtocolError(f"{_show(line)}: malformed {head.decode()} reply")
    if not line.isascii():
        raise ProtocolError(f"{_show(line)}: non-ASCII bytes (line noise or wrong baud rate?)")
    raise ProtocolError(f"{_show(line)}: unknown response type {_show(head)}")


def format_response(response: Response) -> bytes:
    """The adapter's bytes for a response, terminator included (BEL has none)."""
    match response:
        case CanFrame():
            return format_frame(response)
        case Ok():
            return OK
        case Error():
            return BEL
        case Version(hardware=hw, software=sw):
            return f"V{hw:02X}{sw:02X}\r".encode("ascii")
        case SerialNumber(serial=serial):
            return f"N{serial}\r".encode("ascii")
        case Status(flags=flags):
            return f"F{flags:02X}\r".encode("ascii")
        case TransmitAck(extended=extended):
            return b"Z\r" if extended else b"z\r"


def _show(raw: bytes) -> str:
    """A garbage line as a person can read it in a log: printable ASCII kept, the rest escaped."""
    text = raw[:40].decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return f"'{text}{'...' if len(raw) > 40 else ''}'"


class SlcanStream:
    """Split adapter output into responses; partial lines wait for the next chunk.

    BEL terminates on its own (it has no CR). Bytes that cannot be a response come back as
    ProtocolError values in order, so a caller logs them and carries on with the next line.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Response | ProtocolError]:
        buffer = self._pending + data if self._pending else data
        if b"\n" in buffer:  # some clones end lines CR LF
            buffer = buffer.replace(b"\n", b"")
        out: list[Response | ProtocolError] = []
        *lines, self._pending = buffer.split(b"\r")
        for line in lines:
            frame = _data_frame(line)
            if frame is not None:
                out.append(frame)
                continue
            if BEL in line:
                self._split_bel(line, out)
                continue
            try:
                out.append(parse_response(line))
            except ProtocolError as exc:
                out.append(exc)
        if BEL in self._pending:
            head, _, self._pending = self._pending.rpartition(BEL)
            self._split_bel(head + BEL, out)
        if len(self._pending) > MAX_LINE:
            out.append(ProtocolError(f"{_show(self._pending)}: {len(self._pending)} bytes without CR, dropped"))
            self._pending = b""
        return out

    def _split_bel(self, chunk: bytes, out: list[Response | ProtocolError]) -> None:
        """BEL inside a line: what precedes it was cut off; the BEL itself is an error reply."""
        *parts, last = chunk.split(BEL)
        for part in parts:
            if part:
                out.append(ProtocolError(f"{_show(part)}: truncated by an error reply (BEL)"))
            out.append(Error())
        if last:
            try:
                out.append(parse_response(last))
            except ProtocolError as exc:
                out.append(exc)

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished line (for diagnostics)."""
        return self._pending


# --- host → adapter -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SetBitrate:
    bitrate: int

    def __post_init__(self) -> None:
        if self.bitrate not in BITRATES:
            raise ValueError(f"bitrate {self.bitrate} is not one of {', '.join(map(str, BITRATES))}")


@dataclass(frozen=True, slots=True)
class Open:
    """`O`: open the channel for normal operation."""


@dataclass(frozen=True, slots=True)
class ListenOnly:
    """`L`: open the channel without ever acknowledging or sending on the bus."""


@dataclass(frozen=True, slots=True)
class Close:
    """`C`: close the channel."""


@dataclass(frozen=True, slots=True)
class GetVersion:
    """`V`."""


@dataclass(frozen=True, slots=True)
class GetSerialNumber:
    """`N`."""


@dataclass(frozen=True, slots=True)
class GetStatus:
    """`F`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimestamps:
    """`Z0` / `Z1`: append a millisecond timestamp to received frames."""

    enabled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Transmit:
    frame: CanFrame


Command = SetBitrate | Open | ListenOnly | Close | GetVersion | GetSerialNumber | GetStatus | SetTimestamps | Transmit
_SIMPLE: dict[bytes, Command] = {  # commands without arguments, by their exact line
    b"O": Open(),
    b"L": ListenOnly(),
    b"C": Close(),
    b"V": GetVersion(),
    b"N": GetSerialNumber(),
    b"F": GetStatus(),
    b"Z0": SetTimestamps(enabled=False),
    b"Z1": SetTimestamps(enabled=True),
}


def format_command(command: Command) -> bytes:
    match command:
        case SetBitrate(bitrate=bitrate):
            return f"S{BITRATES.index(bitrate)}\r".encode("ascii")
        case SetTimestamps(enabled=enabled):
            return b"Z1\r" if enabled else b"Z0\r"
        case Transmit(frame=frame):
            return format_frame(frame)
        case Open():
            return b"O\r"
        case ListenOnly():
            return b"L\r"
        case Close():
            return b"C\r"
        case GetVersion():
            return b"V\r"
        case GetSerialNumber():
            return b"N\r"
        case GetStatus():
            return b"F\r"


def parse_command(line: bytes) -> Command:
    """Parse one host line without its CR; raises ProtocolError for anything an adapter would BEL."""
    simple = _SIMPLE.get(line)
    if simple is not None:
        return simple
    head = line[:1]
    if head == b"S":
        if len(line) == 2 and line[1:].isdigit() and int(line[1:]) < len(BITRATES):
            return SetBitrate(bitrate=BITRATES[int(line[1:])])
        raise ProtocolError(f"{_show(line)}: bitrate must be S0..S8")
    if head in (b"t", b"T", b"r", b"R"):
        frame = parse_frame(line)
        if frame.timestamp_ms is not None:
            raise ProtocolError(f"{_show(line)}: a transmitted frame carries no timestamp")
        return Transmit(frame=frame)
    if head == b"Z":
        raise ProtocolError(f"{_show(line)}: timestamp switch must be Z0 or Z1")
    raise ProtocolError(f"{_show(line)}: unknown or unsupported command")
