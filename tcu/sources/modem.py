"""Cellular modem AT commands (3GPP TS 27.007) and the eCall dialect of a modem profile, sans-I/O.

`AtParser` keeps track of the one command in flight and sorts what the modem sends into:

- `Response` — the lines answering that command and its final result code (`OK`, `ERROR`,
  `+CME ERROR: <n>`; `NO CARRIER`/`BUSY`/`NO ANSWER`/`NO DIALTONE` only for `ATD`/`ATA`);
- `Urc` — unsolicited result codes: `RING`, `+CLIP`, `+CREG`/`+CEREG` (one field fewer than the read
  response, so the context decides), `NO CARRIER` outside a dial, `RDY` (the modem booted: it reset),
  and the profile's eCall indication (`+CECALLIND: 2` …);
- `Garbage` — bytes that are no AT line (line noise, a baud-rate mismatch, a half-written reset).

The echo of the command in flight is dropped (a modem echoes until `ATE0`, and again after a reset).

A call's end crosses a new dial on the line: the modem writes the previous call's `NO CARRIER` when it
releases that call, which may be just after the host sent `ATD…;` (V.250 §6.3.1: for `D` the same words
are also its final result codes). `command(..., call_up=True)` says a call the modem accepted earlier
has not been seen to end: the first `NO CARRIER`/`BUSY`/`NO ANSWER` while the dial is pending is then
that call's URC, not the new dial's failure.

eCall over AT is vendor-specific beyond `AT+CECALL=<type>` (0 test, 1 reconfiguration, 2 manual,
3 automatic): how the MSD is handed over and how the PSAP's requests come back differ per module.
`ModemProfile` holds exactly those differences. The two profiles here are this project's dialects,
modelled on SIMCom (`AT+CMSD=<hex>`) and u-blox (`AT+UECALLDATA`); the URC numbering is ours, not
checked against hardware — compare with the module's AT manual before using a real one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

_FINALS = frozenset({"OK", "ERROR"})
_CALL_FINALS = frozenset({"NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE", "CONNECT"})
_WORD_URCS = frozenset({"RING", "NO CARRIER", "RDY", "BUSY", "NO ANSWER"})
CALL_END_WORDS = frozenset({"NO CARRIER", "BUSY", "NO ANSWER"})  # a call is over (a URC, or ATD/ATA's final)
_PLUS_PREFIX = re.compile(r"^(\+[A-Z][A-Z0-9]*):\s?(.*)$")
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")
_CME = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    30: "no network service",
    100: "unknown error",
}
_MAX_INT_DIGITS = 9  # AT numeric fields are small; int() refuses 4,300 digits and more with ValueError
_CME_BY_TEXT = {text.lower(): code for code, text in _CME.items()}


def describe_cme(code: int | None) -> str:
    if code is None:
        return "ERROR"
    return f"+CME ERROR: {code} ({_CME.get(code, 'vendor-specific')})"


class EcallType(IntEnum):
    """`AT+CECALL=<type>` (3GPP TS 27.007 §7.31)."""

    TEST = 0
    RECONFIGURATION = 1
    MANUAL = 2
    AUTOMATIC = 3


class SimStatus(StrEnum):
    READY = "READY"
    PIN = "SIM PIN"
    PUK = "SIM PUK"
    NOT_INSERTED = "NOT INSERTED"  # +CME ERROR: 10 to AT+CPIN?
    UNKNOWN = "UNKNOWN"

    @classmethod
    def _missing_(cls, value: object) -> SimStatus:
        return cls.UNKNOWN


class RegistrationStatus(IntEnum):
    NOT_SEARCHING = 0
    HOME = 1
    SEARCHING = 2
    DENIED = 3
    UNKNOWN = 4
    ROAMING = 5

    @classmethod
    def _missing_(cls, value: object) -> RegistrationStatus:
        return cls.UNKNOWN

    @property
    def registered(self) -> bool:
        return self in (RegistrationStatus.HOME, RegistrationStatus.ROAMING)


class EcallIndication(StrEnum):
    """What a profile's eCall URC reports; the names follow EN 16062."""

    CONNECTED = "connected"  # the PSAP answered
    SEND_MSD = "send_msd"  # the PSAP asks for the MSD (first time or again)
    LL_ACK = "ll_ack"  # the PSAP's modem received the MSD
    AL_ACK = "al_ack"  # the PSAP application accepted it (positive AL-ACK)
    AL_ACK_CLEAR_DOWN = "al_ack_clear_down"  # AL-ACK with the instruction to clear down
    CLEARED_DOWN = "cleared_down"  # the PSAP hung up (only some modems tell this from a drop)
    MSD_FAILED = "msd_failed"  # the in-band transmission gave up
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> EcallIndication:
        return cls.UNKNOWN


