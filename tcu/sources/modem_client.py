"""The eCall modem on a serial port: AT commands one at a time, URCs as events, re-init after a reset.

    client = ModemClient(ModemClientConfig(port="/dev/ttyUSB2", profile=PROFILES["simcom"]), on_event=queue.put_nowait)
    tasks.create_task(client.run(), name="ecall-modem")     # never returns; reconnects forever
    await client.dial(EcallType.AUTOMATIC); await client.send_msd(msd_bytes); await client.answer()
    await client.voice_dial("+498900000000")      # a plain voice call (the intelligent emergency call)

Each connection opens the port and initialises the modem — `AT`, `ATE0`, `AT+CMEE=1` (numeric
errors), `AT+CPIN?`, `AT+CREG=1` (registration URCs), `AT+CLIP=1`, `AT+COPS=0|2` (registered or
dormant, as the owner wants), `AT+CREG?`, `AT+CSQ` — then polls registration and signal quality every
`poll_interval_s`, which also notices a modem that stopped answering. Everything the modem reports
goes to `on_event` as a `ModemEvent`, synchronously from the read callback, so it must be cheap.
A voice call's progress needs the profile's call-status URC (`AT+CLCC=1`): it is switched on before the
first voice dial of each connection — not at init, so a modem without it still carries the 112 eCall —
and reported as `ModemCallStatus`; `BUSY` and `NO ANSWER` end a call like `NO CARRIER`.
With `report_ims_emergency` (an eCall that may go NG over IMS), init also sends `AT+CNEM=1` and reads
`AT+CNEM?` (3GPP TS 27.007): whether the network supports IMS emergency calls, kept up to date by the
`+CNEMS1` URC and carried in `ModemStatus.ims_emergency`; a modem that refuses it offers CS eCall only.

Faults: a command unanswered within its timeout raises `DeviceTimeoutError`; `max_timeouts` in a row
end the connection (the port is reopened after a capped, jittered backoff, `tcu.sources.source_loop`).
A vanished port raises `DeviceGoneError` to whoever waits. `RDY` (the modem rebooted by itself) ends
any call — reported as `ModemCallEnded` — and the modem is initialised again on the same port.
Garbage is counted and logged, never taken for an answer. Refused commands raise `ModemCommandError`.

Which call an end belongs to: `calls` counts the calls the modem accepted (a dial, voice dial or answer
acknowledged with `OK`), and every `ModemCallEnded`, `ModemIndication` and `ModemCallStatus` carries
`call`, the count when it was read. The modem writes result codes and URCs on one line in the order
things happen, and it releases a call (writing its `NO CARRIER`, V.250) before it accepts another: it
refuses an eCall while one is up (`+CME ERROR: 3`, 27.007 `+CECALL`). So an end read before the new
dial's `OK` ended an earlier call, even when the owner handles it after the dial: `call < calls` says
so. The new call's own failure before its `OK` is the dial's final result code (`ERROR`/`+CME ERROR`,
or `NO CARRIER`/`BUSY` for `ATD`), never a URC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from tcu.backoff import Backoff
from tcu.errors import DeviceGoneError, DeviceTimeoutError, ModemCommandError
from tcu.reconnect import Sleep
from tcu.sources.modem import (
    CALL_END_WORDS,
    PROFILES,
    AtParser,
    CallStatus,
    EcallIndication,
    EcallType,
    Garbage,
    ModemProfile,
    RegistrationStatus,
    Response,
    SimStatus,
    Urc,
    describe_cme,
    parse_cnem,
    parse_cnems1,
    parse_cpin,
    parse_csq,
    parse_registration_read,
    parse_registration_urc,
)
from tcu.sources.serial_port import close_transport, open_transport
from tcu.sources.source_loop import source_reconnect_loop
from tcu.virtual_time import io_timeout

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemClientConfig:
    port: str  # device path or pyserial URL
    baudrate: int = 115200
    profile: ModemProfile = field(default_factory=lambda: PROFILES["simcom"])
    command_timeout_s: float = 5.0
    poll_interval_s: float = 30.0
    max_timeouts: int = 3
    report_ims_emergency: bool = False  # AT+CNEM=1 at init: the NG eCall needs to know the network's IMS support
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=10.0))


# -- events -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ModemStatus:
    ready: bool
    registration: RegistrationStatus
    sim: SimStatus
    rssi_dbm: int | None = None
    reason: str = ""
    ims_emergency: bool = False  # the network supports IMS emergency calls (`+CNEMS1: 1`): NG eCall possible


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemIndication:
    indication: EcallIndication
    call: int  # `ModemClient.calls` when it was read: it is about that call or an earlier one


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemRing:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemCallStatus:
    status: CallStatus  # a voice call's progress: dialling, alerting, active (answered), ...
    call: int  # `ModemClient.calls` when it was read


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemCallEnded:
    reason: str
    call: int  # `ModemClient.calls` when it was read: it ended that call or an earlier one, never a later one


ModemEvent = ModemStatus | ModemIndication | ModemRing | ModemCallEnded | ModemCallStatus


# -- the I/O edge -------------------------------------------------------------------------------------------
class ModemLink(Protocol):
    def send(self, data: bytes) -> None:
        """Write bytes; `DeviceGoneError` once the port is gone."""
        ...

    async def aclose(self) -> None: ...


DataCallback = Callable[[bytes], None]
LostCallback = Callable[[str], None]
LinkOpener = Callable[[DataCallback, LostCallback], Awaitable[ModemLink]]


class _SerialProtocol(asyncio.Protocol):
    def __init__(self, on_data: DataCallback, on_lost: LostCallback) -> None:
        self.on_data, self.on_lost = on_data, on_lost
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.on_lost(f"{type(exc).__name__}: {exc}" if exc else "port closed")


class SerialModemLink:
    """`ModemLink` over a serial port (the sources' one serial shell, `tcu.sources.serial_port`)."""

    def __init__(self, name: str, transport: asyncio.Transport, protocol: _SerialProtocol) -> None:
        self._name, self._transport, self._protocol = name, transport, protocol

    @classmethod
    async def open(cls, url: str, baudrate: int, on_data: DataCallback, on_lost: LostCallback) -> SerialModemLink:
        protocol = _SerialProtocol(on_data, on_lost)
        return cls(url, await open_transport(url, baudrate, protocol, device="modem"), protocol)

    def send(self, data: bytes) -> None:
        if self._protocol.closed.is_set() or self._transport.is_closing():
            raise DeviceGoneError(f"modem port {self._name} is closed")
        self._transport.write(data)

    async def aclose(self) -> None:
        await close_transport(self._transport, self._protocol.closed.wait())


# -- the client -----------------------------------------------------------------------------------------------
class ModemClient:
    def __init__(
        self,
        config: ModemClientConfig,
        *,
        on_event: Callable[[ModemEvent], None],
        opener: LinkOpener | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._config = config
        self._profile = config.profile
        self._on_event = on_event
        self._opener = opener or (lambda data, lost: SerialModemLink.open(config.port, config.baudrate, data, lost))
        self._reconnect = source_reconnect_loop(
            name=f"modem {config.port}",
            backoff=config.backoff,
            rng=rng,
            on_down=self._down,
            sleep=sleep,
        )
        self._parser = AtParser()
        self._link: ModemLink | None = None
        self._lock = asyncio.Lock()
        self._answer: asyncio.Future[Response] | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._reinit = False
        self._failure: Exception | None = None
        self._timeouts = 0
        self._want_registered = True
        self._call_status_on = False  # the call-status URC enabled on this connection
        self._starting_call = False  # the command in flight places or answers a call
        self._call_up = False  # the modem accepted a call whose end has not been read yet
        self.calls = 0  # calls the modem accepted, over all connections (see the module doc)
        self.registration = RegistrationStatus.UNKNOWN
        self.sim = SimStatus.UNKNOWN
        self.rssi_dbm: int | None = None
        self.ims_emergency = False
        self.garbage_lines = 0

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def run(self) -> NoReturn:
        await self._reconnect.run(self._connection)

    # -- what the eCall service asks ------------------------------------------------------------------------
    async def dial(self, ecall_type: EcallType) -> None:
        command = self._profile.dial_command(ecall_type)
        await self._ready_command(command, self._profile.dial_timeout_s, starts_call=True)

    async def send_msd(self, msd: bytes) -> None:
        await self._ready_command(self._profile.msd_command(msd))

    async def voice_dial(self, number: str) -> None:
        """Place a voice call; `ModemCallStatus` events follow, `ModemCallEnded` when it ends."""
        try:
            command = self._profile.voice_dial_command(number)
        except ValueError as exc:
            raise ModemCommandError(f"voice dial refused: {exc}", command="ATD", code=None) from exc
        if not self._call_status_on:
            try:
                await self._ready_command(self._profile.call_status_enable)
                self._call_status_on = True
            except ModemCommandError as exc:  # dial anyway: the owner's answer timer decides
                _LOGGER.warning("modem cannot report call progress (%s): an answer will go unnoticed", exc)
        await self._ready_command(command, self._profile.dial_timeout_s, starts_call=True)

    async def answer(self) -> None:
        await self._ready_command("ATA", starts_call=True)

    async def hang_up(self) -> None:
        await self._ready_command("ATH")

    async def set_registration(self, registered: bool) -> None:
        """Registered (`AT+COPS=0`) or dormant (`AT+COPS=2`); remembered and applied at every init."""
        self._want_registered = registered
        if self.ready:
            await self._ready_command(_cops(registered), self._profile.dial_timeout_s)

    # -- one connection ------------------------------------------------------------------------------------
    async def _connection(self) -> None:
        self._parser, self._failure, self._timeouts = AtParser(), None, 0
        self._wake.clear()
        link = await self._opener(self._on_data, self._on_lost)
        self._link = link
        try:
            while True:
                self._reinit = False
                await self._initialise()
                self._reconnect.healthy()
                while not self._reinit:
                    await self._idle(self._config.poll_interval_s)
                    if not self._reinit:
                        await self._poll()
        finally:
            self._link = None
            self._ready.clear()
            self._call_up = False  # a lost port or a reset modem holds no call (`_down` reports its end)
            if self._answer is not None and not self._answer.done():
                self._answer.set_exception(DeviceGoneError(f"modem on {self._config.port} went away"))
            await link.aclose()

    async def _initialise(self) -> None:
        self._ready.clear()
        self._call_status_on = False  # a reset or a new port forgets it
        for command in ("AT", "ATE0", "AT+CMEE=1"):
            await self._command(command)
        try:
            self.sim = parse_cpin(_first((await self._command("AT+CPIN?")).values("+CPIN"), "UNKNOWN"))
        except ModemCommandError as exc:
            self.sim = SimStatus.NOT_INSERTED if exc.code == 10 else SimStatus.UNKNOWN
        if self.sim is not SimStatus.READY:
            _LOGGER.error("modem SIM is %s: no eCall is possible until it is fixed", self.sim.value)
        for command in ("AT+CREG=1", "AT+CLIP=1"):
            await self._command(command)
        if self._config.report_ims_emergency:
            await self._enable_ims_emergency_reports()
        await self._command(_cops(self._want_registered), self._profile.dial_timeout_s)
        await self._poll(announce=False)
        self._ready.set()
        _LOGGER.info("modem ready: SIM %s, %s, %s dBm", self.sim.value, self.registration.name, self.rssi_dbm)
        self._emit_status("initialised")

    async def _enable_ims_emergency_reports(self) -> None:
        try:
            await self._command("AT+CNEM=1")
            self.ims_emergency = parse_cnem(_first((await self._command("AT+CNEM?")).values("+CNEM"), ""))
        except ModemCommandError as exc:  # an older modem: no NG eCall through it, the CS eCall as ever
            self.ims_emergency = False
            _LOGGER.warning("modem cannot report IMS emergency support (%s): circuit-switched eCall only", exc)

    async def _poll(self, *, announce: bool = True) -> None:
        registration = parse_registration_read(_first((await self._command("AT+CREG?")).values("+CREG"), ""))
        self.rssi_dbm = parse_csq(_first((await self._command("AT+CSQ")).values("+CSQ"), "99,99")).dbm
        if registration is not self.registration:
            self.registration = registration
            if announce:
                self._emit_status("registration polled")

    async def _idle(self, delay: float) -> None:
        """Wait for the next poll; end early on a reset, raise when the link failed meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()
        if self._failure is not None:
            raise self._failure

    async def _ready_command(self, text: str, limit_s: float | None = None, *, starts_call: bool = False) -> Response:
        try:
            async with asyncio.timeout(io_timeout(self._config.command_timeout_s)):
                await self._ready.wait()
        except TimeoutError:
            raise DeviceGoneError(f"modem on {self._config.port} is not ready (not connected or restarting)") from None
        return await self._command(text, limit_s, starts_call=starts_call)

    async def _command(self, text: str, limit_s: float | None = None, *, starts_call: bool = False) -> Response:
        timeout = self._config.command_timeout_s if limit_s is None else limit_s
        async with self._lock:
            link = self._link
            if link is None or self._failure is not None:
                raise DeviceGoneError(f"modem on {self._config.port} is not connected")
            answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self._answer = answer
            self._starting_call = starts_call
            try:
                link.send(self._parser.command(text, call_up=starts_call and self._call_up))
                async with asyncio.timeout(io_timeout(timeout)):
                    response = await answer
            except TimeoutError:
                self._timeouts += 1
                error = DeviceTimeoutError(f"modem did not answer {_short(text)} within {timeout:g} s")
                if self._timeouts >= self._config.max_timeouts:
                    self._fail(DeviceTimeoutError(f"{self._timeouts} modem commands in a row went unanswered"))
                raise error from None
            finally:
                self._answer, self._starting_call = None, False
                self._parser.cancel()  # no-op after an answer; after a failure the next command starts clean
        self._timeouts = 0
        if not response.ok:
            reason = describe_cme(response.cme_error) if response.final != "NO CARRIER" else "NO CARRIER"
            raise ModemCommandError(f"{_short(text)}: {reason}", command=text, code=response.cme_error)
        return response

    # -- from the port (read callback) ------------------------------------------------------------------------
    def _on_data(self, data: bytes) -> None:
        for item in self._parser.feed(data):
            if isinstance(item, Response):
                self._count_call(item)  # here, in line order: the URCs after this OK are the new call's
                if self._answer is not None and not self._answer.done():
                    self._answer.set_result(item)
            elif isinstance(item, Urc):
                self._urc(item)
            elif isinstance(item, Garbage):
                self.garbage_lines += 1
                _LOGGER.warning("modem: ignoring garbage %r", item.data[:40])

    def _count_call(self, response: Response) -> None:
        if not response.ok:
            return
        if self._starting_call:
            self.calls += 1
            self._call_up = True
        elif response.command.upper() == "ATH":  # hung up by us: V.250 `H` answers OK, no NO CARRIER follows
            self._call_up = False

    def _urc(self, urc: Urc) -> None:
        indication = self._profile.indication(urc)
        if indication is not None:
            self._on_event(ModemIndication(indication=indication, call=self.calls))
        elif urc.name in ("+CREG", "+CEREG"):
            registration = parse_registration_urc(urc.value)
            if registration is not self.registration:
                self.registration = registration
                self._emit_status(f"{urc.name} URC")
        elif urc.name == "+CNEMS1":
            supported = parse_cnems1(urc.value)
            if supported is not self.ims_emergency:
                self.ims_emergency = supported
                self._emit_status("+CNEMS1 URC")
        elif urc.name == "RING":
            self._on_event(ModemRing())
        elif (status := self._profile.call_status(urc)) is not None:
            self._on_event(ModemCallStatus(status=status, call=self.calls))
        elif urc.name in CALL_END_WORDS:
            self._call_up = False
            self._on_event(ModemCallEnded(reason=urc.name, call=self.calls))
        elif urc.name == "RDY":
            _LOGGER.warning("modem restarted by itself (RDY): any call is lost; initialising again")
            self._ready.clear()
            self._reinit = True
            self._wake.set()
            self._call_up = False
            self._on_event(ModemCallEnded(reason="modem restarted", call=self.calls))
            self._emit_status("modem restarted")
        else:
            _LOGGER.debug("modem URC %s: %s", urc.name, urc.value)

    def _on_lost(self, reason: str) -> None:
        self._fail(DeviceGoneError(f"modem on {self._config.port} went away ({reason})"))

    def _fail(self, error: Exception) -> None:
        self._failure = error
        self._ready.clear()
        self._wake.set()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    def _down(self, reason: str) -> None:
        self.registration = RegistrationStatus.UNKNOWN
        self._on_event(ModemCallEnded(reason=f"modem lost: {reason}", call=self.calls))
        self._emit_status(reason)

    def _emit_status(self, reason: str) -> None:
        self._on_event(
            ModemStatus(
                ready=self.ready,
                registration=self.registration,
                sim=self.sim,
                rssi_dbm=self.rssi_dbm,
                reason=reason,
                ims_emergency=self.ims_emergency,
            )
        )


def _cops(registered: bool) -> str:
    return "AT+COPS=0" if registered else "AT+COPS=2"


def _first(values: list[str], default: str) -> str:
    return values[0] if values else default


def _short(command: str) -> str:
    return command if len(command) <= 40 else command[:37] + "..."
