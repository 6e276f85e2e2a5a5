"""Requests inside a dialog (RFC 3261 §12): the route set a record-routing proxy leaves, tags, CSeq."""

from __future__ import annotations

from pathlib import Path

import pytest

from telematics_wire.errors import SipError
from telematics_wire.sip.call_dialog import dialog_as_callee, dialog_as_caller
from telematics_wire.sip.dialog import parse_name_addr
from telematics_wire.sip.message import SipRequest, SipResponse, parse_message, response_to

DATA = Path(__file__).parents[1] / "data" / "sip"
INVITE = parse_message((DATA / "rfc8147_invite.sip").read_bytes())
ANSWER = parse_message((DATA / "psap_200_ok.sip").read_bytes())
assert isinstance(INVITE, SipRequest)
assert isinstance(ANSWER, SipResponse)


def test_caller_sends_ack_and_bye_through_the_record_routing_proxy() -> None:
    dialog = dialog_as_caller(INVITE, ANSWER)
    assert dialog.next_hop() == ("192.0.2.1", None)  # the proxy, not the PSAP's Contact
    ack = dialog.ack(invite_cseq=31862, via_sent_by="192.0.2.10:5060", branch="z9hG4bKack")
    assert (ack.uri, ack.cseq.number, ack.cseq.method) == ("sip:psap@198.51.100.20:5080", 31862, "ACK")
    assert ack.headers.get_all("Route") == ("<sip:192.0.2.1;lr;ftag=9fxced76sl>",)
    dialog, bye = dialog.request("BYE", via_sent_by="192.0.2.10:5060", branch="z9hG4bKbye")
    assert bye.cseq.number == 31863
    assert parse_name_addr(bye.headers.require("To")).tag == "psap77"
    assert parse_name_addr(bye.headers.require("From")).tag == "9fxced76sl"
    assert dialog.local_seq == 31863
    assert parse_message(bye.encode()) == bye


def test_callee_sees_the_callers_requests_as_its_dialog() -> None:
    answer = response_to(INVITE, 200, to_tag="psap77", headers=[("Contact", "<sip:psap@198.51.100.20:5080>")])
    caller = dialog_as_caller(INVITE, answer)
    callee = dialog_as_callee(INVITE, "psap77")
    caller, info = caller.request(
        "INFO", via_sent_by="192.0.2.10:5060", branch="z9hG4bKi", body=b"x", content_type="text/plain"
    )
    assert callee.matches(info)
    callee = callee.received(info)
    assert callee.remote_seq == info.cseq.number
    callee, bye = callee.request("BYE", via_sent_by="198.51.100.20:5080", branch="z9hG4bKb")
    assert bye.uri == "sip:userId@192.0.2.10:5060"  # the vehicle's Contact: the PSAP clears down to it
    assert caller.matches(bye)
    with pytest.raises(SipError, match="lower than the dialog's last"):
        callee.received(INVITE)  # CSeq 31862 after the INFO's 31863


def test_strict_router_becomes_the_request_uri() -> None:
    answer = ANSWER.headers.replaced("Record-Route", "<sip:strict.example>")
    dialog = dialog_as_caller(INVITE, SipResponse(status=200, headers=answer))
    _, bye = dialog.request("BYE", via_sent_by="192.0.2.10", branch="z9hG4bKs")
    assert bye.uri == "sip:strict.example"
    assert bye.headers.get_all("Route") == ("<sip:psap@198.51.100.20:5080>",)


def test_a_foreign_request_is_not_in_the_dialog() -> None:
    dialog = dialog_as_caller(INVITE, ANSWER)
    _, bye = dialog.request("BYE", via_sent_by="192.0.2.10", branch="z9hG4bKf")
    assert not dialog.matches(bye)  # our own request: the tags are the other way round


@pytest.mark.parametrize(
    ("drop", "reason"),
    [("Contact", "no Contact"), ("To", "no To header")],
)
def test_a_dialog_needs_contact_and_tags(drop: str, reason: str) -> None:
    with pytest.raises(SipError, match=reason):
        dialog_as_caller(INVITE, SipResponse(status=200, headers=ANSWER.headers.without(drop)))


def test_ack_needs_the_invite_cseq_and_a_body_its_type() -> None:
    dialog = dialog_as_caller(INVITE, ANSWER)
    with pytest.raises(SipError, match="CSeq number of the INVITE"):
        dialog.request("ACK", via_sent_by="h", branch="z9hG4bKa")
    with pytest.raises(SipError, match="no Content-Type"):
        dialog.request("INFO", via_sent_by="h", branch="z9hG4bKa", body=b"x")
