"""One conversation with an ELM327 over an open `PromptLink`: initialisation, discovery and reads.

Rules a real adapter imposes, kept here:

- one command at a time, and nothing before the `>` prompt (the adapter would print `STOPPED`):
  commands are serialised by a lock and each waits for its prompt;
- `ATZ` takes about a second, the first request after `ATSP0` longer (`SEARCHING...`): they have
  their own deadlines;
- bytes that arrive unasked (clone garbage, a late reply, a reset banner) are dropped before each
  command so that replies never shift by one; a reset banner or an echo after `ATE0` means the
  adapter reset itself, and `needs_reinit` tells the owner to initialise again;
- after a timeout the adapter may still be busy or its prompt lost: a lone CR (which interrupts a
  busy adapter, or repeats the last command of an idle one) brings a fresh prompt before going on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from tcu.errors import AdapterStatusError, DeviceTimeoutError, ProtocolError
from tcu.sources.elm327 import (
    EcuMessage,
    ProtocolReport,
    Reply,
    format_command,
    parse_at_reply,
    parse_banner,
    parse_protocol_number,
    parse_reply,
    squash,
)
from tcu.sources.elm327_frames import HeaderFormat
from tcu.sources.elm327_link import PromptLink
from tcu.sources.obd_pids import SUPPORTED_PID_BASES, decode_dtcs, decode_mode01, decode_supported, decode_vin
from tcu.virtual_time import io_timeout

_LOGGER = logging.getLogger(__name__)
_RESET_WORDS = (b"ELM327", b"LV RESET")
_BANNER_COMMANDS = frozenset({"ATZ", "ATI", "ATWS", "ATD"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Elm327SessionConfig:
    """How to talk to the adapter; the defaults suit a genuine ELM327 and common clones."""

    command_timeout_s: float = 1.0  # one request; the adapter's own NO DATA timeout is about 0.2 s
    reset_timeout_s: float = 5.0  # ATZ resets for about 1 s; slow clones take longer
    search_timeout_s: float = 15.0  # first request after ATSP0 walks through the protocols
    protocol: str = "0"  # ATSP argument: 0 = automatic search, 6 = CAN 11-bit 500 kbit/s, ...
    headers: bool = True  # ATH1 tells several answering ECUs apart
    spaces: bool = False  # ATS0 nearly halves the bytes per reply; parsing does not care

    def __post_init__(self) -> None:
        for name in ("command_timeout_s", "reset_timeout_s", "search_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ELM327 setting {name} must be positive")
        if len(self.protocol) != 1 or self.protocol.upper() not in "0123456789ABC":
            raise ValueError(f"ELM327 protocol {self.protocol!r} must be one of 0-9, A-C (ATSP argument)")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterInfo:
    version: str | None  # firmware from the ATZ banner; None for a clone that prints none
    protocol: ProtocolReport
    header_format: HeaderFormat
    supported_pids: frozenset[int]  # mode 01, union over every ECU that answered
    ecus: tuple[str, ...]  # senders that answered 0100 (empty with headers off)


@dataclass(frozen=True, slots=True, kw_only=True)
class PidReading:
    pid: int
    value: float
    ecu: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredDtcs:
    codes: tuple[str, ...]  # union over the ECUs, in answer order
    notes: tuple[str, ...]  # oddities worth a log line (missing count byte, garbled ECU)


def _by_sender(messages: Iterable[EcuMessage]) -> list[EcuMessage]:
    """Lowest CAN id first (7E8, the engine ECU, before 7E9...); headers-off messages keep their order."""
    return sorted(messages, key=lambda m: (m.ecu is None, m.ecu or ""))


class Elm327Session:
    def __init__(self, link: PromptLink, settings: Elm327SessionConfig | None = None) -> None:
        self._link = link
        self._settings = settings or Elm327SessionConfig()
        self._lock = asyncio.Lock()
        self._echo_off = False
        self._headers = HeaderFormat.NONE
        self.needs_reinit = False
        self.info: AdapterInfo | None = None

    async def command(self, text: str, *, wait_s: float | None = None, resync: bool = True) -> bytes:
        """Send one command and return its raw reply (without the prompt)."""
        wait_s = self._settings.command_timeout_s if wait_s is None else wait_s
        async with self._lock:
            if unsolicited := self._link.discard():
                self._note_unsolicited(unsolicited)
            self._link.send(format_command(text))
            try:
                async with asyncio.timeout(io_timeout(wait_s)):
                    raw = await self._link.reply()
            except TimeoutError:
                partial = self._link.discard()
                if resync:
                    await self._resync()
                raise DeviceTimeoutError(
                    f"no '>' prompt within {wait_s:.2f} s after {text!r} (received {partial[-40:]!r})"
                ) from None
        if squash(text) not in _BANNER_COMMANDS and any(word in raw for word in _RESET_WORDS):
            self._reset_seen(f"its answer to {text!r} holds a reset banner: {raw[-60:]!r}")
        return raw

    async def _resync(self) -> None:
        self._link.send(b"\r")
        try:
            async with asyncio.timeout(io_timeout(self._settings.command_timeout_s)):
                await self._link.reply()
        except TimeoutError:
            _LOGGER.warning("ELM327 gives no prompt even after a resync")
        self._link.discard()

    def _note_unsolicited(self, data: bytes) -> None:
        if any(word in data for word in _RESET_WORDS):
            self._reset_seen(f"it printed {data[-60:]!r} unasked")
        else:
            _LOGGER.info("ELM327: dropped %d unsolicited byte(s): %r", len(data), data[:60])

    def _reset_seen(self, why: str) -> None:
        if not self.needs_reinit:
            _LOGGER.warning("ELM327 reset itself (%s); initialising again", why)
        self.needs_reinit = True

    async def at(self, text: str, *, expect_ok: bool = True, wait_s: float | None = None) -> tuple[str, ...]:
        """An AT command; with `expect_ok` anything but OK is a `ProtocolError`."""
        raw = await self.command(text, wait_s=wait_s, resync=False)
        lines = parse_at_reply(raw, command=text)
        if expect_ok and "OK" not in (line.upper() for line in lines):
            raise ProtocolError(f"adapter answered {text!r} with {lines!r}, expected OK")
        return lines

    async def request(self, text: str, *, wait_s: float | None = None) -> Reply:
        """An OBD request, parsed with the headers setting in force."""
        reply = parse_reply(await self.command(text, wait_s=wait_s), command=text, headers=self._headers)
        if reply.echoed and self._echo_off:
            self._reset_seen(f"it echoed {text!r} although ATE0 was set")
        return reply

    async def initialise(self) -> AdapterInfo:
        """Reset and configure the adapter, find the protocol and the supported PIDs."""
        settings = self._settings
        self.needs_reinit = False
        self._echo_off = False
        self.info = None
        raw = await self.command("ATZ", wait_s=settings.reset_timeout_s, resync=False)
        version = parse_banner(raw.decode("ascii", errors="replace"))
        if version is None:
            _LOGGER.warning("ELM327: no version banner in the answer to ATZ: %r", raw[-60:])
        await self.at("ATE0")
        self._echo_off = True
        await self.at("ATL0")
        await self.at("ATS1" if settings.spaces else "ATS0")
        await self.at("ATH1" if settings.headers else "ATH0")
        await self.at(f"ATSP{settings.protocol}")
        # The first request makes the adapter search; only then can ATDPN name the protocol.
        first = await self.command("0100", wait_s=settings.search_timeout_s)
        report = parse_protocol_number(" ".join(await self.at("ATDPN", expect_ok=False)))
        self._headers = report.protocol.header_format if settings.headers else HeaderFormat.NONE
        reply = parse_reply(first, command="0100", headers=self._headers)
        reply.raise_for_status()
        supported, ecus = await self._discover(reply)
        self.info = AdapterInfo(
            version=version,
            protocol=report,
            header_format=self._headers,
            supported_pids=supported,
            ecus=ecus,
        )
        return self.info

    async def _discover(self, reply: Reply) -> tuple[frozenset[int], tuple[str, ...]]:
        """Walk the supported-PID bitmaps 0100, 0120, ... as far as some ECU flags the next range."""
        supported: set[int] = set()
        ecus: list[str] = []
        for base in SUPPORTED_PID_BASES:
            if base:
                if base not in supported:
                    break
                try:
                    reply = await self.request(f"01{base:02X}")
                    reply.raise_for_status()
                except (AdapterStatusError, ProtocolError) as exc:
                    _LOGGER.info("ELM327: supported-PID range 01%02X not readable: %s", base, exc)
                    break
            for message in reply.messages:
                try:
                    supported |= decode_supported(message.payload)
                except ProtocolError as exc:
                    _LOGGER.info("ELM327: ECU %s: %s", message.ecu or "?", exc)
                    continue
                if message.ecu and message.ecu not in ecus:
                    ecus.append(message.ecu)
        return frozenset(supported), tuple(sorted(ecus))

    async def read_pid(self, pid: int) -> PidReading:
        """Current value of a mode 01 PID from the first ECU (lowest id) that answers it properly."""
        reply = await self.request(f"01{pid:02X}")
        reply.raise_for_status()
        reasons = list(reply.problems)
        for message in _by_sender(reply.messages):
            try:
                return PidReading(pid=pid, value=decode_mode01(message.payload, pid), ecu=message.ecu)
            except ProtocolError as exc:
                reasons.append(f"ECU {message.ecu}: {exc}" if message.ecu else str(exc))
        raise ProtocolError(f"no usable answer to 01{pid:02X}: {'; '.join(reasons)}")

    async def read_vin(self) -> str:
        reply = await self.request("0902")
        reply.raise_for_status()
        reasons = list(reply.problems)
        for message in _by_sender(reply.messages):
            try:
                return decode_vin(message.payload)
            except ProtocolError as exc:
                reasons.append(str(exc))
        raise ProtocolError(f"no usable VIN in the answer to 0902: {'; '.join(reasons)}")

    async def read_dtcs(self) -> StoredDtcs:
        reply = await self.request("03")
        reply.raise_for_status()
        codes: list[str] = []
        notes = list(reply.problems)
        can = self._headers in (HeaderFormat.CAN_11, HeaderFormat.CAN_29)
        for message in _by_sender(reply.messages):
            who = f"ECU {message.ecu}" if message.ecu else "an ECU"
            try:
                dtcs = decode_dtcs(message.payload)
            except ProtocolError as exc:
                notes.append(f"{who}: {exc}")
                continue
            if can and dtcs.declared_count is None:
                notes.append(
                    f"{who} answered mode 03 without the DTC count byte CAN requires "
                    "(pre-CAN layout; a known elm327-emulator quirk); codes read from the pairs"
                )
            codes.extend(code for code in dtcs.codes if code not in codes)
        return StoredDtcs(codes=tuple(codes), notes=tuple(notes))
