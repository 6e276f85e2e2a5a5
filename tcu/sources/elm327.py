"""ELM327 replies, sans-I/O: prompt framing, status words, CAN headers and ISO-TP reassembly.

An ELM327 answers every command with text lines ended by CR and then a `>` prompt:

    7E8 10 14 49 02 01 57 50 30     headers on (ATH1): CAN id, ISO-TP PCI, data
    7E8 21 5A 5A 5A 39 39 5A 54
    014                             headers off, CAF on: total length in hex, then indexed lines
    0: 49 02 01 57 50 30
    NO DATA                         or a status word instead of data

`PromptFramer` cuts a byte stream into replies; `parse_reply` turns one reply into the payloads each
ECU sent (`EcuMessage`), the status words met (`AdapterStatus`) and the problems found, without
raising, so one garbled ECU does not hide the answer of another. `Reply.raise_for_status` turns "no
usable answer" into `AdapterStatusError` / `ProtocolError` with a reason a person can act on.
Payloads are decoded by `tcu.sources.obd_pids`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from tcu.errors import AdapterStatusError, ProtocolError
from tcu.sources.elm327_frames import HeaderFormat, reassemble

PROMPT = b">"
_HEX_LINE = re.compile(r"[0-9A-F ]+")
_CAF_INDEXED = re.compile(r"([0-9A-F]):\s*([0-9A-F ]*)")
_PROTOCOL_NUMBER = re.compile(r"(A?)([0-9A-C])")
_BANNER = re.compile(r"ELM327\s+v?(\S+)", re.IGNORECASE)


class AdapterStatus(StrEnum):
    """Words an ELM327 prints instead of (or before) data."""

    SEARCHING = "SEARCHING..."
    BUS_INIT = "BUS INIT: ..."  # informational when it ends in OK
    NO_DATA = "NO DATA"
    UNKNOWN_COMMAND = "?"
    UNABLE_TO_CONNECT = "UNABLE TO CONNECT"
    BUS_INIT_ERROR = "BUS INIT: ...ERROR"
    CAN_ERROR = "CAN ERROR"
    BUS_BUSY = "BUS BUSY"
    BUS_ERROR = "BUS ERROR"
    BUFFER_FULL = "BUFFER FULL"
    DATA_ERROR = "DATA ERROR"
    RX_ERROR = "RX ERROR"
    FB_ERROR = "FB ERROR"
    STOPPED = "STOPPED"
    LV_RESET = "LV RESET"
    ACT_ALERT = "ACT ALERT"
    INTERNAL_ERROR = "ERRnn"
    UNKNOWN = "unrecognised line"


INFORMATIONAL = frozenset({AdapterStatus.SEARCHING, AdapterStatus.BUS_INIT})

_EXPLANATIONS = {
    AdapterStatus.NO_DATA: "no ECU answered: the PID is not supported or the ignition is off",
    AdapterStatus.UNKNOWN_COMMAND: "the adapter did not understand the command (typo, or a clone lacking it)",
    AdapterStatus.UNABLE_TO_CONNECT: "no OBD protocol found: switch the ignition on and check the OBD plug",
    AdapterStatus.BUS_INIT_ERROR: "K-line/KWP initialisation failed: ignition off, or wrong protocol forced",
    AdapterStatus.CAN_ERROR: "the CAN bus could not be read: wrong bitrate/protocol, wiring, or bus off",
    AdapterStatus.BUS_BUSY: "the bus is too busy to send on",
    AdapterStatus.BUS_ERROR: "a bus fault (short or open circuit) was detected",
    AdapterStatus.BUFFER_FULL: "the adapter's receive buffer overflowed: raise the serial baud rate",
    AdapterStatus.DATA_ERROR: "an ECU frame failed its checksum or was malformed",
    AdapterStatus.RX_ERROR: "a CAN frame was received with errors",
    AdapterStatus.FB_ERROR: "feedback error on the bus output: wiring or a faulty adapter",
    AdapterStatus.STOPPED: "the request was interrupted: a byte was sent before the '>' prompt",
    AdapterStatus.LV_RESET: "the adapter reset itself after a supply voltage drop",
    AdapterStatus.ACT_ALERT: "the adapter is about to sleep after bus inactivity",
    AdapterStatus.INTERNAL_ERROR: "the adapter reported an internal error",
    AdapterStatus.UNKNOWN: "the line is neither data nor a known status (garbage on the serial line?)",
}


def classify_status(line: str) -> AdapterStatus | None:
    """The status a line carries, or None for a data line. Anything non-hex is a status."""
    text = " ".join(line.upper().split())
    if _HEX_LINE.fullmatch(text) or _CAF_INDEXED.fullmatch(text):
        return None
    if text.startswith("SEARCHING"):
        return AdapterStatus.SEARCHING
    if text.startswith("BUS INIT"):
        return AdapterStatus.BUS_INIT_ERROR if "ERROR" in text else AdapterStatus.BUS_INIT
    if re.fullmatch(r"ERR\d\d", text):
        return AdapterStatus.INTERNAL_ERROR
    for status in AdapterStatus:
        if status.value in text and status not in (AdapterStatus.UNKNOWN, AdapterStatus.UNKNOWN_COMMAND):
            return status  # also catches "7E8 04 41 0C <DATA ERROR" and "<RX ERROR"
    if text == "?":
        return AdapterStatus.UNKNOWN_COMMAND
    return AdapterStatus.UNKNOWN


class ObdProtocol(IntEnum):
    """`ATSP`/`ATDPN` protocol numbers."""

    AUTO = 0x0
    SAE_J1850_PWM = 0x1
    SAE_J1850_VPW = 0x2
    ISO_9141_2 = 0x3
    ISO_14230_4_KWP_5BAUD = 0x4
    ISO_14230_4_KWP_FAST = 0x5
    ISO_15765_4_CAN_11_500 = 0x6
    ISO_15765_4_CAN_29_500 = 0x7
    ISO_15765_4_CAN_11_250 = 0x8
    ISO_15765_4_CAN_29_250 = 0x9
    SAE_J1939_CAN_29_250 = 0xA
    USER1_CAN_11_125 = 0xB
    USER2_CAN_11_50 = 0xC

    @property
    def header_format(self) -> HeaderFormat:
        """How `ATH1` headers look on this protocol."""
        if self in (ObdProtocol.ISO_15765_4_CAN_29_500, ObdProtocol.ISO_15765_4_CAN_29_250):
            return HeaderFormat.CAN_29
        if self is ObdProtocol.SAE_J1939_CAN_29_250:
            return HeaderFormat.CAN_29
        if self >= ObdProtocol.ISO_15765_4_CAN_11_500:
            return HeaderFormat.CAN_11
        return HeaderFormat.LEGACY


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolReport:
    protocol: ObdProtocol
    auto: bool  # chosen by the adapter's search (ATSP0), not forced


def parse_protocol_number(text: str) -> ProtocolReport:
    """`ATDPN` answer: `A6` = found by automatic search, CAN 11-bit 500 kbit/s; `6` = forced."""
    # One hex digit, `A` before it when searched; int() alone would also read '0_6', '+6' and '٦'.
    match = _PROTOCOL_NUMBER.fullmatch(text.strip().upper())
    if match is None:
        raise ProtocolError(f"ATDPN answered {text[:40]!r}, expected a protocol number like 'A6'")
    return ProtocolReport(protocol=ObdProtocol(int(match.group(2), 16)), auto=bool(match.group(1)))


def parse_banner(text: str) -> str | None:
    """Firmware version from an `ATZ`/`ATI` answer (`ELM327 v1.5` → `1.5`), None if absent."""
    match = _BANNER.search(text)
    return match.group(1) if match else None


class PromptFramer:
    """Cuts the adapter's byte stream into replies, each ending at a `>` prompt."""

    def __init__(self, limit: int = 65536) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the replies they complete (prompt removed), oldest first."""
        self._buffer += data
        replies = []
        while (end := self._buffer.find(PROMPT)) >= 0:
            replies.append(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
        if len(self._buffer) > self._limit:
            # A babbling device without prompts: keep the newest bytes rather than grow forever.
            del self._buffer[: len(self._buffer) - self._limit]
        return replies

    def take_partial(self) -> bytes:
        """Bytes received since the last prompt; the buffer is emptied."""
        partial = bytes(self._buffer)
        self._buffer.clear()
        return partial


def squash(text: str) -> str:
    """A command as the adapter compares it: upper case, no whitespace."""
    return "".join(text.upper().split())


def reply_lines(raw: bytes, command: str | None = None) -> tuple[str, ...]:
    """Non-empty lines of one reply: NULs and a trailing prompt removed, an echo of `command` dropped."""
    text = raw.replace(b"\x00", b"").decode("ascii", errors="replace")
    if (end := text.rfind(">")) >= 0:
        text = text[:end]
    lines = [line.strip() for line in re.split(r"[\r\n]+", text)]
    lines = [line for line in lines if line]
    if command is not None and lines and squash(lines[0]) == squash(command):
        lines.pop(0)
    return tuple(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class EcuMessage:
    """One reassembled payload (service byte first) and who sent it (None with headers off)."""

    ecu: str | None
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusLine:
    status: AdapterStatus
    text: str

    @property
    def explanation(self) -> str:
        return _EXPLANATIONS.get(self.status, self.status.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """Everything one reply said."""

    command: str
    messages: tuple[EcuMessage, ...] = ()
    statuses: tuple[StatusLine, ...] = ()
    problems: tuple[str, ...] = ()
    echoed: bool = False  # the command came back as the first line (echo is on: ATE0 lost?)
    searched: bool = field(init=False)

    def __post_init__(self) -> None:
        searched = any(s.status is AdapterStatus.SEARCHING for s in self.statuses)
        object.__setattr__(self, "searched", searched)

    @property
    def errors(self) -> tuple[StatusLine, ...]:
        return tuple(s for s in self.statuses if s.status not in INFORMATIONAL)

    def raise_for_status(self) -> None:
        """Raise unless at least one ECU answered; the first error status explains why not."""
        if self.messages:
            return
        if errors := self.errors:
            first = errors[0]
            raise AdapterStatusError(
                f"adapter answered {self.command!r} with {first.text!r}: {first.explanation}",
                status=first.status.value,
                command=self.command,
            )
        if self.problems:
            raise ProtocolError(f"unusable answer to {self.command!r}: {'; '.join(self.problems)}")
        raise ProtocolError(f"adapter answered {self.command!r} with nothing but the prompt")


def parse_reply(raw: bytes, *, command: str, headers: HeaderFormat) -> Reply:
    """Parse one reply (bytes up to the prompt) to an OBD request sent with `headers` in effect."""
    all_lines = reply_lines(raw)
    lines = reply_lines(raw, command)
    statuses: list[StatusLine] = []
    data_lines: list[str] = []
    for line in lines:
        status = classify_status(line)
        if status is None:
            data_lines.append(" ".join(line.upper().split()))
        else:
            statuses.append(StatusLine(status=status, text=line))
    messages, problems = reassemble(data_lines, headers)
    return Reply(
        command=command,
        messages=tuple(EcuMessage(ecu=ecu, payload=payload) for ecu, payload in messages),
        statuses=tuple(statuses),
        problems=tuple(problems),
        echoed=len(all_lines) != len(lines),
    )


def parse_at_reply(raw: bytes, *, command: str) -> tuple[str, ...]:
    """Lines answering an AT command (echo dropped); `?` and error words raise `AdapterStatusError`."""
    lines = reply_lines(raw, command)
    for line in lines:
        status = classify_status(line)
        if status is AdapterStatus.UNKNOWN_COMMAND or status in (
            AdapterStatus.STOPPED,
            AdapterStatus.BUFFER_FULL,
            AdapterStatus.LV_RESET,
        ):
            raise AdapterStatusError(
                f"adapter answered {command!r} with {line!r}: {_EXPLANATIONS[status]}",
                status=status.value,
                command=command,
            )
    return lines


def format_command(command: str) -> bytes:
    """Bytes to send for one command; ELM327 ignores spaces and case but needs a CR."""
    text = squash(command)
    if not text or not text.isascii() or not text.isprintable() or ">" in text:
        raise ValueError(f"{command!r} is not an ELM327 command")
    return text.encode("ascii") + b"\r"


def obd_request(mode: int, pid: int | None = None) -> str:
    """`obd_request(1, 0x0C)` → `010C`; `obd_request(3)` → `03`."""
    return f"{mode:02X}" if pid is None else f"{mode:02X}{pid:02X}"
