"""The PSAP's NG eCall side (RFC 8147, EN 17184): eCalls as SIP over UDP, beside the circuit-switched stub.

The vehicle's INVITE to an eCall service URN carries the MSD (the same EN 15722 UPER bytes as the
circuit-switched call), its PIDF-LO location and the SDP offer in one multipart body; here it arrives
directly or through a proxy (Kamailio in the HIL, `hil/sip/kamailio.cfg`: the IMS core / ESInet):

    vehicle → PSAP    INVITE urn:service:sos.ecall.automatic   MSD + PIDF-LO + SDP offer
    PSAP → vehicle    100 Trying (180 Ringing while the operator's pick-up is delayed)
                      200 OK   SDP answer + control <ack ref=MSD received="true|false">
    vehicle → PSAP    ACK, then RTP both ways (silence here, counted)
    PSAP → vehicle    INFO     control <request action="send-data" datatype="eCall.MSD">   (request_msd)
    vehicle → PSAP    INFO     a fresh MSD            → 200 OK, then INFO with its control ack
    PSAP → vehicle    BYE      (clear_down; only the PSAP ends an automatic eCall)
                      INVITE   to the Contact of the eCall (call_back), SDP only

    async with PsapNg(behaviour=PsapBehaviour(voice_s=10)) as psap:    # psap.address: where SIP goes
        received = await psap.wait_for_msd()      # ReceivedMsd, as the CS stub's: bytes, decoded Msd, timing
        await psap.request_msd(); await psap.call_back(); await psap.clear_down()

The API is the circuit-switched `PsapStub`'s (`calls`, `msds`, `wait_for_msd`, `rows`, `archived`, the
same `PsapBehaviour`), so a scenario treats both alike; with `database=` the MSDs go into the same table
(`transport` = "ng"). Every datagram is isolated: one that does not parse is dropped and logged; a
request that parses but is wrong (no MSD part, a Call-Info pointing nowhere, a broken PIDF-LO) gets a
400 with the reason, and so does an in-dialog request with an older CSeq (a replay); a request for a
dialog we do not have (a forged BYE, wrong tags) gets a 481; one call more than `max_calls` gets 486. An
MSD that does not decode is acknowledged with received="false" and the reason logged — the voice call is
answered all the same, and the PSAP asks for the MSD again (`resend_invalid`). RTP goes only to loopback
addresses (the simulated network's), never where any SDP points.

Memory stays bounded under an INVITE+BYE flood: `calls` holds the calls up (at most `max_calls`, plus
the operator's callbacks) and the newest `ENDED_CALLS_KEPT` ended ones; older ended calls (each holds
its MSDs, up to 64 KiB each) leave `calls`, `msds` and `rows` — with `database=` they are all in the
table. Dialogs are found by Call-ID in a dict, not by scanning the calls; an INVITE with the Call-ID of
a call we still hold is a retransmission, never a second call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from backend_stub.psap import PsapBehaviour, ReceivedMsd, msd_row
from backend_stub.psap_archive import PsapArchive
from backend_stub.psap_ng_call import (
    Address,
    NgCall,
    ack_event,
    address_of,
    callback_invite,
    kind_of,
    request_in_call,
    sdp_of,
    to_tag,
)
from backend_stub.psap_rtp import PsapVoice
from backend_stub.psap_sip_endpoint import TIMEOUT_S, SipEndpoint
from backend_stub.voice_line import CallLine, LineServer
from tcu.clock import Clock
from telematics_wire.errors import MsdError, SipError
from telematics_wire.msd import decode
from telematics_wire.records import to_millis
from telematics_wire.sip.call_dialog import dialog_as_callee, dialog_as_caller
from telematics_wire.sip.dialog import new_tag
from telematics_wire.sip.ecall_body import (
    INFO_PACKAGE,
    build_control_ack,
    build_control_request_msd,
)
from telematics_wire.sip.ecall_invite import ALLOW, answer_body, info_body, read_control, read_ecall_invite, read_msd
from telematics_wire.sip.message import SipRequest, response_to
from telematics_wire.sip.sdp import AudioSession, build_sdp, parse_sdp

# NgCall lives in psap_ng_call; callers import it from here too
__all__ = ["ENDED_CALLS_KEPT", "MAX_CALLS", "NgCall", "PsapNg"]

_LOGGER = logging.getLogger(__name__)
_MAX_RESENDS = 3
MAX_CALLS = 32
ENDED_CALLS_KEPT = 64  # ended calls kept for `calls`/`msds`/`rows` (a bench's run report reads them)
_MAX_REASON = 120  # a 400's reason phrase: the decoder's sentence, cut to a header's sensible length


class PsapNg(LineServer[NgCall]):
    name = "NG PSAP"
    network = "the simulated IMS emergency network (SIP over UDP)"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: PsapBehaviour | None = None,
        clock: Clock | None = None,
        database: Path | None = None,
        proxy: Address | None = None,
        max_calls: int = MAX_CALLS,
    ) -> None:
        """proxy: where the PSAP's own new calls (callbacks) go first; None: straight to the vehicle's Contact.
        max_calls: calls up at once; one more INVITE gets 486 Busy Here (each call holds a socket and RTP)."""
        super().__init__(host=host, port=port, clock=clock)
        self.behaviour = behaviour or PsapBehaviour()
        self._proxy = proxy
        self._max_calls = max_calls
        self._endpoint = SipEndpoint(self._on_request, name=self.name)
        self._archive = None if database is None else PsapArchive(database)
        self._dialogs: dict[str, NgCall] = {}  # Call-ID → a call in `calls`
        self._ended: deque[NgCall] = deque()  # the ended calls still in `calls`, oldest first
        self._last_id = 0

    @property
    def msds(self) -> list[ReceivedMsd]:
        return [msd for call in self.calls for msd in call.msds]

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    @property
    def address(self) -> tuple[str, int]:
        return self._endpoint.address

    @property
    def contact(self) -> str:
        host, port = self.address
        return f"sip:psap@{host}:{port}"

    @property
    def dropped(self) -> int:
        """Datagrams dropped because they were no SIP message."""
        return self._endpoint.dropped

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._archive is not None:
            await self._archive.open()
        await self._endpoint.open(self._host, self._port)
        self._listening.set()
        _LOGGER.info("%s answering on %s (%s:%d)", self.name, self.network, *self.address)

    async def close(self) -> None:
        await super().close()  # the calls' tasks (answers, voice, timers) cancelled and awaited
        for call in self.calls:
            if call.voice is not None:
                await call.voice.close()
        self._endpoint.close()
        if self._archive is not None:
            await self._archive.close()
            self._archive = None

    async def archived(self) -> None:
        """Once every MSD received so far is in the database (or its failure logged)."""
        if self._archive is not None:
            await self._archive.written()

    async def _take(self, line: CallLine, kind: str, callback: str | None) -> None:
        raise AssertionError("the NG PSAP takes SIP calls, never a call on the line network")

    # -- waiting, for tests and run reports -----------------------------------------------------------------
    async def wait_for_msd(self, count: int = 1, *, within_s: float = 10.0) -> ReceivedMsd:
        await self.wait_for(lambda: len(self.msds) >= count, within_s=within_s, what=f"MSD number {count}")
        return self.msds[count - 1]

    def rows(self) -> list[dict[str, Any]]:
        """Every MSD received, JSON-ready: the same rows as the circuit-switched stub's, transport "ng"."""
        return [msd_row(self.call(received.call_id), received, "ng") for received in self.msds]

    # -- operator actions -----------------------------------------------------------------------------------
    async def request_msd(self, call_id: int | None = None) -> None:
        """Ask the vehicle for a fresh MSD: INFO with the control block's send-data request."""
        call = self._active(call_id)
        self._mark(call, "request msd")
        await self._info(call, control=build_control_request_msd())

    async def clear_down(self, call_id: int | None = None) -> None:
        """End the call with BYE; the call counts as ended by the PSAP at once, the BYE's answer is awaited."""
        call = self._active(call_id)
        assert call.dialog is not None
        self._end(call, "psap")
        if call.voice is not None:
            await call.voice.close()
        await self._transact(call, *request_in_call(call, "BYE", sent_by=self.address, contact=self.contact))

    async def call_back(self, call_id: int | None = None, *, ring_for_s: float = 60.0) -> NgCall:
        """INVITE the vehicle at the Contact its eCall gave; returns the ringing call at once.

        Answered when the vehicle's 2xx comes (`call.at("connected")`); abandoned after `ring_for_s`
        (ended by "psap"); refused or unreachable: ended by "network" (or "ivs" for a 4xx-6xx)."""
        original = self.call(call_id)
        if not original.callback:
            raise LookupError(f"call {original.id} left no Contact to call back")
        destination = self._proxy or address_of(original.callback)
        call = self._new_call("callback", original.callback, urn="")
        call.voice = PsapVoice(self._host, self._changed.set)
        await call.voice.open()
        sdp = build_sdp(AudioSession(address=self._host, port=call.voice.port), username="psap")
        invite = callback_invite(target=original.callback, contact=self.contact, sent_by=self.address, sdp=sdp)
        self._dialogs[invite.call_id] = call
        self._own(self._ring(call, invite, destination, ring_for_s), f"psap-ng-callback-{call.id}")
        return call

    async def _ring(self, call: NgCall, invite: SipRequest, destination: Address, ring_for_s: float) -> None:
        try:
            async with asyncio.timeout(ring_for_s):
                response = await self._endpoint.request(invite, destination)
        except TimeoutError:
            _LOGGER.warning("%s callback %d not answered within %g s", self.name, call.id, ring_for_s)
            self._end(call, "psap")
            return
        if response.status >= 300:
            _LOGGER.warning("%s callback %d refused: %d %s", self.name, call.id, response.status, response.reason)
            self._end(call, "ivs" if response.status < 500 else "network")
            return
        try:
            call.dialog = dialog_as_caller(invite, response)
            offer = parse_sdp(sdp_of(response))
        except SipError as exc:
            _LOGGER.warning("%s callback %d: unusable 2xx (%s)", self.name, call.id, exc)
            self._end(call, "network")
            return
        ack = request_in_call(call, "ACK", sent_by=self.address, contact=self.contact, cseq=invite.cseq.number)
        self._endpoint.send(*ack)
        self._mark(call, "connected")
        self._start_voice(call, offer)

    # -- the network side -----------------------------------------------------------------------------------
    def _on_request(self, request: SipRequest, source: Address) -> None:
        """One request from the network; whatever is wrong with it costs at most this request."""
        try:
            if request.method == "INVITE" and to_tag(request) is None:
                self._incoming_invite(request, source)
                return
            if request.method == "OPTIONS":
                self._reply(request, source, 200, headers=(("Allow", ALLOW),))
                return
            if request.method not in ("ACK", "BYE", "INFO", "INVITE"):
                self._reply(request, source, 405, headers=(("Allow", ALLOW),))
                return
            call = self._dialogs.get(request.call_id)
            if call is None or call.dialog is None or not call.dialog.matches(request):
                _LOGGER.warning(
                    "%s: %s from %s:%d for no dialog of ours (forged or stale)", self.name, request.method, *source
                )
                if request.method != "ACK":
                    self._reply(request, source, 481)
                return
            self._in_dialog(call, request, source)
        except SipError as exc:
            _LOGGER.warning("%s: refused %s from %s:%d: %s", self.name, request.method, *source, exc)
            if request.method != "ACK":
                self._reply(request, source, 400, reason=str(exc))

    def _in_dialog(self, call: NgCall, request: SipRequest, source: Address) -> None:
        if request.method == "ACK":
            if not call.acked.is_set():
                call.acked.set()
                self._mark(call, "acked")
            return
        assert call.dialog is not None
        call.dialog = call.dialog.received(request)  # SipError (→ 400) for a CSeq going back: a replay
        if request.method == "BYE":
            self._reply(request, source, 200)
            if call.active:
                _LOGGER.info("%s call %d: the vehicle hung up", self.name, call.id)
                self._end(call, "ivs")
                if call.voice is not None:
                    self._own(call.voice.close(), f"psap-ng-voice-end-{call.id}")
        elif request.method == "INFO":
            self._incoming_info(call, request, source)
        else:  # a re-INVITE: the session stays as it is
            self._reply(request, source, 488)

    def _incoming_invite(self, request: SipRequest, source: Address) -> None:
        known = self._dialogs.get(request.call_id)
        if known is not None:  # the endpoint forgot its answer (a flood of other requests): not a second call
            _LOGGER.warning(
                "%s: INVITE again for call %d (Call-ID %s): no new call", self.name, known.id, request.call_id
            )
            if known.active:
                self._reply(request, source, 100)  # its 2xx goes again until the ACK (`_answer`)
            return
        invite = read_ecall_invite(request)  # SipError → 400 with the reason, in _on_request
        offer = parse_sdp(invite.sdp) if invite.sdp is not None else None
        dialog = dialog_as_callee(request, new_tag())
        if sum(call.active for call in self.calls) >= self._max_calls:
            _LOGGER.warning("%s: %d calls up, %s from %s refused busy", self.name, self._max_calls, invite.urn, source)
            self._reply(request, source, 486)
            return
        self._reply(request, source, 100)
        call = self._new_call(kind_of(invite.urn), dialog.remote_target, urn=invite.urn)
        call.dialog, call.location = dialog, invite.location
        self._dialogs[request.call_id] = call
        received = self._received_msd(call, invite.msd)
        _LOGGER.info(
            "%s call %d: %s from %s, location %s", self.name, call.id, invite.urn, dialog.remote_uri, invite.location
        )
        answer = self._answer(
            call, request, source=source, received=received, msd_ref=invite.msd_content_id, offer=offer
        )
        self._own(answer, f"psap-ng-call-{call.id}")

    async def _answer(
        self,
        call: NgCall,
        request: SipRequest,
        *,
        source: Address,
        received: ReceivedMsd,
        msd_ref: str,
        offer: AudioSession | None,
    ) -> None:
        assert call.dialog is not None
        call.voice = PsapVoice(self._host, self._changed.set)
        await call.voice.open()
        if self.behaviour.answer_delay_s > 0:
            self._reply(request, source, 180, to_tag=call.dialog.local_tag)
            await asyncio.sleep(self.behaviour.answer_delay_s)
        sdp = build_sdp(AudioSession(address=self._host, port=call.voice.port), username="psap")
        ok = received.msd is not None
        control = build_control_ack(msd_ref, ok) if self.behaviour.al_ack else None
        content_type, body = answer_body(sdp, control)
        headers = (("Contact", f"<{self.contact}>"), ("Allow", ALLOW), ("Content-Type", content_type))
        answer = response_to(request, 200, to_tag=call.dialog.local_tag, headers=headers, body=body)
        self._endpoint.respond(request, answer, source)
        self._mark(call, "connected")
        if control is not None:
            self._mark(call, ack_event(ok))
        self._archive_msd(call, received)
        if offer is not None:
            self._start_voice(call, offer)
        if not await self._endpoint.resend_until(call.acked, answer, source, while_=lambda: call.active):
            _LOGGER.warning(
                "%s call %d: no ACK for the 200 OK within %g s; clearing down", self.name, call.id, TIMEOUT_S
            )
            await self.clear_down(call.id)
            return
        await self._after_msd(call, received, acked=control is not None)

    async def _after_msd(self, call: NgCall, received: ReceivedMsd, *, acked: bool) -> None:
        """What the operator does once an MSD is in: ask again for a bad one, clear down, or talk and clear down."""
        if not call.active:
            return
        if received.msd is None:
            if self.behaviour.resend_invalid and call.resends < _MAX_RESENDS:
                call.resends += 1
                await self.request_msd(call.id)
            return
        if not acked:
            return
        if self.behaviour.clear_down_with_ack:
            await self.clear_down(call.id)
        elif self.behaviour.voice_s is not None:
            await asyncio.sleep(self.behaviour.voice_s)
            if call.active:
                _LOGGER.info(
                    "%s call %d: operator clears down after %.0f s of voice", self.name, call.id, self.behaviour.voice_s
                )
                await self.clear_down(call.id)

    def _incoming_info(self, call: NgCall, request: SipRequest, source: Address) -> None:
        package = request.headers.get("Info-Package")
        if package is None or package.strip().lower() != INFO_PACKAGE.lower():
            self._reply(request, source, 469, headers=(("Recv-Info", INFO_PACKAGE),))
            return
        found = read_msd(request)  # SipError → 400, in _on_request
        control = read_control(request)
        self._reply(request, source, 200)
        if control is not None:
            _LOGGER.info("%s call %d: control block from the vehicle: %s", self.name, call.id, control)
        if found is None:
            return
        msd, msd_ref = found
        received = self._received_msd(call, msd)
        self._archive_msd(call, received)
        if self.behaviour.al_ack:
            self._mark(call, ack_event(received.msd is not None))
        self._own(self._ack_by_info(call, received, msd_ref), f"psap-ng-info-ack-{call.id}")

    async def _ack_by_info(self, call: NgCall, received: ReceivedMsd, msd_ref: str) -> None:
        if self.behaviour.al_ack and call.active:
            await self._info(call, control=build_control_ack(msd_ref, received.msd is not None))
        await self._after_msd(call, received, acked=self.behaviour.al_ack)

    async def _info(self, call: NgCall, *, control: bytes) -> None:
        headers, content_type, body = info_body(control=control)
        info = request_in_call(
            call,
            "INFO",
            sent_by=self.address,
            contact=self.contact,
            headers=headers,
            body=body,
            content_type=content_type,
        )
        await self._transact(call, *info)

    async def _transact(self, call: NgCall, request: SipRequest, destination: Address) -> None:
        try:
            response = await self._endpoint.request(request, destination)
        except TimeoutError as exc:
            _LOGGER.warning("%s call %d: %s", self.name, call.id, exc)
            return
        if response.status >= 300:
            _LOGGER.warning(
                "%s call %d: %s answered %d %s", self.name, call.id, request.method, response.status, response.reason
            )

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def _new_call(self, kind: str, callback: str, *, urn: str) -> NgCall:
        self._last_id += 1
        call = NgCall(id=self._last_id, kind=kind, callback=callback, started=self._clock.now(), urn=urn)
        self.calls.append(call)
        self._mark(call, "call")
        return call

    def _end(self, call: NgCall, by: str) -> None:
        if call.ended_by is not None:
            return
        super()._end(call, by)
        self._ended.append(call)
        while len(self._ended) > ENDED_CALLS_KEPT:
            self._forget(self._ended.popleft())

    def _forget(self, call: NgCall) -> None:
        self.calls.remove(call)  # a bounded list: max_calls up plus ENDED_CALLS_KEPT
        for call_id in [key for key, held in self._dialogs.items() if held is call]:
            del self._dialogs[call_id]
        if call.voice is not None:  # a refused callback's socket was never closed
            self._own(call.voice.close(), f"psap-ng-voice-forget-{call.id}")

    def _received_msd(self, call: NgCall, raw: bytes) -> ReceivedMsd:
        now, mono = self._clock.now(), self._clock.monotonic()
        try:
            msd = decode(raw)
        except MsdError as exc:
            _LOGGER.warning("%s call %d: MSD does not decode: %s", self.name, call.id, exc)
            received = ReceivedMsd(call_id=call.id, received=now, mono=mono, raw=raw, msd=None, error=str(exc))
        else:
            _LOGGER.info("%s call %d: MSD %d from %s", self.name, call.id, msd.message_identifier, msd.vin)
            received = ReceivedMsd(call_id=call.id, received=now, mono=mono, raw=raw, msd=msd)
        call.msds.append(received)
        self._mark(call, "msd")
        return received

    def _archive_msd(self, call: NgCall, received: ReceivedMsd) -> None:
        # After the answer is on the wire, and off the loop (backend_stub.psap_archive).
        if self._archive is not None:
            self._archive.add(call.id, {**msd_row(call, received, "ng"), "received_ms": to_millis(received.received)})

    def _active(self, call_id: int | None) -> NgCall:
        call = self.call(call_id)
        if not call.active or call.dialog is None:
            raise LookupError(f"{self.name} call {call.id} is not up ({call.ended_by or 'not answered yet'})")
        return call

    def _reply(
        self,
        request: SipRequest,
        source: Address,
        status: int,
        *,
        reason: str = "",
        to_tag: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        text = " ".join(reason.split())[:_MAX_REASON]  # one line, whatever the error said
        tag = to_tag if to_tag is not None else (new_tag() if status > 100 else None)
        self._endpoint.respond(request, response_to(request, status, text, to_tag=tag, headers=headers), source)

    def _start_voice(self, call: NgCall, offer: AudioSession) -> None:
        if call.voice is None:
            return
        if ip_address(offer.address).is_loopback:
            call.voice.start((offer.address, offer.port), self._tasks)
        else:  # the simulated network is loopback: RTP elsewhere would make the PSAP a reflector
            _LOGGER.warning("%s call %d: no voice to %s, not on loopback", self.name, call.id, offer.address)

    def _own(self, job: Coroutine[Any, Any, None], name: str) -> None:
        """Run `job` as a task the PSAP owns: cancelled and awaited by `close()`."""
        task = asyncio.create_task(job, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_failure)

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        """A job's error is logged when it happens, not when the task is collected (or never)."""
        if not task.cancelled() and (error := task.exception()) is not None:
            _LOGGER.error("%s: task %s failed", self.name, task.get_name(), exc_info=error)
