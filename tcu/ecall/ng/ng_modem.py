"""NgEcallModem: the 112 eCall over IMS/SIP (EN 17184, RFC 8147), as the `EcallModem` the eCall service drives.

    ng = NgEcallModem(config.ng, vin=vin, on_event=queue.put_nowait)
    ng.bind_service(msd=service_next_msd, report=service_report)   # the MSD for the INVITE; call reports
    tasks.create_task(ng.run(), name="ecall-ng")                    # opens its sockets when first wanted

The state machine decides exactly as for the circuit-switched eCall; this class only carries, and speaks
to the service in the CS modem's events (`ModemIndication`, `ModemRing`, `ModemCallEnded`):

| SIP                                                      | event                                        |
|----------------------------------------------------------|----------------------------------------------|
| 200 OK to our INVITE                                      | CONNECTED, then SEND_MSD (see below)         |
| control `ack received="true"` (in the 200 OK or an INFO)  | LL_ACK, then AL_ACK                          |
| control `ack received="false"`                            | MSD_FAILED (voice; the MSD stays on request) |
| control `request action="send-data"` (200 OK or INFO)     | SEND_MSD: the service's SendMsd → INFO       |
| INFO with our MSD refused (3xx-6xx) or unanswered (F)     | MSD_FAILED                                   |
| BYE from the PSAP                                         | CLEARED_DOWN                                 |
| 3xx-6xx to our INVITE, or no answer at all (Timer B)      | ModemCallEnded: the dial failed              |
| the PSAP's INVITE (callback)                              | ModemRing; `answer()` sends the 200 OK       |

The MSD rides in the INVITE, so the dial needs it before the state machine numbers a transmission:
`bind_service(msd=...)` gives a callable returning the MSD the machine's *next* `SendMsd` will carry
(`NgMsd.message_identifier` = the session's identifier + 1, built by the service's own `_msd`). After the
200 OK we emit SEND_MSD as a CS PSAP would; the machine counts that transmission (identifier n) and
asks for `send_msd`, which we skip once because the INVITE already carried MSD n. A later PSAP request
gets n+1 in an INFO. A failed INVITE numbers nothing, so the redial carries n again, as a CS redial
would, and a call dropped after delivery is never redialled: identifiers stay unique per transmission.

Voice: RTP both ways from the 200 OK (`tcu.ecall.ng.rtp`), never waiting for the MSD; the packets are
counted and reported when the call ends (`ng_call_ended` record). Hang-up: BYE in a call, CANCEL while
our INVITE is pending (after the first provisional response, §9.1), 486 to a callback still ringing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn

from tcu.ecall.config import NgConfig
from tcu.ecall.ng.ng_call import CallPhase, MsdSource, NgCall, ReportSink, Role, remote_audio
from tcu.ecall.ng.ng_endpoint import NgEndpoint
from tcu.ecall.ng.rtp import RtpStream
from tcu.ecall.ng.sip_transactions import SipTimers
from tcu.ecall.ng.sip_transport import Address, SipTransport
from tcu.errors import ModemCommandError
from tcu.sources.modem import EcallIndication, EcallType
from tcu.sources.modem_client import ModemCallEnded, ModemEvent, ModemIndication, ModemRing
from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import new_branch, new_call_id, new_tag, parse_name_addr
from telematics_wire.sip.ecall_body import SDP_CONTENT_TYPE, URN_AUTOMATIC, URN_MANUAL, URN_TEST, ControlAck
from telematics_wire.sip.ecall_invite import ALLOW, build_ecall_invite, info_body, read_control
from telematics_wire.sip.message import SipRequest, SipResponse, response_to
from telematics_wire.sip.sdp import AudioSession, build_sdp

_LOGGER = logging.getLogger(__name__)
_URN = {EcallType.AUTOMATIC: URN_AUTOMATIC, EcallType.MANUAL: URN_MANUAL, EcallType.TEST: URN_TEST}


class NgEcallModem:
    def __init__(
        self,
        config: NgConfig,
        *,
        vin: str,
        on_event: Callable[[ModemEvent], None],
        timers: SipTimers | None = None,
    ) -> None:
        self._vin = vin
        self._on_event = on_event
        self._msd_source: MsdSource | None = None
        self._report: ReportSink = lambda body: None
        self._endpoint = NgEndpoint(
            config, on_request=self._request, on_stray_2xx=self._stray_2xx, on_closed=self._end_call, timers=timers
        )
        self._call: NgCall | None = None
        self._acks: dict[str, SipRequest] = {}  # Call-ID → our ACK of its 2xx, for a 2xx that comes again
        self.calls = 0  # calls placed or answered, as `ModemClient.calls` counts them

    def bind_service(self, *, msd: MsdSource, report: ReportSink) -> None:
        self._msd_source, self._report = msd, report

    @property
    def call(self) -> NgCall | None:
        return self._call

    @property
    def rtp(self) -> RtpStream | None:
        return self._endpoint.rtp

    @property
    def sip(self) -> SipTransport | None:
        return self._endpoint.sip

    def prepare(self) -> None:
        """Open the sockets now (the network offers IMS emergency calls): a crash then finds them ready."""
        self._endpoint.prepare()

    async def run(self) -> NoReturn:
        await self._endpoint.run()

    # -- what the eCall service asks -----------------------------------------------------------------------
    async def dial(self, ecall_type: EcallType) -> None:
        """Send the eCall INVITE (MSD, PIDF-LO, SDP); its outcome comes as events."""
        sip, rtp = await self._endpoint.ready()
        if self._call is not None and self._call.phase is not CallPhase.ENDED:
            raise ModemCommandError("NG eCall: a call is already up", command="INVITE", code=3)  # as +CME ERROR: 3
        if self._msd_source is None:
            raise ModemCommandError("NG eCall: no MSD source bound", command="INVITE", code=None)
        urn = _URN.get(ecall_type)
        if urn is None:
            raise ModemCommandError(f"NG eCall: no URN for {ecall_type.name}", command="INVITE", code=50)
        data = self._msd_source()
        host, port = sip.advertised
        self.calls += 1
        call = NgCall(
            number=self.calls,
            role=Role.UAC,
            call_id=new_call_id(host),
            local_tag=new_tag(),
            sent_by=f"{host}:{port}",
            contact=f"sip:ivs@{host}:{port}",
            msd_in_invite=data.message_identifier,
        )
        try:
            invite = build_ecall_invite(
                request_uri=urn,
                from_uri=f"sip:{self._vin}@{host}",
                contact=call.contact,
                call_id=call.call_id,
                from_tag=call.local_tag,
                branch=new_branch(),  # the transport puts its own Via on top anyway
                cseq=1,
                msd=data.msd,
                location=data.location,
                sdp=_sdp(host, rtp.port),
                msd_content_id=f"msd{data.message_identifier}.{call.call_id}",
            )
        except SipError as exc:
            raise ModemCommandError(f"NG eCall: cannot build the INVITE: {exc}", command="INVITE", code=None) from exc
        call.msd_content_ids.append(f"msd{data.message_identifier}.{call.call_id}")
        self._call = call
        call.invite = sip.send_invite(invite, lambda response: self._invite_answered(call, response))
        _LOGGER.info("NG eCall %d: INVITE %s with MSD %d", call.number, urn, data.message_identifier)

    async def send_msd(self, msd: bytes) -> None:
        """A fresh MSD to the PSAP in an INFO; the first after the 200 OK is the INVITE's, already delivered."""
        call = self._call
        sip = self.sip
        if call is None or not call.confirmed or sip is None:
            raise ModemCommandError("NG eCall: no call to send the MSD in", command="INFO", code=3)
        if call.msd_owed:
            call.msd_owed = False
            return
        content_id = f"msd{len(call.msd_content_ids) + 1}.{call.call_id}"
        try:
            headers, content_type, body = info_body(msd=msd, msd_content_id=content_id)
            info = call.request("INFO", headers=[*headers, ("Content-Type", content_type)], body=body)
        except SipError as exc:
            raise ModemCommandError(f"NG eCall: cannot build the INFO: {exc}", command="INFO", code=None) from exc
        call.msd_content_ids.append(content_id)
        sip.send_request(info, lambda response: self._info_answered(call, response))

    async def answer(self) -> None:
        """Answer the PSAP's callback INVITE: 200 OK with our SDP; voice from now."""
        call = self._call
        sip, rtp = self.sip, self.rtp
        if call is None or call.phase is not CallPhase.RINGING or call.invite is None or sip is None or rtp is None:
            raise ModemCommandError("NG eCall: no incoming call to answer", command="200 OK", code=None)
        self.calls += 1
        call.number = self.calls
        call.phase = CallPhase.CONFIRMED
        ok = response_to(
            call.invite,
            200,
            to_tag=call.local_tag,
            headers=[("Contact", f"<{call.contact}>"), ("Allow", ALLOW), ("Content-Type", SDP_CONTENT_TYPE)],
            body=_sdp(sip.advertised[0], rtp.port),
        )
        sip.respond(call.invite, ok, on_no_ack=lambda: self._no_ack(call))
        self._start_voice(call, call.invite)

    async def hang_up(self) -> None:
        """End the call from the vehicle: BYE, CANCEL or a refused callback. Reports nothing, as `ATH`."""
        call, sip = self._call, self.sip
        if call is None or sip is None or call.phase is CallPhase.ENDED:
            return
        if call.phase is CallPhase.CONFIRMED:
            sip.send_request(call.request("BYE"), lambda response: None)
        elif call.phase is CallPhase.RINGING and call.invite is not None:
            sip.respond(call.invite, response_to(call.invite, 486, to_tag=call.local_tag))
        elif call.phase is CallPhase.CALLING:
            call.cancel_wanted = True
            if call.provisional and call.invite is not None:
                sip.cancel(call.invite, lambda response: None)
        self._finish(call, "hung up in the vehicle")

    async def voice_dial(self, number: str) -> None:
        raise ModemCommandError("the NG transport carries the 112 eCall only", command="INVITE", code=4)

    async def set_registration(self, registered: bool) -> None:
        """IMS registration is the modem's business (`AT+COPS` on the CS side); nothing to do here."""

    # -- our INVITE's answers ----------------------------------------------------------------------------------
    def _invite_answered(self, call: NgCall, response: SipResponse | None) -> None:
        sip = self.sip
        if response is not None and response.status < 200:
            call.provisional = True
            if call.cancel_wanted and call.invite is not None and sip is not None:
                sip.cancel(call.invite, lambda final: None)  # §9.1: the CANCEL waited for a provisional
            return
        if response is not None and response.status < 300:
            try:
                call.confirm_as_caller(response)
            except SipError as exc:  # a 2xx we cannot answer in (no To tag, no Contact): the call failed
                self._failed(call, f"SIP 200 OK unusable ({exc})")
                return
            ack = call.ack_for_2xx()
            if sip is not None:
                self._acks[call.call_id] = sip.send_ack(ack)
            if call is not self._call or call.cancel_wanted:  # answered after we gave up: end it properly
                if sip is not None:
                    sip.send_request(call.request("BYE"), lambda final: None)
                return
            self._start_voice(call, response)
            call.msd_owed = True
            self._emit(call, EcallIndication.CONNECTED)
            self._emit(call, EcallIndication.SEND_MSD)  # the INVITE carried it: the machine numbers it now
            self._control(call, response)
            return
        reason = "no answer to the INVITE (Timer B)" if response is None else f"SIP {response.status} {response.reason}"
        self._failed(call, reason)

    def _failed(self, call: NgCall, reason: str) -> None:
        """Our INVITE got no call: the dial failed (unless we gave it up ourselves: a 487 to our CANCEL)."""
        if call is not self._call or call.cancel_wanted:
            return
        self._finish(call, reason)
        self._on_event(ModemCallEnded(reason=f"NG eCall: {reason}", call=call.number))

    def _stray_2xx(self, response: SipResponse) -> None:
        ack, sip = self._acks.get(response.call_id), self.sip
        if ack is not None and sip is not None:
            sip.send_ack(ack)  # our ACK was lost: the PSAP sends its 200 OK again

    def _info_answered(self, call: NgCall, response: SipResponse | None) -> None:
        if call is not self._call:
            return
        if response is None or response.status >= 300:
            what = "no answer (Timer F)" if response is None else f"{response.status} {response.reason}"
            _LOGGER.warning("NG eCall %d: the INFO with the MSD failed: %s", call.number, what)
            self._emit(call, EcallIndication.MSD_FAILED)
            return
        self._control(call, response)

    def _control(self, call: NgCall, message: SipRequest | SipResponse) -> None:
        """A control block (RFC 8147 §9.1) in a 200 OK or INFO: the PSAP's ack, or its request for a new MSD."""
        try:
            control = read_control(message)
        except SipError as exc:
            _LOGGER.warning("NG eCall %d: unreadable control block ignored: %s", call.number, exc)
            return
        if control is None:
            return
        if isinstance(control, ControlAck):
            if control.ref not in call.msd_content_ids:
                _LOGGER.warning("NG eCall %d: ack for %r, not an MSD of this call: ignored", call.number, control.ref)
            elif control.received:
                self._emit(call, EcallIndication.LL_ACK)
                self._emit(call, EcallIndication.AL_ACK)
            else:
                self._emit(call, EcallIndication.MSD_FAILED)
        elif control.wants_msd:
            self._emit(call, EcallIndication.SEND_MSD)
        else:
            _LOGGER.info("NG eCall %d: control request %r not supported", call.number, control.action)

    # -- the PSAP's requests ------------------------------------------------------------------------------
    def _request(self, request: SipRequest, source: Address) -> None:
        sip = self.sip
        if sip is None:
            return
        call = self._call
        ours = call is not None and call.phase is not CallPhase.ENDED and call.owns(request)
        method = request.method
        if method == "ACK":
            return  # the ACK of our 2xx: the transport stopped retransmitting it; nothing else to do
        if method == "INVITE":
            self._invite(request, call if ours else None)
        elif method == "OPTIONS":
            sip.respond(request, response_to(request, 200, to_tag=new_tag(), headers=[("Allow", ALLOW)]))
        elif not ours or call is None:
            sip.respond(request, response_to(request, 481))
        elif not self._in_order(call, request):
            sip.respond(request, response_to(request, 500, "CSeq lower than the dialog's last"))
        elif method == "BYE":
            sip.respond(request, response_to(request, 200))
            self._finish(call, "the PSAP cleared down (BYE)")
            self._emit(call, EcallIndication.CLEARED_DOWN)
        elif method == "CANCEL" and call.phase is CallPhase.RINGING and call.invite is not None:
            sip.respond(request, response_to(request, 200))
            sip.respond(call.invite, response_to(call.invite, 487, to_tag=call.local_tag))
            self._finish(call, "the PSAP cancelled its callback")
            self._on_event(ModemCallEnded(reason="NG eCall: the PSAP cancelled its callback", call=call.number))
        elif method == "INFO" and call.confirmed:
            sip.respond(request, response_to(request, 200))
            self._control(call, request)
        else:
            sip.respond(request, response_to(request, 405, headers=[("Allow", ALLOW)]))

    def _invite(self, request: SipRequest, dialog: NgCall | None) -> None:
        """The PSAP calls back (no To tag), or refreshes our dialog (a re-INVITE: same SDP, same call)."""
        sip, rtp = self.sip, self.rtp
        if sip is None or rtp is None:
            return  # requests arrive only on open sockets
        host, port = sip.advertised
        if dialog is not None and dialog.confirmed:
            headers = [("Contact", f"<{dialog.contact}>"), ("Content-Type", SDP_CONTENT_TYPE)]
            sip.respond(request, response_to(request, 200, headers=headers, body=_sdp(host, rtp.port)))
            return
        if self._call is not None and self._call.phase is not CallPhase.ENDED:
            sip.respond(request, response_to(request, 486, to_tag=new_tag()))
            return
        to_tag = parse_name_addr(request.headers.require("To"), "To").tag
        if to_tag is not None:
            sip.respond(request, response_to(request, 481))  # a re-INVITE for a dialog we no longer have
            return
        call = NgCall(
            number=self.calls,
            role=Role.UAS,
            call_id=request.call_id,
            local_tag=new_tag(),
            sent_by=f"{host}:{port}",
            contact=f"sip:ivs@{host}:{port}",
        )
        try:
            call.ring_as_callee(request)
        except SipError as exc:  # no Contact, no From tag: no dialog to answer in
            sip.respond(request, response_to(request, 400, f"cannot answer: {exc}"[:120], to_tag=call.local_tag))
            return
        self._call = call
        contact = [("Contact", f"<{call.contact}>")]
        sip.respond(request, response_to(request, 180, to_tag=call.local_tag, headers=contact))
        _LOGGER.info("NG eCall: the PSAP calls back (%s)", request.headers.require("From"))
        self._on_event(ModemRing())

    @staticmethod
    def _in_order(call: NgCall, request: SipRequest) -> bool:
        if request.method == "CANCEL":
            return True  # a CANCEL repeats its INVITE's CSeq number
        try:
            call.received(request)
        except SipError:
            return False
        return True

    def _no_ack(self, call: NgCall) -> None:
        """Our 2xx to the callback was never acknowledged (§13.3.1.4): end the call, and say it dropped."""
        sip = self.sip
        if call is not self._call or not call.confirmed or sip is None:
            return
        sip.send_request(call.request("BYE"), lambda final: None)
        self._finish(call, "no ACK for our 200 OK")
        self._on_event(ModemCallEnded(reason="NG eCall: no ACK for our 200 OK", call=call.number))

    # -- voice and the call's end ------------------------------------------------------------------------
    def _start_voice(self, call: NgCall, message: SipRequest | SipResponse) -> None:
        """RTP to where the peer's SDP says, from the 200 OK on; without a usable SDP the call goes on mute."""
        remote = remote_audio(message)
        if remote is None:
            _LOGGER.warning("NG eCall %d: no usable SDP from the PSAP: the call has no voice", call.number)
        elif self.rtp is not None:
            self.rtp.start(remote)

    def _finish(self, call: NgCall, reason: str) -> None:
        """The call is over for us: voice stops, and its report goes to the backend."""
        if call.phase is CallPhase.ENDED:
            return
        counts = None
        if call.confirmed and self.rtp is not None:
            counts = self.rtp.counts
            self.rtp.stop()
        body = call.end(reason, counts)
        _LOGGER.info("NG eCall %d ended: %s (%s)", call.number, reason, counts)
        try:
            self._report(body)
        except Exception:  # a report must never touch the call
            _LOGGER.exception("NG eCall: the call report could not be handed over")

    def _end_call(self, reason: str) -> None:
        call = self._call
        if call is not None and call.phase is not CallPhase.ENDED:
            self._finish(call, reason)
            self._on_event(ModemCallEnded(reason=f"NG eCall: {reason}", call=call.number))

    def _emit(self, call: NgCall, indication: EcallIndication) -> None:
        self._on_event(ModemIndication(indication=indication, call=call.number))


def _sdp(host: str, port: int) -> bytes:
    return build_sdp(AudioSession(address=host, port=port))
