"""The NG-eCall messages (RFC 8147 §6-§9): the vehicle's INVITE to the eCall URN carrying SDP, MSD and
PIDF-LO in one multipart body; the PSAP's answer with its SDP and the control ack; INFO requests with a
fresh MSD or a control block. Builders give `SipRequest`s and bodies; readers check what a PSAP or an
IVS relies on and raise `SipError` saying exactly what is wrong (no MSD part, the MSD not referenced by
a Call-Info header, a wrong content type, a Geolocation pointing at nothing, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import CSeq, NameAddr, Via, parse_host_port, parse_name_addr, parse_sip_uri
from telematics_wire.sip.ecall_body import (
    CONTROL_CONTENT_TYPE,
    DATA_DISPOSITION,
    INFO_PACKAGE,
    MAX_MSD_BYTES,
    MSD_CONTENT_TYPE,
    PIDF_CONTENT_TYPE,
    SDP_CONTENT_TYPE,
    CallInfo,
    ControlAck,
    ControlRequest,
    build_control_ack,
    is_ecall_urn,
    msd_call_info,
    normalise_urn,
    parse_call_info,
    parse_control,
)
from telematics_wire.sip.header_syntax import parse_media_type
from telematics_wire.sip.message import SipHeaders, SipRequest, SipResponse
from telematics_wire.sip.multipart import BodyPart, build_multipart, parse_multipart
from telematics_wire.sip.pidf_lo import Location, build_pidf_lo, parse_pidf_lo

ALLOW = "INVITE, ACK, BYE, CANCEL, INFO, OPTIONS"
MAX_FORWARDS = 70


@dataclass(frozen=True, slots=True, kw_only=True)
class EcallInvite:
    """What the PSAP takes from an eCall INVITE."""

    urn: str  # the Request-URI, lowercased
    msd: bytes  # the UPER bytes exactly as sent
    msd_content_id: str  # what the control ack's ref names
    location: Location | None
    call_info: tuple[CallInfo, ...]
    sdp: bytes | None


def _content_id(kind: str, call_id: str, host: str) -> str:
    local = re.sub(r"[^A-Za-z0-9\-.]", "", call_id.split("@", 1)[0])[:40] or "ecall"
    return f"{kind}.{local}@{host}"


def _host_of(contact: str) -> tuple[str, int | None]:
    uri = parse_sip_uri(parse_name_addr(contact, "Contact").uri)
    return uri.host, uri.port


def msd_part(msd: bytes, content_id: str) -> BodyPart:
    """The MSD body part: binary UPER bytes, referenced by Call-Info, never rendered."""
    if not isinstance(msd, bytes) or not 1 <= len(msd) <= MAX_MSD_BYTES:
        raise SipError(f"an MSD is 1..{MAX_MSD_BYTES} bytes")
    return BodyPart(
        content_type=MSD_CONTENT_TYPE,
        data=msd,
        content_id=content_id,
        disposition=DATA_DISPOSITION,
        transfer_encoding="binary",
    )


def text_parts_first(parts: Sequence[BodyPart]) -> list[BodyPart]:
    """The parts in their order, except the binary MSD parts moved to the end (SDP stays first, RFC 5621)."""
    binary = MSD_CONTENT_TYPE.lower()
    return [part for part in parts if part.media_type != binary] + [part for part in parts if part.media_type == binary]


def control_part(control: bytes, content_id: str | None = None) -> BodyPart:
    return BodyPart(
        content_type=CONTROL_CONTENT_TYPE, data=control, content_id=content_id, disposition=DATA_DISPOSITION
    )


def build_ecall_invite(
    *,
    request_uri: str,
    from_uri: str,
    contact: str,
    call_id: str,
    from_tag: str,
    branch: str,
    cseq: int,
    msd: bytes,
    location: Location | None,
    sdp: bytes,
    via_sent_by: str | None = None,
    entity: str | None = None,
    msd_content_id: str | None = None,
    location_content_id: str | None = None,
    boundary: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> SipRequest:
    """The eCall INVITE: SDP offer (+ PIDF-LO) + MSD in multipart/mixed, Call-Info naming the MSD, Geolocation.

    `contact` is a SIP URI (`sip:ivs@192.0.2.1:5070`); the Via sent-by defaults to its host and port.
    `location` None sends no PIDF-LO and no Geolocation (the MSD still has the position).
    The binary MSD goes last (`text_parts_first`): RFC 8147 leaves the order to the sender, and a PSAP that
    reads the message as a C string (SIPp does) sees nothing past the MSD's first zero byte.
    """
    if not is_ecall_urn(request_uri):
        raise SipError(f"{request_uri!r} is not an eCall service URN")
    host, port = _host_of(contact)
    sent_by = via_sent_by if via_sent_by is not None else (host if port is None else f"{host}:{port}")
    via_host, via_port = parse_host_port(sent_by, "Via sent-by")
    via = Via(host=via_host, port=via_port, params=(("branch", branch), ("rport", None)))
    msd_id = msd_content_id or _content_id("msd", call_id, host)
    parts = [BodyPart(content_type=SDP_CONTENT_TYPE, data=sdp), msd_part(msd, msd_id)]
    headers: list[tuple[str, str]] = [
        ("Via", via.format()),
        ("Max-Forwards", str(MAX_FORWARDS)),
        ("From", NameAddr(uri=from_uri).with_tag(from_tag).format()),
        ("To", NameAddr(uri=request_uri).format()),
        ("Call-ID", call_id),
        ("CSeq", CSeq(number=cseq, method="INVITE").format()),
        ("Contact", NameAddr(uri=contact).format()),
        ("Allow", ALLOW),
        ("Accept", f"{SDP_CONTENT_TYPE}, {CONTROL_CONTENT_TYPE}"),
        ("Recv-Info", INFO_PACKAGE),
        ("Call-Info", msd_call_info(msd_id).format()),
    ]
    if location is not None:
        location_id = location_content_id or _content_id("loc", call_id, host)
        timestamp = location.timestamp
        if timestamp is None:
            raise SipError("a PIDF-LO location needs its fix time")
        pidf = build_pidf_lo(
            entity or from_uri,
            location.latitude,
            location.longitude,
            location.radius_m,
            timestamp,
            method=location.method or "GPS",
        )
        parts.append(
            BodyPart(content_type=PIDF_CONTENT_TYPE, data=pidf, content_id=location_id, disposition=DATA_DISPOSITION)
        )
        headers.append(("Geolocation", f"<cid:{location_id}>"))
        headers.append(("Geolocation-Routing", "yes"))
    content_type, body = build_multipart(text_parts_first(parts), boundary=boundary)
    headers.extend(extra_headers)
    headers.append(("Content-Type", content_type))
    return SipRequest(method="INVITE", uri=request_uri, headers=SipHeaders(headers), body=body)


def body_parts(message: SipRequest | SipResponse) -> list[BodyPart]:
    """The body as parts: a multipart body split, a single body as one part (its Content-ID from the headers)."""
    if not message.body:
        return []
    content_type = message.headers.get("Content-Type")
    if content_type is None:
        raise SipError("message has a body but no Content-Type")
    media_type, _ = parse_media_type(content_type)
    if media_type.startswith("multipart/"):
        return parse_multipart(content_type, message.body)
    content_id = message.headers.get("Content-ID")
    return [
        BodyPart(
            content_type=content_type,
            data=message.body,
            content_id=content_id.strip().strip("<>") or None if content_id else None,
        )
    ]


def _parts_of_type(parts: Sequence[BodyPart], media_type: str) -> list[BodyPart]:
    return [part for part in parts if part.media_type == media_type.lower()]


def read_ecall_invite(request: SipRequest) -> EcallInvite:
    """The URN, MSD, location and Call-Info of an eCall INVITE, or SipError with the precise reason."""
    if request.method != "INVITE":
        raise SipError(f"{request.method} is not an INVITE")
    if not is_ecall_urn(request.uri):
        raise SipError(f"Request-URI {request.uri[:80]!r} is not an eCall service URN")
    call_info = tuple(parse_call_info(value) for value in request.headers.get_all("Call-Info"))
    parts = body_parts(request)
    msd = _referenced_msd(parts, call_info)
    sdp_parts = _parts_of_type(parts, SDP_CONTENT_TYPE)
    return EcallInvite(
        urn=normalise_urn(request.uri),
        msd=msd.data,
        msd_content_id=msd.content_id or "",
        location=_location(request, parts),
        call_info=call_info,
        sdp=sdp_parts[0].data if sdp_parts else None,
    )


def read_msd(message: SipRequest | SipResponse) -> tuple[bytes, str] | None:
    """The MSD (bytes, Content-ID) a message carries by Call-Info reference (an INFO with a fresh MSD), or None."""
    call_info = tuple(parse_call_info(value) for value in message.headers.get_all("Call-Info"))
    parts = body_parts(message)
    if not _parts_of_type(parts, MSD_CONTENT_TYPE) and not any(info.is_msd() for info in call_info):
        return None
    part = _referenced_msd(parts, call_info)
    return part.data, part.content_id or ""


def _referenced_msd(parts: Sequence[BodyPart], call_info: Sequence[CallInfo]) -> BodyPart:
    msd_parts = _parts_of_type(parts, MSD_CONTENT_TYPE)
    if not msd_parts:
        kinds = ", ".join(part.media_type for part in parts) or "no body"
        raise SipError(f"no {MSD_CONTENT_TYPE} body part ({kinds})")
    references = [info for info in call_info if info.is_msd()]
    if not references:
        raise SipError("no Call-Info header with purpose=EmergencyCallData.eCall.MSD references the MSD")
    by_id = {part.content_id: part for part in parts if part.content_id is not None}
    for reference in references:
        target = reference.content_id
        if target is None:
            continue  # an MSD by URL reference is for the PSAP to fetch; ours travels by value
        part = by_id.get(target)
        if part is None:
            raise SipError(f"Call-Info references cid:{target[:60]} but no body part has that Content-ID")
        if part.media_type != MSD_CONTENT_TYPE.lower():
            raise SipError(f"Call-Info MSD reference points at a {part.media_type} part, not {MSD_CONTENT_TYPE}")
        if not 1 <= len(part.data) <= MAX_MSD_BYTES:
            raise SipError(f"MSD part of {len(part.data)} bytes is outside 1..{MAX_MSD_BYTES}")
        return part
    raise SipError("the MSD body part is not referenced by a Call-Info cid: URI")


def _location(request: SipRequest, parts: Sequence[BodyPart]) -> Location | None:
    for value in request.headers.get_all("Geolocation"):
        uri = parse_name_addr(value, "Geolocation").uri
        if not uri.lower().startswith("cid:"):
            continue  # a location by reference (HELD, sip:) is not ours to dereference
        target = uri[4:]
        matches = [part for part in parts if part.content_id == target]
        if not matches:
            raise SipError(f"Geolocation references cid:{target[:60]} but no body part has that Content-ID")
        if matches[0].media_type != PIDF_CONTENT_TYPE:
            raise SipError(f"Geolocation points at a {matches[0].media_type} part, not {PIDF_CONTENT_TYPE}")
        return parse_pidf_lo(matches[0].data)
    return None


def answer_body(sdp: bytes, control: bytes | None, *, boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of the PSAP's 200 OK: its SDP answer, with the control block when it acks at once."""
    if control is None:
        return SDP_CONTENT_TYPE, sdp
    return build_multipart(
        [BodyPart(content_type=SDP_CONTENT_TYPE, data=sdp), control_part(control)], boundary=boundary
    )


