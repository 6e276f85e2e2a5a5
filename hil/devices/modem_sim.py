"""A virtual cellular modem with eCall on a pty, carrying the call to the PSAP stub over the simulated 112 network.

It answers what `tcu.sources.modem_client` sends, as a 3GPP TS 27.007 modem would: echo until `ATE0`,
`AT+CMEE=0|1|2`, `AT+CPIN?`, `AT+CREG`/`AT+CEREG` (set, read and URCs), `AT+CSQ`, `AT+COPS=0|2|?`,
`AT+CLIP`, `ATI`, `ATZ`, `AT+CFUN=1,1` (reboot), `ATA`, `ATH`, `AT+CECALL=<type>` and `AT+CECALL?`,
plus the profile's MSD command (`AT+CMSD=<hex>` for "simcom"). The eCall itself goes over the
simulated 112 network of `backend_stub.psap` (TCP on 127.0.0.1); what the PSAP says comes back as the
profile's URCs (`+CECALLIND: 2` = SEND MSD, ...), `NO CARRIER` when the call ends, and `RING`/`+CLIP`
when the PSAP calls back on the modem's own 112 listener.

Plain voice calls (the intelligent emergency call to the carmaker's call centre): `ATD<number>;` dials
a number of the simulated telephone network, `numbers` (number → 127.0.0.1 address, e.g. the backend's
call-centre stub), with the same line protocol (`CALL voice <callback>`, `CONNECTED`, `CLEARDOWN`).
The call's progress comes as the profile's call-status URC once enabled (`AT+CLCC=1`: `+CLCC:
1,0,<stat>,0,0,"<number>",145`, stat 2 dialling, 3 alerting, 0 active); an unknown number, an
unreachable or hung-up callee end it with `NO CARRIER`.

Run-time switches, beside `PtyDevice`'s faults (`mute`, garbage, unplug/replug):

- `await set_coverage(Coverage.SEARCHING)` — registration changes (a `+CREG:` URC when enabled); losing
  coverage drops the call in progress; `AT+CECALL` without coverage answers `+CME ERROR: 30`;
- `sim = SimStatus.NOT_INSERTED` — `AT+CPIN?` and `AT+CECALL` answer `+CME ERROR: 10`;
- `await reset()` — the modem reboots by itself: the call is lost, settings are back to power-on
  (echo on, numeric errors off, registered), and it prints `RDY`;
- `await drop_call()` — the network loses the call (the PSAP sees the line close);
- `network` (`Network`, `await set_network(...)`) — what the simulated network offers: `legacy_only`
  (2G/3G, the default: the CS eCall as ever), `lte_only` (IMS emergency calls, no 2G/3G: `+CREG` reports
  not registered and `AT+CECALL` answers `+CME ERROR: 30`, "no 2G/3G"), or `both`. `AT+CNEM=0|1`,
  `AT+CNEM?` (`+CNEM: <reporting>,<emb_Iu_supp>,<emb_S1_supp>`) and the `+CNEMS1: <emb_S1_supp>` URC
  (3GPP TS 27.007 §10.1.38) report the IMS emergency support; `AT+CEREG?` the LTE registration. The NG
  eCall itself does not pass through this simulator: the agent's SIP goes over loopback UDP to the
  P-CSCF stand-in (`[ecall.ng] proxy`), so `lte_only` only decides what the modem reports and refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType

from backend_stub.voice_line import MAX_LINE, CallLine
from hil.devices.pty_device import PtyDevice, PtyPort, UnpluggedError
from tcu.sources.modem import PROFILES, CallStatus, EcallIndication, EcallType, ModemProfile, SimStatus

_LOGGER = logging.getLogger(__name__)
_CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    30: "no network service",
    50: "incorrect parameters",
}
_PSAP_URCS = {
    "CONNECTED": EcallIndication.CONNECTED,
    "SEND-MSD": EcallIndication.SEND_MSD,
    "LL-ACK": EcallIndication.LL_ACK,
    "CLEARDOWN": EcallIndication.CLEARED_DOWN,
}
_VOICE_DIAL = re.compile(r"^ATD(\+?[0-9*#]{1,32});$")


class Coverage(StrEnum):
    REGISTERED = "registered"  # +CREG stat 1
    SEARCHING = "searching"  # stat 2
    NO_SERVICE = "no_service"  # stat 0: not registered, not searching


_STAT = {Coverage.REGISTERED: 1, Coverage.SEARCHING: 2, Coverage.NO_SERVICE: 0}


class Network(StrEnum):
    """What the simulated network offers (issue 17): NG eCall needs IMS emergency, CS eCall needs 2G/3G."""

    LEGACY_ONLY = "legacy_only"  # 2G/3G, no IMS emergency support: the CS eCall
    LTE_ONLY = "lte_only"  # LTE with IMS emergency support, 2G/3G switched off: the NG eCall
    BOTH = "both"

    @property
    def legacy(self) -> bool:
        return self is not Network.LTE_ONLY

    @property
    def lte(self) -> bool:
        return self is not Network.LEGACY_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemTiming:
    """Radio delays; `ModemTiming.instant()` for tests and benchmarks."""

    dial_s: float = 2.0  # call set-up until the PSAP network answers
    msd_s: float = 1.5  # in-band MSD transmission

    @classmethod
    def instant(cls) -> ModemTiming:
        return cls(dial_s=0.0, msd_s=0.0)


@dataclass(slots=True)
class _SimConfig:
    echo: bool = True
    cmee: int = 0
    creg: int = 0
    clip: bool = False
    cops: int = 0  # 0 automatic registration, 2 deregistered (dormant)
    call_status: bool = False  # the profile's call-status URC (AT+CLCC=1) enabled
    cnem: bool = False  # AT+CNEM=1: +CNEMS1 URCs when the network's IMS emergency support changes


class ModemSimulator(PtyDevice):
    def __init__(
        self,
        *,
        psap_address: tuple[str, int],
        profile: ModemProfile | None = None,
        coverage: Coverage = Coverage.REGISTERED,
        sim: SimStatus = SimStatus.READY,
        timing: ModemTiming | None = None,
        rssi: int = 20,
        link_path: str | os.PathLike[str] | None = None,
        numbers: Mapping[str, tuple[str, int]] | None = None,
        network: Network = Network.LEGACY_ONLY,
    ) -> None:
        super().__init__(name="modem", link_path=link_path)
        self.psap_address = psap_address
        self.profile = profile or PROFILES["simcom"]
        self.coverage = coverage
        self.sim = sim
        self.timing = timing or ModemTiming()
        self.rssi = rssi
        self.numbers = dict(numbers or {})  # the simulated telephone network: number → callee address
        self.network = network
        self.requests: list[str] = []  # every command line received, for tests and run reports
        self.resets = 0
        self._settings = _SimConfig()
        self._input = bytearray()
        self._out: PtyPort | None = None
        self._call: CallLine | None = None
        self._call_task: asyncio.Task[None] | None = None
        self._ecall_type: EcallType | None = None
        self._ringing: asyncio.Future[bool] | None = None
        self._listener: asyncio.Server | None = None

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def registration(self) -> int:
        """The CS domain's (2G/3G) `+CREG` stat: what a CS eCall needs."""
        return 0 if self._settings.cops == 2 or not self.network.legacy else _STAT[self.coverage]

    @property
    def eps_registration(self) -> int:
        """LTE's `+CEREG` stat."""
        return 0 if self._settings.cops == 2 or not self.network.lte else _STAT[self.coverage]

    @property
    def ims_emergency(self) -> bool:
        """`<emb_S1_supp>`: the LTE cell in reach supports emergency bearer services. A property of the
        network, not of our registration: an eCall-only modem (`AT+COPS=2`) may still make an emergency call."""
        return self.network.lte and self.coverage is Coverage.REGISTERED

    @property
    def registered(self) -> bool:
        return self.registration == 1

    @property
    def in_call(self) -> bool:
        return self._call is not None

    @property
    def callback_address(self) -> str:
        if self._listener is None:
            return "-"
        host, port = self._listener.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def on_plug(self) -> None:
        self._settings = _SimConfig()
        self._input.clear()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ringing is not None and not self._ringing.done():
            self._ringing.set_result(False)  # let a ringing callback end on its own, not by cancellation
        await self._end_call(None)
        await super().__aexit__(exc_type, exc, tb)
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None

    # -- faults and switches ---------------------------------------------------------------------------------
    async def set_coverage(self, coverage: Coverage) -> None:
        await self._change_radio(coverage, self.network)

    async def set_network(self, network: Network) -> None:
        """The network's offer changes (2G/3G switched off, an IMS core going down): URCs as a modem sends them."""
        await self._change_radio(self.coverage, network)

    async def _change_radio(self, coverage: Coverage, network: Network) -> None:
        before, ims_before = self.registration, self.ims_emergency
        self.coverage, self.network = coverage, network
        if self.registration != before:
            await self._creg_urc()
        if self.ims_emergency != ims_before and self._settings.cnem:
            await self._urc(f"+CNEMS1: {int(self.ims_emergency)}")
        if not self.registered and self._call is not None:
            await self._end_call("NO CARRIER")

    async def reset(self) -> None:
        """The modem reboots on its own: the call is lost, power-on settings, `RDY`."""
        self.resets += 1
        await self._end_call(None)
        self._settings = _SimConfig()
        await self.inject(b"\r\nRDY\r\n")

    async def drop_call(self) -> None:
        await self._end_call("NO CARRIER")

    # -- the AT side -----------------------------------------------------------------------------------------
    async def session(self, port: PtyPort) -> None:
        self._out = port
        if self._listener is None:
            self._listener = await asyncio.start_server(self._incoming, "127.0.0.1", 0, limit=MAX_LINE)
        while True:
            self._input += await port.read()
            while (end := self._input.find(b"\r")) >= 0:
                raw = bytes(self._input[:end]).replace(b"\n", b"")
                del self._input[: end + 1]
                text = raw.decode("ascii", errors="replace").strip()
                if self._settings.echo:
                    await port.write(raw + b"\r")
                if text:
                    self.requests.append(text)
                    await self._command(text)

    async def _command(self, text: str) -> None:  # noqa: PLR0915 -- the command table, flat on purpose
        s, cmd = self._settings, text.upper()
        if cmd in ("AT", "ATZ") or cmd.startswith("AT+CFUN=1,1"):
            await self._ok()
            if cmd != "AT":
                await (self.reset() if cmd.startswith("AT+CFUN") else self._restore())
        elif cmd in ("ATE0", "ATE1"):
            s.echo = cmd == "ATE1"
            await self._ok()
        elif cmd.startswith("AT+CMEE=") and cmd[8:] in ("0", "1", "2"):
            s.cmee = int(cmd[8:])
            await self._ok()
        elif cmd == "ATI":
            await self._ok("TCU-SIM eCall modem", f"profile {self.profile.name}")
        elif cmd == "AT+CPIN?":
            if self.sim is SimStatus.NOT_INSERTED:
                await self._error(10)
            else:
                await self._ok(f"+CPIN: {self.sim.value}")
        elif cmd[:8] in ("AT+CREG=", "AT+CEREG") and cmd.endswith(("=0", "=1", "=2")):
            s.creg = int(cmd[-1])
            await self._ok()
        elif cmd == "AT+CREG?":
            await self._ok(f"+CREG: {s.creg},{self.registration}")
        elif cmd == "AT+CEREG?":
            await self._ok(f"+CEREG: {s.creg},{self.eps_registration}")
        elif cmd in ("AT+CNEM=0", "AT+CNEM=1"):
            s.cnem = cmd.endswith("1")
            await self._ok()
        elif cmd == "AT+CNEM?":  # <emb_Iu_supp>: no emergency bearer over UMTS PS is simulated
            await self._ok(f"+CNEM: {int(s.cnem)},0,{int(self.ims_emergency)}")
        elif cmd == "AT+CSQ":
            attached = self.registered or self.eps_registration == 1
            await self._ok(f"+CSQ: {self.rssi if attached else 99},99")
        elif cmd in ("AT+COPS=0", "AT+COPS=2"):
            before, s.cops = self.registration, int(cmd[-1])
            await self._ok()
            if self.registration != before:
                await self._creg_urc()
        elif cmd == "AT+COPS?":
            await self._ok(f'+COPS: {s.cops},0,"TCU-SIM 112",7' if self.registered else f"+COPS: {s.cops}")
        elif cmd in ("AT+CLIP=0", "AT+CLIP=1"):
            s.clip = cmd.endswith("1")
            await self._ok()
        elif cmd == "AT+CECALL?":
            await self._ok(*([] if self._ecall_type is None else [f"+CECALL: {int(self._ecall_type)}"]))
        elif cmd.startswith("AT+CECALL=") and self.profile.dial.startswith("AT+CECALL="):
            await self._dial(cmd[10:])
        elif cmd in (self.profile.call_status_enable.upper(), self.profile.call_status_enable.upper()[:-1] + "0"):
            s.call_status = cmd.endswith("1")
            await self._ok()
        elif cmd.startswith("ATD"):
            await self._voice_dial(cmd)
        elif cmd.startswith(self.profile.msd_prefix.upper()):
            await self._msd(text[len(self.profile.msd_prefix) :])
        elif cmd == "ATA":
            if self._ringing is not None and not self._ringing.done():
                self._ringing.set_result(True)
                await self._ok()
            else:
                await self._final("NO CARRIER")
        elif cmd == "ATH":
            if self._ringing is not None and not self._ringing.done():
                self._ringing.set_result(False)  # reject the incoming call
            await self._end_call(None, hangup=True)
            await self._ok()
        else:
            await self._final("ERROR")

    async def _dial(self, argument: str) -> None:
        if argument not in {str(int(t)) for t in EcallType}:
            await self._error(50)
        elif self.sim is not SimStatus.READY:
            await self._error(10 if self.sim is SimStatus.NOT_INSERTED else 11)
        elif not self.registered:
            if self.network is Network.LTE_ONLY and self.coverage is Coverage.REGISTERED:
                _LOGGER.warning("modem: CS eCall refused: no 2G/3G on this network (lte_only)")
            await self._error(30)
        elif self._call is not None or self._call_task is not None:
            await self._error(3)
        else:
            self._ecall_type = EcallType(int(argument))
            await self._ok()
            self._call_task = asyncio.create_task(self._outgoing(self._ecall_type), name="modem-ecall")

    async def _voice_dial(self, cmd: str) -> None:
        match = _VOICE_DIAL.match(cmd)
        if match is None:  # a data call, or no number: this modem does voice only
            await self._error(50)
        elif self.sim is not SimStatus.READY:
            await self._error(10 if self.sim is SimStatus.NOT_INSERTED else 11)
        elif not self.registered:
            await self._error(30)
        elif self._call is not None or self._call_task is not None:
            await self._error(3)
        else:
            await self._ok()
            number = match.group(1)
            self._call_task = asyncio.create_task(self._voice_outgoing(number), name="modem-voice")

    async def _msd(self, hex_text: str) -> None:
        try:
            msd = bytes.fromhex(hex_text)
        except ValueError:
            await self._error(50)
            return
        call = self._call
        if call is None or not msd:
            await self._error(3)
            return
        await self._ok()
        if self.timing.msd_s > 0:
            await asyncio.sleep(self.timing.msd_s)  # in-band: the voice path is muted meanwhile
        call.send("MSD", msd.hex())

    # -- the 112 side ------------------------------------------------------------------------------------------
    async def _outgoing(self, ecall_type: EcallType) -> None:
        try:
            if self.timing.dial_s > 0:
                await asyncio.sleep(self.timing.dial_s)
            try:
                reader, writer = await asyncio.open_connection(*self.psap_address, limit=MAX_LINE)
            except OSError as exc:
                _LOGGER.warning("modem: 112 network unreachable (%s)", exc)
                await self._urc("NO CARRIER")
                return
            line = CallLine(reader, writer)
            line.send("CALL", ecall_type.name.lower(), self.callback_address)
            self._call = line
            await self._converse(line)
        finally:
            self._call_task = None

    async def _voice_outgoing(self, number: str) -> None:
        try:
            await self._call_status_urc(CallStatus.DIALLING, number)
            if self.timing.dial_s > 0:
                await asyncio.sleep(self.timing.dial_s)
            line = await self._connect_voice(number)
            if line is None:
                await self._urc("NO CARRIER")
                return
            line.send("CALL", "voice", self.callback_address)
            self._call = line
            await self._call_status_urc(CallStatus.ALERTING, number)
            try:
                while (message := await line.receive()) is not None:
                    if message[0] == "CONNECTED":
                        await self._call_status_urc(CallStatus.ACTIVE, number)
                    elif message[0] == "CLEARDOWN":
                        break
            finally:
                if self._call is line:
                    self._call = None
                    await line.close()
                    await self._urc("NO CARRIER")
        finally:
            self._call_task = None

    async def _connect_voice(self, number: str) -> CallLine | None:
        address = self.numbers.get(number)
        if address is None:
            _LOGGER.warning("modem: voice call to %s: number unobtainable", number)
            return None
        try:
            reader, writer = await asyncio.open_connection(*address, limit=MAX_LINE)
        except OSError as exc:
            _LOGGER.warning("modem: voice call to %s failed (%s)", number, exc)
            return None
        return CallLine(reader, writer)

    async def _call_status_urc(self, status: CallStatus, number: str) -> None:
        if self._settings.call_status:
            fields = ["1", "0", str(int(status)), "0", "0", f'"{number}"', "145"]
            if self.profile.call_status_field == 1:  # u-blox: +UCALLSTAT: <call_id>,<stat>
                fields = ["1", str(int(status))]
            await self._urc(f"{self.profile.call_status_urc}: {','.join(fields)}")

    async def _incoming(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The PSAP calls back: ring, and connect once the host answers with ATA."""
        line = CallLine(reader, writer)
        first = await line.receive()
        if first is None or first[0] != "CALL" or not self.registered or self._call is not None or self._out is None:
            await line.close()  # unreachable or busy: the caller sees the line close
            return
        self._ringing = ringing = asyncio.get_running_loop().create_future()
        try:
            caller = first[1][1] if len(first[1]) > 1 and re.fullmatch(r"\+?[0-9]{1,20}", first[1][1]) else "112"
            clip = f'+CLIP: "{caller}",{145 if caller.startswith("+") else 129}'
            await self._urc("RING", *([clip] if self._settings.clip else []))
            async with asyncio.timeout(60.0):
                answered = await ringing
        except TimeoutError:
            answered = False
        finally:
            self._ringing = None
        if not answered:
            await line.close()
            return
        self._call = line
        line.send("CONNECTED")
        await self._converse(line)

    async def _converse(self, line: CallLine) -> None:
        """PSAP messages become URCs until the call ends."""
        try:
            while (message := await line.receive()) is not None:
                verb, args = message
                indication = _PSAP_URCS.get(verb)
                if verb == "AL-ACK":
                    clear = bool(args) and args[0] == "clear-down"
                    indication = EcallIndication.AL_ACK_CLEAR_DOWN if clear else EcallIndication.AL_ACK
                if indication is not None and (urc := self.profile.indication_line(indication)) is not None:
                    await self._urc(urc)
                if verb == "CLEARDOWN":
                    break
        finally:
            if self._call is line:
                self._call, self._ecall_type = None, None
                await line.close()
                await self._urc("NO CARRIER")

    async def _end_call(self, urc: str | None, *, hangup: bool = False) -> None:
        line, self._call, self._ecall_type = self._call, None, None
        task, self._call_task = self._call_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if line is not None:
            if hangup:
                line.send("HANGUP")
            await line.close()
            if urc is not None:
                await self._urc(urc)

    # -- output ----------------------------------------------------------------------------------------------
    async def _restore(self) -> None:
        self._settings = _SimConfig()

    async def _creg_urc(self) -> None:
        if self._settings.creg:
            await self._urc(f"+CREG: {self.registration}")

    async def _ok(self, *lines: str) -> None:
        await self._write(*lines, "OK")

    async def _final(self, word: str) -> None:
        await self._write(word)

    async def _error(self, code: int) -> None:
        mode = self._settings.cmee
        await self._write("ERROR" if mode == 0 else f"+CME ERROR: {code if mode == 1 else _CME_TEXT.get(code, code)}")

    async def _urc(self, *lines: str) -> None:
        await self._write(*lines)  # through the faults: a muted (hung) modem sends no URCs either

    async def _write(self, *lines: str) -> None:
        port = self._out
        if port is None or port.closed:
            return  # unplugged: nobody hears it
        with contextlib.suppress(UnpluggedError):
            await port.write(b"".join(b"\r\n" + line.encode("ascii") + b"\r\n" for line in lines))
