"""TransportModem: the circuit-switched modem and the NG eCall behind one `EcallModem`, choosing per dial.

    modem = TransportModem(on_event, configured=EcallTransport.AUTO,
                           cs=lambda on_event: ModemClient(settings, on_event=on_event),
                           ng=lambda on_event: NgEcallModem(config.ng, vin=vin, on_event=on_event))

The eCall service sees one modem. Each dial asks `choose_transport` (`tcu.ecall.ng.transport`) with what
the CS modem last reported (`ModemStatus.ims_emergency` from `+CNEMS1`, CS registration from `+CREG`)
and goes to that leg; the MSD, answer and hang-up go to the leg that carries the call. The CS modem keeps
everything else: registration (`AT+COPS`, eCall-only mode), the intelligent call's voice dial.

- CS fall-back: an NG attempt that fails before the PSAP answered (3xx-6xx, Timer B, sockets that would
  not open) is not reported; the same attempt goes on at once as a CS eCall when 2G/3G is present. Only
  when that is refused too does the state machine hear of a failed dial (and redial per its rules).
  A hang-up drops the fall-backs still queued for a manual or test call (the user cancelled it); an
  automatic call's stays queued: only the PSAP clears an automatic eCall, never the vehicle.
- With IMS emergency support, the status the service sees counts as registered even when the modem is
  not registered in the CS domain (LTE only): the eCall can be carried, so a waiting redial goes now.
- Call numbers: `calls` is the sum of both legs' counts, and each event's `call` is shifted by the other
  leg's count when it is read, so the service's "end of an earlier call" rule holds across legs.
- Each dial's choice is reported to the backend (`transport` record), with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from tcu.ecall.ng.ng_call import MsdSource, ReportSink
from tcu.ecall.ng.ng_modem import NgEcallModem
from tcu.ecall.ng.transport import EcallTransport, NetworkOffer, Transport, TransportDecision, choose_transport
from tcu.errors import DeviceGoneError, DeviceTimeoutError, ModemCommandError
from tcu.sources.modem import EcallIndication, EcallType, RegistrationStatus
from tcu.sources.modem_client import (
    ModemCallEnded,
    ModemCallStatus,
    ModemEvent,
    ModemIndication,
    ModemRing,
    ModemStatus,
)

if TYPE_CHECKING:  # the service imports this module; its modem protocol is what the CS leg offers
    from tcu.ecall.service import EcallModem

_LOGGER = logging.getLogger(__name__)
_MODEM_ERRORS = (ModemCommandError, DeviceTimeoutError, DeviceGoneError)


class TransportModem:
    def __init__(
        self,
        on_event: Callable[[ModemEvent], None],
        *,
        configured: EcallTransport,
        cs: Callable[[Callable[[ModemEvent], None]], EcallModem],
        ng: Callable[[Callable[[ModemEvent], None]], NgEcallModem],
    ) -> None:
        self._on_event = on_event
        self.configured = configured
        self.cs = cs(self._from_cs)
        self.ng = ng(self._from_ng)
        self.offer = NetworkOffer(ims_emergency=False, legacy_cs=False)
        self._carrier: Transport = Transport.CS  # the leg of the latest dial or answer
        self._ringing: Transport = Transport.CS
        self._ng_attempt: EcallType | None = None  # an NG dial not answered yet: a failure falls back to CS
        self._fallbacks: asyncio.Queue[EcallType] = asyncio.Queue()
        self._report: ReportSink = lambda body: None
        if configured is EcallTransport.NG:
            self.ng.prepare()

    def bind_service(self, *, msd: MsdSource, report: ReportSink) -> None:
        self.ng.bind_service(msd=msd, report=report)
        self._report = report

    @property
    def calls(self) -> int:
        return self.cs.calls + self.ng.calls

    @property
    def carrier(self) -> Transport:
        return self._carrier

    async def run(self) -> NoReturn:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.cs.run(), name="ecall-modem-cs")
            tasks.create_task(self.ng.run(), name="ecall-modem-ng")
            tasks.create_task(self._fall_back_to_cs(), name="ecall-cs-fallback")
        raise AssertionError("the eCall modem tasks never end")

    # -- what the eCall service asks -----------------------------------------------------------------------
    async def dial(self, ecall_type: EcallType) -> None:
        decision = choose_transport(self.configured, self.offer)
        self._tell(decision)
        if decision.transport is Transport.CS:
            self._carrier, self._ng_attempt = Transport.CS, None
            await self.cs.dial(ecall_type)
            return
        self._carrier, self._ng_attempt = Transport.NG, ecall_type
        try:
            await self.ng.dial(ecall_type)
        except _MODEM_ERRORS as exc:
            self._ng_attempt = None
            fallback = choose_transport(self.configured, self.offer, ng_failed=True)
            if fallback.transport is not Transport.CS:
                raise
            self._tell(fallback, f"NG dial refused ({exc})")
            self._carrier = Transport.CS
            await self.cs.dial(ecall_type)

    async def send_msd(self, msd: bytes) -> None:
        await (self.ng.send_msd(msd) if self._carrier is Transport.NG else self.cs.send_msd(msd))

    async def answer(self) -> None:
        self._carrier = self._ringing
        await (self.ng.answer() if self._ringing is Transport.NG else self.cs.answer())

    async def hang_up(self) -> None:
        self._ng_attempt = None
        self._drop_fallbacks()
        await (self.ng.hang_up() if self._carrier is Transport.NG else self.cs.hang_up())

    async def voice_dial(self, number: str) -> None:
        self._carrier = Transport.CS
        await self.cs.voice_dial(number)

    async def set_registration(self, registered: bool) -> None:
        await self.cs.set_registration(registered)

    # -- the legs' events ----------------------------------------------------------------------------------
    def _from_cs(self, event: ModemEvent) -> None:
        if isinstance(event, ModemStatus):
            self.offer = NetworkOffer(ims_emergency=event.ims_emergency, legacy_cs=event.registration.registered)
            ng_possible = event.ims_emergency and self.configured is not EcallTransport.CS
            if ng_possible:
                self.ng.prepare()
            if ng_possible and event.ready and not event.registration.registered:
                event = replace(event, registration=RegistrationStatus.HOME)  # the eCall can go: see module doc
        elif isinstance(event, ModemRing):
            self._ringing = Transport.CS
        self._on_event(_shifted(event, self.ng.calls))

    def _from_ng(self, event: ModemEvent) -> None:
        attempt = self._ng_attempt
        if isinstance(event, ModemIndication) and event.indication is EcallIndication.CONNECTED:
            self._ng_attempt = None
        elif isinstance(event, ModemCallEnded) and attempt is not None and event.call == self.ng.calls:
            self._ng_attempt = None
            fallback = choose_transport(self.configured, self.offer, ng_failed=True)
            if fallback.transport is Transport.CS:
                self._tell(fallback, event.reason)
                self._carrier = Transport.CS
                self._fallbacks.put_nowait(attempt)
                return  # not a failed dial yet: the CS attempt decides
        elif isinstance(event, ModemRing):
            self._ringing = Transport.NG
        self._on_event(_shifted(event, self.cs.calls))

    def _drop_fallbacks(self) -> None:
        """Forget the queued CS fall-backs of manual and test calls; an automatic one is never dropped."""
        kept: list[EcallType] = []
        while not self._fallbacks.empty():
            ecall_type = self._fallbacks.get_nowait()
            if ecall_type is EcallType.AUTOMATIC:
                kept.append(ecall_type)
            else:
                _LOGGER.info("eCall: the %s call was hung up; its CS fall-back is not dialled", ecall_type.name)
        for ecall_type in kept:
            self._fallbacks.put_nowait(ecall_type)

    async def _fall_back_to_cs(self) -> NoReturn:
        while True:
            ecall_type = await self._fallbacks.get()
            try:
                await self.cs.dial(ecall_type)
            except _MODEM_ERRORS as exc:
                self._on_event(
                    ModemCallEnded(reason=f"NG failed and the CS fall-back was refused: {exc}", call=self.calls)
                )

    def _tell(self, decision: TransportDecision, failure: str = "") -> None:
        reason = f"{failure}; {decision.reason}" if failure else decision.reason
        _LOGGER.warning("eCall transport %s: %s", decision.transport.value, reason)
        body: dict[str, str | bool] = {"event": "transport", "transport": decision.transport.value, "reason": reason}
        body |= {"ims_emergency": self.offer.ims_emergency, "legacy_cs": self.offer.legacy_cs}
        try:
            self._report(body)
        except Exception:  # a report must never touch the call
            _LOGGER.exception("eCall: the transport report could not be handed over")


def _shifted(event: ModemEvent, offset: int) -> ModemEvent:
    """The event with its call number on the combined count (see the module doc)."""
    if offset and isinstance(event, ModemIndication | ModemCallEnded | ModemCallStatus):
        return replace(event, call=event.call + offset)
    return event