class CallStatus(IntEnum):
    """<stat> of a call (27.007 `+CLCC`; u-blox `+UCALLSTAT` numbers the same, plus 6 for disconnected)."""

    ACTIVE = 0  # connected: the other side answered
    HELD = 1
    DIALLING = 2
    ALERTING = 3  # the other side is ringing
    INCOMING = 4
    WAITING = 5
    DISCONNECTED = 6
    UNKNOWN = -1

    @classmethod
    def _missing_(cls, value: object) -> CallStatus:
        return cls.UNKNOWN


_DIAL_STRING = re.compile(r"^\+?[0-9*#]{1,32}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemProfile:
    """How one modem family does eCall over AT: commands with `{type}`/`{hex}` fields and its URC codes."""

    name: str
    dial: str = "AT+CECALL={type}"
    send_msd: str = "AT+CMSD={hex}"
    indication_urc: str = "+CECALLIND"
    indications: Mapping[str, EcallIndication] = field(default_factory=dict)
    dial_timeout_s: float = 10.0  # a modem may take a while to accept AT+CECALL (network attach)
    # A plain voice call (the intelligent emergency call to the call centre): 27.007 `ATD<n>;` returns OK
    # as soon as set-up starts; the call's progress comes as the vendor's call-status URC once enabled.
    voice_dial: str = "ATD{number};"
    call_status_enable: str = "AT+CLCC=1"
    call_status_urc: str = "+CLCC"
    call_status_field: int = 2  # index of <stat> in the URC's comma-separated fields

    def voice_dial_command(self, number: str) -> str:
        if not _DIAL_STRING.match(number):
            raise ValueError(f"not a dial string: {number[:40]!r}")
        return self.voice_dial.format(number=number)

    def call_status(self, urc: Urc) -> CallStatus | None:
        """The voice call's state a URC carries, None if it is not this profile's call-status URC."""
        if urc.name != self.call_status_urc:
            return None
        fields = urc.value.split(",")
        return CallStatus(_int(fields[self.call_status_field])) if len(fields) > self.call_status_field else None

    def dial_command(self, ecall_type: EcallType) -> str:
        return self.dial.format(type=int(ecall_type))

    def msd_command(self, msd: bytes) -> str:
        return self.send_msd.format(hex=msd.hex().upper())

    def indication(self, urc: Urc) -> EcallIndication | None:
        """The eCall indication a URC carries, None if it is not this profile's eCall URC."""
        if urc.name != self.indication_urc:
            return None
        return self.indications.get(urc.value.split(",")[0].strip(), EcallIndication.UNKNOWN)

    def indication_line(self, indication: EcallIndication) -> str | None:
        """The URC line announcing `indication`; None when this modem family never reports it."""
        for code, known in self.indications.items():
            if known is indication:
                return f"{self.indication_urc}: {code}"
        return None

    @property
    def msd_prefix(self) -> str:
        """The command text before the MSD hex (what a simulator matches on)."""
        return self.send_msd.split("{hex}")[0]


_I = EcallIndication
PROFILES: Mapping[str, ModemProfile] = {
    "simcom": ModemProfile(
        name="simcom",
        indications={
            "1": _I.CONNECTED,
            "2": _I.SEND_MSD,
            "3": _I.LL_ACK,
            "4": _I.AL_ACK,
            "5": _I.AL_ACK_CLEAR_DOWN,
            "6": _I.CLEARED_DOWN,
            "7": _I.MSD_FAILED,
        },
    ),
    "ublox": ModemProfile(
        name="ublox",
        send_msd="AT+UECALLDATA=1,{hex}",
        indication_urc="+UUECALLSTAT",
        call_status_enable="AT+UCALLSTAT=1",
        call_status_urc="+UCALLSTAT",
        call_status_field=1,
        # No CLEARED_DOWN: a PSAP hang-up is a plain NO CARRIER, indistinguishable from a drop.
        indications={
            "0": _I.CONNECTED,
            "2": _I.SEND_MSD,
            "4": _I.LL_ACK,
            "5": _I.AL_ACK,
            "6": _I.AL_ACK_CLEAR_DOWN,
            "9": _I.MSD_FAILED,
        },
    ),
}
del _I


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    command: str
    final: str  # the final result code line as received
    lines: tuple[str, ...] = ()
    cme_error: int | None = None

    @property
    def ok(self) -> bool:
        return self.final == "OK"

    def values(self, prefix: str) -> list[str]:
        """Payloads of the information lines `<prefix>: <payload>`."""
        head = prefix + ":"
        return [line[len(head) :].strip() for line in self.lines if line.startswith(head)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Urc:
    name: str  # "+CREG", "RING", "NO CARRIER", "RDY", ...
    value: str = ""  # what follows "<name>: "


@dataclass(frozen=True, slots=True, kw_only=True)
class Garbage:
    data: bytes


Parsed = Response | Urc | Garbage


def info_prefix(command: str) -> str | None:
    """`AT+CREG?` → `+CREG`: the prefix of the information lines the command is answered with."""
    match = re.match(r"^AT(\+[A-Z][A-Z0-9]*)", command.upper())
    return match.group(1) if match else None


class AtParser:
    """Sorts received bytes into responses to the command in flight, URCs and garbage."""

    def __init__(self, *, max_line: int = 2048) -> None:
        self._buffer = bytearray()
        self._pending: str | None = None
        self._lines: list[str] = []
        self._max_line = max_line
        self._earlier_call_up = False

    @property
    def pending(self) -> str | None:
        return self._pending

    def command(self, text: str, *, call_up: bool = False) -> bytes:
        """Start a command (one at a time); returns the bytes to write. `call_up`: a call the modem accepted
        earlier has not been seen to end, so its end word may still be on its way (see the module doc)."""
        if self._pending is not None:
            raise RuntimeError(f"AT command {self._pending!r} is still in flight")
        self._pending, self._lines, self._earlier_call_up = text, [], call_up
        return text.encode("ascii") + b"\r"

    def cancel(self) -> None:
        """Forget the command in flight (it timed out); its late answer will count as garbage."""
        self._pending, self._lines, self._earlier_call_up = None, [], False

    def feed(self, data: bytes) -> list[Parsed]:
        self._buffer += data
        out: list[Parsed] = []
        while (end := _line_end(self._buffer)) >= 0:
            raw = bytes(self._buffer[:end]).replace(b"\x00", b"")
            del self._buffer[: end + 1]
            if raw.strip():
                out.extend(self._line(raw.strip()))
        if len(self._buffer) > self._max_line:  # no line end in sight: noise, not a line
            out.append(Garbage(data=bytes(self._buffer)))
            self._buffer.clear()
        return out

    def _line(self, raw: bytes) -> list[Parsed]:
        if len(raw) > self._max_line:  # ended in the same chunk it began in, but no modem line is this long
            return [Garbage(data=raw)]
        text = raw.decode("ascii", errors="replace")
        if not _PRINTABLE.match(text):
            return [Garbage(data=raw)]
        pending = self._pending
        if pending is not None and text.upper() == pending.upper():
            return []  # echo
        if self._earlier_call_up and text in CALL_END_WORDS:
            self._earlier_call_up = False  # the earlier call's end, once: a second one is the dial's own
            return [Urc(name=text)]
        final = self._final(text)
        if final is not None:
            return [final]
        urc = _urc(text)
        expected = info_prefix(pending) if pending else None
        if urc is not None and (expected is None or urc.name != expected):
            return [urc]
        if pending is not None:
            self._lines.append(text)
            return []
        return [Garbage(data=raw)]

    def _final(self, text: str) -> Response | None:
        pending = self._pending
        if pending is None:
            return None
        cme: int | None = None
        if text.startswith(("+CME ERROR:", "+CMS ERROR:")):
            code = text.split(":", 1)[1].strip()
            # AT+CMEE=2 gives the text instead of the number; map the texts we know back to it.
            cme = _int(code, 100) if code.isdigit() else _CME_BY_TEXT.get(code.lower(), 100)
        elif text not in _FINALS and not (text in _CALL_FINALS and pending.upper().startswith(("ATD", "ATA"))):
            return None
        response = Response(command=pending, final=text, lines=tuple(self._lines), cme_error=cme)
        self._pending, self._lines, self._earlier_call_up = None, [], False
        return response


def _line_end(buffer: bytearray) -> int:
    ends = [i for i in (buffer.find(b"\r"), buffer.find(b"\n")) if i >= 0]
    return min(ends) if ends else -1


def _urc(text: str) -> Urc | None:
    if text in _WORD_URCS:
        return Urc(name=text)
    match = _PLUS_PREFIX.match(text)
    return Urc(name=match.group(1), value=match.group(2).strip()) if match else None


# -- information payloads -----------------------------------------------------------------------------


def parse_cpin(value: str) -> SimStatus:
    return SimStatus(value.strip())


def parse_registration_read(value: str) -> RegistrationStatus:
    """`+CREG: <n>,<stat>[,...]` answering `AT+CREG?`."""
    fields = value.split(",")
    return RegistrationStatus(_int(fields[1])) if len(fields) >= 2 else RegistrationStatus.UNKNOWN


def parse_registration_urc(value: str) -> RegistrationStatus:
    """`+CREG: <stat>[,<lac>,<ci>[,<AcT>]]` sent unsolicited after `AT+CREG=1`/`2`."""
    return RegistrationStatus(_int(value.split(",", maxsplit=1)[0]))


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalQuality:
    rssi: int  # 0..31, 99 unknown
    ber: int  # 0..7, 99 unknown

    @property
    def dbm(self) -> int | None:
        """-113 dBm at 0 … -51 dBm at 31, None when unknown."""
        return None if not 0 <= self.rssi <= 31 else -113 + 2 * self.rssi


def parse_csq(value: str) -> SignalQuality:
    fields = [*value.split(","), "99", "99"]
    return SignalQuality(rssi=_int(fields[0], 99), ber=_int(fields[1], 99))


def parse_cnem(value: str) -> bool:
    """`+CNEM: <reporting>,<emb_Iu_supp>,<emb_S1_supp>` answering `AT+CNEM?` (3GPP TS 27.007, network emergency
    bearer services support): whether the network supports emergency bearer services in S1 mode (LTE), the IMS
    emergency call an NG eCall needs. Absent or garbled: not supported."""
    fields = value.split(",")
    return len(fields) >= 3 and _int(fields[2]) == 1


def parse_cnems1(value: str) -> bool:
    """`+CNEMS1: <emb_S1_supp>`, the URC `AT+CNEM=1` enables: 1 when emergency bearer services in S1 mode are
    supported, 0 when not."""
    return _int(value.split(",", maxsplit=1)[0]) == 1


def parse_cecall(value: str) -> EcallType | None:
    """`+CECALL: <type>` answering `AT+CECALL?`; an empty payload means no eCall in progress."""
    number = _int(value, -1)
    return EcallType(number) if number in {t.value for t in EcallType} else None


def _int(text: str, default: int = -1) -> int:
    """A small decimal field; anything else (sign, '²', thousands of digits) is `default`."""
    text = text.strip().strip('"')
    return int(text) if text.isascii() and text.isdigit() and len(text) <= _MAX_INT_DIGITS else default
