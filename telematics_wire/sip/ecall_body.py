"""The NG-eCall vocabulary of RFC 8147 (with RFC 7852's Call-Info data blocks): service URNs, media
types, the Call-Info purpose, the INFO package, and the control block the PSAP and the IVS exchange.

Media types and purposes are written in the IANA registry's spelling (`EmergencyCallData...`) and
compared without regard to case, as MIME types and parameter tokens are.

Control block (RFC 8147 §9.1), namespace `urn:ietf:params:xml:ns:EmergencyCallData:control`, root
`EmergencyCallData.Control`:
- `<ack ref="<Content-ID of the acknowledged MSD>" received="true|false">` with optional
  `<actionResult action=".." success="true|false" reason=".." details=".."/>` children;
- `<request action="send-data" datatype="eCall.MSD"/>`: the PSAP asks the vehicle for a fresh MSD.

Checked against IANA's registries (the RFC's own registrations): the 'sos' sub-services list
`sos.ecall`, `sos.ecall.automatic` and `sos.ecall.manual` with RFC 8147 as their reference
(iana.org/assignments/urn-serviceid-labels), and the SIP Info Packages registry names
`EmergencyCallData.eCall.MSD` for RFC 8147. Test calls: RFC 8147 §10 uses RFC 6881's `test` service in
front of the eCall service, `urn:service:test.sos.ecall`; the `.automatic`/`.manual` test forms are no
registered labels — we accept them on reading only and never send them. (3GPP's test eCall over IMS,
TS 23.167 Annex N, may instead use a test URI configured on the USIM; a PSAP stub need not care.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element, SubElement, tostring

from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import parse_name_addr
from telematics_wire.sip.header_syntax import param
from telematics_wire.sip.xml_guard import parse_xml, qualified

URN_AUTOMATIC: Final = "urn:service:sos.ecall.automatic"
URN_MANUAL: Final = "urn:service:sos.ecall.manual"
URN_ECALL: Final = "urn:service:sos.ecall"  # the parent service (RFC 8147 §14.7); the IVS names the child
# Test calls use the 'test' service (RFC 6881 §15) in front of the eCall service: routed and answered like
# an eCall but never given emergency treatment. The plain test URN is what an IVS sends; the two with the
# trigger kind are accepted on reading too.
URN_TEST: Final = "urn:service:test.sos.ecall"
URN_TEST_AUTOMATIC: Final = "urn:service:test.sos.ecall.automatic"
URN_TEST_MANUAL: Final = "urn:service:test.sos.ecall.manual"
ECALL_URNS: Final = frozenset({URN_AUTOMATIC, URN_MANUAL, URN_TEST, URN_TEST_AUTOMATIC, URN_TEST_MANUAL})

MSD_CONTENT_TYPE: Final = "application/EmergencyCallData.eCall.MSD"
CONTROL_CONTENT_TYPE: Final = "application/EmergencyCallData.Control+xml"
PIDF_CONTENT_TYPE: Final = "application/pidf+xml"
SDP_CONTENT_TYPE: Final = "application/sdp"
MSD_PURPOSE: Final = "EmergencyCallData.eCall.MSD"
CONTROL_PURPOSE: Final = "EmergencyCallData.Control"
INFO_PACKAGE: Final = "EmergencyCallData.eCall.MSD"  # RFC 8147 §6: Recv-Info / Info-Package
DATA_DISPOSITION: Final = "by-reference;handling=optional"  # RFC 7852: referenced by Call-Info, not rendered
MSD_DATATYPE: Final = "eCall.MSD"
ACTION_SEND_DATA: Final = "send-data"
CONTROL_NAMESPACE: Final = "urn:ietf:params:xml:ns:EmergencyCallData:control"
MAX_MSD_BYTES: Final = 140  # EN 15722: an MSD never exceeds 140 octets
MAX_CONTROL_BYTES: Final = 16_384
_ROOT: Final = "EmergencyCallData.Control"


def normalise_urn(urn: str) -> str:
    """A service URN lowercased (RFC 5031 §3: compared without regard to case)."""
    return urn.strip().lower()


def is_ecall_urn(urn: str) -> bool:
    return normalise_urn(urn) in ECALL_URNS


def is_test_urn(urn: str) -> bool:
    return normalise_urn(urn).startswith("urn:service:test.")


def is_automatic_urn(urn: str) -> bool:
    return normalise_urn(urn) in (URN_AUTOMATIC, URN_TEST_AUTOMATIC)


def ecall_urn(*, automatic: bool, test: bool = False) -> str:
    """The Request-URI for an eCall: automatic or manual, or the test URN."""
    if test:
        return URN_TEST
    return URN_AUTOMATIC if automatic else URN_MANUAL


def same_media_type(media_type: str, expected: str) -> bool:
    return media_type.strip().lower() == expected.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class CallInfo:
    """One Call-Info value: `<uri>;purpose=...` (RFC 3261 §20.9, RFC 7852 §4.1)."""

    uri: str
    purpose: str | None = None

    @property
    def content_id(self) -> str | None:
        """The Content-ID a `cid:` URI points at (RFC 2392), else None."""
        if self.uri.lower().startswith("cid:"):
            return self.uri[4:]
        return None

    def is_msd(self) -> bool:
        return self.purpose is not None and self.purpose.lower() == MSD_PURPOSE.lower()

    def format(self) -> str:
        purpose = f";purpose={self.purpose}" if self.purpose is not None else ""
        return f"<{self.uri}>{purpose}"


def msd_call_info(content_id: str) -> CallInfo:
    return CallInfo(uri=f"cid:{content_id}", purpose=MSD_PURPOSE)


def parse_call_info(value: str) -> CallInfo:
    address = parse_name_addr(value, "Call-Info")
    return CallInfo(uri=address.uri, purpose=param(address.params, "purpose"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionResult:
    action: str
    success: bool
    reason: str | None = None
    details: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlAck:
    """The PSAP's acknowledgement of the MSD whose Content-ID is `ref`; received=False: it could not use it."""

    ref: str
    received: bool
    action_results: tuple[ActionResult, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlRequest:
    """The PSAP asks the vehicle for an action; `send-data` with datatype `eCall.MSD` means a fresh MSD."""

    action: str
    datatype: str | None = None

    @property
    def wants_msd(self) -> bool:
        return self.action == ACTION_SEND_DATA and (self.datatype or "").lower() == MSD_DATATYPE.lower()


def _root() -> Element:
    return Element(_ROOT, {"xmlns": CONTROL_NAMESPACE})


def _serialise(root: Element) -> bytes:
    body: bytes = tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def build_control_ack(msd_ref: str, received: bool, action_results: tuple[ActionResult, ...] = ()) -> bytes:
    """The control block acknowledging the MSD part whose Content-ID is `msd_ref`."""
    if not msd_ref:
        raise SipError("an ack needs the Content-ID of the MSD it acknowledges")
    root = _root()
    ack = SubElement(root, "ack", {"ref": msd_ref, "received": "true" if received else "false"})
    for result in action_results:
        attributes = {"action": result.action, "success": "true" if result.success else "false"}
        if result.reason is not None:
            attributes["reason"] = result.reason
        if result.details is not None:
            attributes["details"] = result.details
        SubElement(ack, "actionResult", attributes)
    return _serialise(root)


def build_control_request_msd() -> bytes:
    """The control block with which the PSAP asks for a fresh MSD."""
    root = _root()
    SubElement(root, "request", {"action": ACTION_SEND_DATA, "datatype": MSD_DATATYPE})
    return _serialise(root)


def _boolean(value: str | None, what: str) -> bool:
    if value is None:
        raise SipError(f"control block: {what} is missing")
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise SipError(f"control block: {what} {value[:20]!r} is not an xs:boolean")


def parse_control(data: bytes) -> ControlAck | ControlRequest:
    """A control block's ack, or else its first request; SipError for anything else or hostile XML."""
    root = parse_xml(data, what="control block", max_bytes=MAX_CONTROL_BYTES)
    namespace, _, name = root.tag[1:].partition("}") if root.tag.startswith("{") else ("", "", root.tag)
    # RFC 8147's schema says ...:control, IANA's registry ...:Control: the URN is read without regard to case.
    if namespace.lower() != CONTROL_NAMESPACE.lower() or name != _ROOT:
        raise SipError(f"control block root is {root.tag[:80]!r}, not {_ROOT} in {CONTROL_NAMESPACE}")
    ack = root.find(qualified(namespace, "ack"))
    if ack is not None:
        ref = ack.get("ref")
        if not ref:
            raise SipError("control block: ack without ref")
        # Without an explicit received="true" nothing counts as acknowledged: a vague ack must not end the MSD.
        received = _boolean(ack.get("received"), "ack received")
        results = tuple(
            ActionResult(
                action=_required(element, "action"),
                success=_boolean(element.get("success"), "actionResult success"),
                reason=element.get("reason"),
                details=element.get("details"),
            )
            for element in ack.findall(qualified(namespace, "actionResult"))
        )
        return ControlAck(ref=ref, received=received, action_results=results)
    request = root.find(qualified(namespace, "request"))
    if request is not None:
        return ControlRequest(action=_required(request, "action"), datatype=request.get("datatype"))
    raise SipError("control block carries neither an ack nor a request")


def _required(element: Element, attribute: str) -> str:
    value = element.get(attribute)
    if not value:
        raise SipError(f"control block: {element.tag.rpartition('}')[2]} without {attribute}")
    return value
