"""A virtual ELM327 v1.5 on a pty, answering OBD-II requests from the shared `DriveCycle`.

It behaves as the datasheet and real adapters do where a client can tell: echo until `ATE0`;
`ATL`, `ATS`, `ATH`, `ATCAF` honoured; `>` after every answer; `ATZ` answers `ELM327 v1.5` after a
reset delay; `SEARCHING...` before the first answer after `ATSP0`; CAN 11-bit 500 kbit/s (`A6`);
ISO-TP multi-frame answers (VIN, many DTCs); `NO DATA` for what no ECU supports; `?` for what the
adapter does not understand; `STOPPED` when the client sends before the prompt; a lone CR repeats the
last command. Two ECUs answer: the engine (7E8) everything, the transmission (7E9) the speed.

`respond(line)` is the sans-I/O core (a list of (delay, bytes) chunks); the pty shell in `session`
sleeps the delays and writes the chunks. `Elm327MemoryLink` drives the same core without a pty.
Faults: `PtyDevice`'s, plus `reset()` (the adapter reboots on its own) and `ecu_online`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hil.devices.pty_device import PtyDevice, PtyPort
from tcu.errors import DeviceGoneError
from tcu.sources.elm327 import PromptFramer
from tcu.sources.obd_pids import (
    PIDS,
    SUPPORTED_PID_BASES,
    encode_dtcs,
    encode_mode01,
    encode_supported,
    encode_vin,
)
from tcu.vehicle.drive_cycle import DriveCycle, DriveSample

DEFAULT_VIN = "WAUZZZ8V0KA000120"  # ends in 0-2: the digits python-OBD wrongly strips
ENGINE, TRANSMISSION = 0x7E8, 0x7E9
ENGINE_PIDS = frozenset({0x05, 0x0C, 0x0D, 0x1F, 0x2F, 0x31, 0x42, 0x46, 0xA6})
TRANSMISSION_PIDS = frozenset({0x0D})
_OK_COMMANDS = ("M", "AT", "ST", "SH", "AL", "NL", "R", "PC", "CRA", "FC", "V", "D1", "D0", "IB", "KW", "BI")
_PROTOCOL_NAMES = {0x0: "AUTO", 0x6: "ISO 15765-4 (CAN 11/500)"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Elm327Timing:
    """Delays of a real adapter; `Elm327Timing.instant()` for tests."""

    reset_s: float = 1.0  # ATZ
    search_s: float = 1.2  # SEARCHING... on the first request after ATSP0
    request_s: float = 0.03  # an ECU answering on CAN

    @classmethod
    def instant(cls) -> Elm327Timing:
        return cls(reset_s=0.0, search_s=0.0, request_s=0.0)


@dataclass(slots=True)
class _SimConfig:
    """What ATZ restores."""

    echo: bool = True
    linefeeds: bool = True
    spaces: bool = True
    headers: bool = False
    caf: bool = True
    protocol: int = 0
    auto: bool = True
    found: bool = False  # a protocol search succeeded
    last: str = ""


@dataclass(slots=True)
class _Ecu:
    can_id: int
    pids: frozenset[int]
    answers: Callable[[bytes], bytes | None] = field(repr=False)


def _hex(data: bytes, spaces: bool) -> str:
    return data.hex(" ").upper() if spaces else data.hex().upper()


def isotp_frames(payload: bytes) -> list[bytes]:
    """CAN frames (PCI first) for a payload: one single frame, or first + consecutive frames padded."""
    if len(payload) <= 7:
        return [bytes((len(payload),)) + payload]
    frames = [bytes((0x10 | len(payload) >> 8, len(payload) & 0xFF)) + payload[:6]]
    rest, seq = payload[6:], 1
    while rest:
        frames.append((bytes((0x20 | seq,)) + rest[:7]).ljust(8, b"\x00"))
        rest, seq = rest[7:], (seq + 1) & 0xF
    return frames


class Elm327Simulator(PtyDevice):
    garbage_excludes = b">"  # a stray prompt would end a reply early; real garbage rarely holds one

    def __init__(
        self,
        *,
        cycle: DriveCycle | None = None,
        elapsed: Callable[[], float] | None = None,
        timing: Elm327Timing | None = None,
        vin: str = DEFAULT_VIN,
        dtcs: Iterable[str] = (),
        transmission_ecu: bool = True,
        version: str = "1.5",
        link_path: str | None = None,
    ) -> None:
        super().__init__(name="ELM327", link_path=link_path)
        self.cycle = cycle or DriveCycle()
        self._elapsed = elapsed
        self._t0: float | None = None
        self.timing = timing or Elm327Timing()
        encode_vin(vin)  # validates
        self.vin = vin
        self.dtcs = list(dtcs)
        self.version = version
        self.ecu_online = True  # False: the car is off; searches fail, requests get NO DATA
        self.requests: list[str] = []  # every command received, for tests and run reports
        self._settings = _SimConfig()
        self._cleared_at_km = self.cycle.start_odometer_km - 120.0
        self._ecus = [_Ecu(can_id=ENGINE, pids=ENGINE_PIDS, answers=self._engine)]
        if transmission_ecu:
            self._ecus.append(_Ecu(can_id=TRANSMISSION, pids=TRANSMISSION_PIDS, answers=self._transmission))
        self._input = bytearray()

    # -- drive cycle ---------------------------------------------------------------------------
    def sample(self) -> DriveSample:
        if self._elapsed is not None:
            return self.cycle.at(self._elapsed())
        now = asyncio.get_running_loop().time()
        self._t0 = now if self._t0 is None else self._t0
        return self.cycle.at(now - self._t0)

    def pid_value(self, pid: int, sample: DriveSample) -> float:
        values = {
            0x05: sample.coolant_c,
            0x0C: sample.rpm,
            0x0D: sample.speed_kmh,
            0x1F: sample.elapsed_s,
            0x2F: sample.fuel_level_pct,
            0x31: sample.odometer_km - self._cleared_at_km,
            0x42: sample.battery_v,
            0x46: sample.ambient_c,
            0xA6: sample.odometer_km,
        }
        return values[pid]

    def _mode01(self, pids: frozenset[int], request: bytes) -> bytes | None:
        if len(request) != 2:
            return None  # several PIDs in one request: not modelled
        pid = request[1]
        if pid in SUPPORTED_PID_BASES:  # answered while the previous bitmap flagged this range
            return encode_supported(pid, pids) if pid == 0 or any(p > pid for p in pids) else None
        return encode_mode01(pid, self.pid_value(pid, self.sample())) if pid in pids and pid in PIDS else None

    def _engine(self, request: bytes) -> bytes | None:
        mode = request[0]
        if mode == 0x01:
            return self._mode01(ENGINE_PIDS, request)
        if mode == 0x03 and len(request) == 1:
            return encode_dtcs(self.dtcs)
        if mode == 0x04 and len(request) == 1:
            self.dtcs.clear()
            self._cleared_at_km = self.sample().odometer_km
            return b"\x44"
        if request == b"\x09\x00":
            return bytes((0x49, 0x00)) + (1 << 30).to_bytes(4, "big")  # infotype 02 (VIN) only
        if request == b"\x09\x02":
            return encode_vin(self.vin)
        return None

    def _transmission(self, request: bytes) -> bytes | None:
        return self._mode01(TRANSMISSION_PIDS, request) if request[:1] == b"\x01" else None

    # -- the adapter ------------------------------------------------------------------------------
    def on_plug(self) -> None:
        self._settings = _SimConfig()
        self._input.clear()

    def _reply(self, lines: Iterable[str]) -> bytes:
        eol = "\r\n" if self._settings.linefeeds else "\r"
        return ("".join(line + eol for line in lines) + eol + ">").encode("ascii")

    def _banner(self) -> bytes:
        eol = "\r\n" if self._settings.linefeeds else "\r"
        return f"{eol}{eol}ELM327 v{self.version}{eol}{eol}>".encode("ascii")

    def respond(self, raw: bytes) -> list[tuple[float, bytes]]:
        """Chunks (delay before, bytes) answering one CR-terminated input line (without the CR)."""
        s = self._settings
        typed = raw.decode("ascii", errors="replace")
        command = "".join(ch for ch in typed.upper() if ch.isprintable() and not ch.isspace())
        if not command:
            command = s.last  # a lone CR repeats the last command
            if not command:
                return [(0.0, self._reply([]))]
        self.requests.append(command)
        s.last = command
        chunks: list[tuple[float, bytes]] = []
        if s.echo:
            chunks.append((0.0, (typed + ("\r\n" if s.linefeeds else "\r")).encode("ascii", "replace")))
        if command.startswith("AT"):
            chunks.extend(self._at(command[2:]))
        else:
            chunks.extend(self._obd(command))
        return chunks

    def _at(self, cmd: str) -> list[tuple[float, bytes]]:
        s = self._settings
        toggles = {"E": "echo", "L": "linefeeds", "S": "spaces", "H": "headers", "CAF": "caf"}
        for prefix, name in toggles.items():
            if cmd in (prefix + "0", prefix + "1"):
                setattr(s, name, cmd.endswith("1"))
                return [(0.0, self._reply(["OK"]))]
        if cmd in ("Z", "WS"):
            self._settings = _SimConfig()
            return [(self.timing.reset_s if cmd == "Z" else 0.0, self._banner())]
        if cmd == "D":  # defaults for the display options; echo and linefeeds stay
            s.spaces, s.headers, s.caf = True, False, True
            return [(0.0, self._reply(["OK"]))]
        if cmd == "I":
            return [(0.0, self._reply([f"ELM327 v{self.version}"]))]
        if cmd == "@1":
            return [(0.0, self._reply(["OBDII to RS232 Interpreter"]))]
        if cmd == "RV":
            return [(0.0, self._reply([f"{self.sample().battery_v:.1f}V"]))]
        if cmd in ("DP", "DPN"):
            shown = s.protocol if not s.auto or not s.found else 6
            if cmd == "DPN":
                return [(0.0, self._reply([("A" if s.auto else "") + f"{shown:X}"]))]
            name = _PROTOCOL_NAMES.get(shown, f"PROTOCOL {shown:X}")
            return [(0.0, self._reply([("AUTO, " if s.auto and shown else "") + name]))]
        if cmd[:2] in ("SP", "TP") and len(cmd) in (3, 4):
            digit = cmd[-1]
            if digit in "0123456789ABC" and (len(cmd) == 3 or cmd[2] == "A"):
                s.protocol, s.auto = int(digit, 16), digit == "0" or len(cmd) == 4
                s.found = False
                return [(0.0, self._reply(["OK"]))]
        if any(cmd.startswith(prefix) for prefix in _OK_COMMANDS):
            return [(0.0, self._reply(["OK"]))]
        return [(0.0, self._reply(["?"]))]

    def _obd(self, cmd: str) -> list[tuple[float, bytes]]:
        s = self._settings
        if len(cmd) % 2:
            cmd = cmd[:-1]  # a trailing response count digit: answer as usual
        try:
            request = bytes.fromhex(cmd)
        except ValueError:
            return [(0.0, self._reply(["?"]))]
        if not request:
            return [(0.0, self._reply(["?"]))]
        lines: list[str] = []
        delay = self.timing.request_s
        if s.protocol not in (0, 6):
            # Only CAN 11/500 is modelled: the adapter fails the way it would on a car without it.
            word = "NO DATA" if s.protocol < 3 else "BUS INIT: ...ERROR" if s.protocol < 6 else "CAN ERROR"
            return [(delay, self._reply([word]))]
        if not s.found:
            if s.auto:
                lines.append("SEARCHING...")
                delay += self.timing.search_s
            if not self.ecu_online:
                return [(delay, self._reply([*lines, "UNABLE TO CONNECT"]))]
            s.found = True
        answers = [(ecu.can_id, a) for ecu in self._ecus if self.ecu_online and (a := ecu.answers(request))]
        if not answers:
            return [(delay, self._reply([*lines, "NO DATA"]))]
        for can_id, payload in answers:
            lines.extend(self._format(can_id, payload))
        return [(delay, self._reply(lines))]

    def _format(self, can_id: int, payload: bytes) -> list[str]:
        s = self._settings
        frames = isotp_frames(payload)
        if s.headers:
            return [f"{can_id:03X}" + (" " if s.spaces else "") + _hex(frame, s.spaces) for frame in frames]
        if not s.caf:
            return [_hex(frame, s.spaces) for frame in frames]
        if len(frames) == 1:
            return [_hex(payload, s.spaces)]
        lines = [f"{len(payload):03X}", "0: " + _hex(frames[0][2:], s.spaces)]
        lines += [f"{i & 0xF:X}: " + _hex(frame[1:], s.spaces) for i, frame in enumerate(frames[1:], 1)]
        return lines

    # -- pty shell ---------------------------------------------------------------------------------
    async def session(self, port: PtyPort) -> None:
        while True:
            self._input += await port.read()
            while (end := self._input.find(b"\r")) >= 0:
                line = bytes(self._input[:end]).replace(b"\n", b"")
                del self._input[: end + 1]
                for delay, chunk in self.respond(line):
                    if delay > 0:
                        await asyncio.sleep(delay)
                        if port.pending() and not line.upper().startswith(b"ATZ"):
                            # A byte before the prompt interrupts the adapter.
                            await port.write(self._reply(["STOPPED"]))
                            break
                    await port.write(chunk)

    async def reset(self) -> None:
        """The adapter reboots on its own (brown-out, watchdog): settings lost, banner printed."""
        self._settings = _SimConfig()
        await self.inject(self._banner())


class Elm327MemoryLink:
    """`tcu.sources.elm327_link.PromptLink` straight onto a simulator's core: no pty, no delays."""

    def __init__(self, simulator: Elm327Simulator) -> None:
        self._sim = simulator
        self._framer = PromptFramer()
        self._replies: deque[bytes] = deque()
        self._arrived = asyncio.Event()
        self._lost = asyncio.Event()
        self._input = bytearray()

    def send(self, data: bytes) -> None:
        if self._lost.is_set():
            raise DeviceGoneError("in-memory ELM327 unplugged")
        self._input += data
        while (end := self._input.find(b"\r")) >= 0:
            line = bytes(self._input[:end])
            del self._input[: end + 1]
            for _, chunk in self._sim.respond(line):
                self._replies.extend(self._framer.feed(chunk))
        if self._replies:
            self._arrived.set()

    async def reply(self) -> bytes:
        while not self._replies:
            if self._lost.is_set():
                raise DeviceGoneError("in-memory ELM327 unplugged")
            self._arrived.clear()
            await self._arrived.wait()
        return self._replies.popleft()

    def discard(self) -> bytes:
        dropped = b"".join(r + b">" for r in self._replies) + self._framer.take_partial()
        self._replies.clear()
        return dropped

    async def wait_lost(self) -> None:
        await self._lost.wait()

    def unplug(self) -> None:
        self._lost.set()
        self._arrived.set()

    async def aclose(self) -> None:
        self.unplug()