def ack_answer_body(sdp: bytes, invite: EcallInvite, *, received: bool = True) -> tuple[str, bytes]:
    """The 200 OK body acknowledging the INVITE's MSD (RFC 8147 §6: the ack may ride on the answer)."""
    return answer_body(sdp, build_control_ack(invite.msd_content_id, received))


def read_control(message: SipRequest | SipResponse) -> ControlAck | ControlRequest | None:
    """The control block a response or INFO carries, or None when it has none."""
    controls = _parts_of_type(body_parts(message), CONTROL_CONTENT_TYPE)
    if not controls:
        return None
    return parse_control(controls[0].data)


def info_body(
    *,
    msd: bytes | None = None,
    msd_content_id: str | None = None,
    control: bytes | None = None,
    boundary: str | None = None,
) -> tuple[list[tuple[str, str]], str, bytes]:
    """(headers, Content-Type, body) of an INFO in the eCall INFO package: a fresh MSD and/or a control block.

    The headers are Info-Package and, for an MSD, the Call-Info referencing it; the caller adds the dialog's
    Via, From, To, Call-ID, CSeq, Route and Contact.
    """
    parts: list[BodyPart] = []
    headers: list[tuple[str, str]] = [("Info-Package", INFO_PACKAGE)]
    if msd is not None:
        if not msd_content_id:
            raise SipError("an MSD in an INFO needs a Content-ID for its Call-Info reference")
        parts.append(msd_part(msd, msd_content_id))
        headers.append(("Call-Info", msd_call_info(msd_content_id).format()))
    if control is not None:
        parts.append(control_part(control))
    if not parts:
        raise SipError("an eCall INFO carries an MSD, a control block or both")
    content_type, body = build_multipart(text_parts_first(parts), boundary=boundary)
    return headers, content_type, body
