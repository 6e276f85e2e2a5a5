"""SIP requests and responses (RFC 3261 §7, §18.3, §20) as values, and the total decoder for one UDP datagram.

`parse_message` turns any bytes into a `SipRequest`, a `SipResponse` or `SipError` with the reason: at
most `MAX_MESSAGE_BYTES`, header lines and count capped, UTF-8 head, folded lines unfolded, compact
header names expanded, Content-Length authoritative (a datagram shorter than it is refused, bytes past
it are dropped as §18.3 says; without it the body is the rest of the datagram), and the headers every
request and response needs (Via, From, To, Call-ID, CSeq) present and readable. `encode()` writes CRLF
lines, full header names and a Content-Length that is always the body's length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from telematics_wire.errors import SipError
from telematics_wire.sip.dialog import CSeq, parse_cseq, parse_name_addr, parse_via
from telematics_wire.sip.header_syntax import is_token
from telematics_wire.sip.headers import FORBIDDEN_IN_VALUE, SipHeaders, canonical_name

SIP_VERSION: Final = "SIP/2.0"
MAX_MESSAGE_BYTES: Final = 65_536
MAX_HEADER_LINES: Final = 256
MAX_LINE_CHARS: Final = 8_192
MAX_BODY_DIGITS: Final = 9  # a Content-Length past 999,999,999 cannot fit a 64 KiB message anyway

_MANDATORY: Final = ("Via", "From", "To", "Call-ID", "CSeq")
_STATUS_LINE: Final = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) ([^\r\n]*)", re.IGNORECASE)
_REQUEST_LINE: Final = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) ([^\s]+) SIP/2\.0", re.IGNORECASE)
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_LINE_BREAK: Final = re.compile(r"\r?\n")

REASON_PHRASES: Final = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    469: "Bad Info Package",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
}


def _common_properties(headers: SipHeaders) -> None:
    """Raises SipError unless the headers every SIP message needs are present and readable, so that a
    receiver can route a response or match a dialog without a second way to fail (§8.2.1, §18.1.2)."""
    for name in _MANDATORY:
        headers.require(name)
    parse_cseq(headers.require("CSeq"))
    for via in headers.get_all("Via"):
        parse_via(via)
    for name in ("From", "To"):
        if len(headers.get_all(name)) != 1:
            raise SipError(f"more than one {name} header")
        parse_name_addr(headers.require(name), name)
    if len(headers.get_all("Call-ID")) != 1 or not headers.require("Call-ID"):
        raise SipError("Call-ID must be one non-empty header")


class _Transaction:
    """What requests and responses both answer: the Call-ID and CSeq that tie them to a transaction."""

    __slots__ = ()
    headers: SipHeaders

    @property
    def call_id(self) -> str:
        return self.headers.require("Call-ID")

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.require("CSeq"))


@dataclass(frozen=True, slots=True, kw_only=True)
class SipRequest(_Transaction):
    method: str
    uri: str
    headers: SipHeaders = field(default_factory=SipHeaders)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not is_token(self.method):
            raise SipError(f"request method {self.method!r} is not a token")
        if not isinstance(self.uri, str) or not self.uri or re.search(r"[\s\x00-\x1f\x7f]", self.uri):
            raise SipError(f"request URI {self.uri!r} is empty or holds whitespace or control characters")
        _check_parts(self)

    def encode(self) -> bytes:
        return _encode(f"{self.method} {self.uri} {SIP_VERSION}", self.headers, self.body)


@dataclass(frozen=True, slots=True, kw_only=True)
class SipResponse(_Transaction):
    status: int
    reason: str = ""
    headers: SipHeaders = field(default_factory=SipHeaders)
    body: bytes = b""

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 699:
            raise SipError(f"status code {self.status!r} is outside 100..699")
        if not isinstance(self.reason, str) or FORBIDDEN_IN_VALUE.search(self.reason):
            raise SipError("reason phrase has a control character or line break")
        if not self.reason.strip():
            object.__setattr__(self, "reason", REASON_PHRASES.get(self.status, "Unknown"))
        _check_parts(self)

    def encode(self) -> bytes:
        return _encode(f"{SIP_VERSION} {self.status} {self.reason}", self.headers, self.body)


SipMessage = SipRequest | SipResponse


def _check_parts(message: SipRequest | SipResponse) -> None:
    if not isinstance(message.headers, SipHeaders):
        raise SipError(f"headers must be SipHeaders, got {type(message.headers).__name__}")
    if not isinstance(message.body, bytes):
        raise SipError(f"body must be bytes, got {type(message.body).__name__}")
    # The body's length is the only Content-Length: encode() writes it, so a message never holds another.
    if message.headers.get("Content-Length") is not None:
        object.__setattr__(message, "headers", message.headers.without("Content-Length"))


def _encode(start_line: str, headers: SipHeaders, body: bytes) -> bytes:
    lines = [start_line]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """One SIP message from one UDP datagram, or SipError saying why not."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SipError(f"a SIP message is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    data = data.lstrip(b"\r\n")  # §7.5: CRLFs before the start line are ignored (keep-alives)
    if not data:
        raise SipError("empty message")
    head_end = _HEAD_END.search(data)
    if head_end is None:
        raise SipError("no empty line after the headers")
    try:
        head = data[: head_end.start()].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipError(f"headers are not UTF-8 (byte {exc.start})") from exc
    start_line, headers = _parse_head(head)
    body = _take_body(headers, data[head_end.end() :])
    message: SipRequest | SipResponse
    status = _STATUS_LINE.fullmatch(start_line)
    if status is not None:
        message = SipResponse(status=int(status.group(1)), reason=status.group(2), headers=headers, body=body)
    else:
        request = _REQUEST_LINE.fullmatch(start_line)
        if request is None:
            raise SipError(f"start line {start_line[:80]!r} is neither a request nor a status line")
        message = SipRequest(method=request.group(1), uri=request.group(2), headers=headers, body=body)
    _common_properties(headers)
    if isinstance(message, SipRequest) and message.cseq.method != message.method:
        raise SipError(f"CSeq method {message.cseq.method} does not match the request's {message.method}")
    return message


def _parse_head(head: str) -> tuple[str, SipHeaders]:
    raw_lines = _LINE_BREAK.split(head)
    if len(raw_lines) > MAX_HEADER_LINES + 1:
        raise SipError(f"more than {MAX_HEADER_LINES} header lines")
    start_line = raw_lines[0]
    if start_line[:1] in (" ", "\t"):
        raise SipError("start line begins with whitespace")
    unfolded: list[str] = []
    for line in raw_lines[1:]:
        if len(line) > MAX_LINE_CHARS:
            raise SipError(f"header line of {len(line)} characters exceeds {MAX_LINE_CHARS}")
        if line[:1] in (" ", "\t"):  # §7.3.1 folding: a continuation of the previous field
            if not unfolded:
                raise SipError("continuation line before any header")
            unfolded[-1] = unfolded[-1] + " " + line.strip()
            if len(unfolded[-1]) > MAX_LINE_CHARS:
                raise SipError(f"folded header exceeds {MAX_LINE_CHARS} characters")
        else:
            unfolded.append(line)
    fields: list[tuple[str, str]] = []
    for line in unfolded:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise SipError(f"header line {line[:60]!r} is not 'name: value'")
        fields.append((name, value.strip(" \t")))
    return start_line, SipHeaders(fields)


def _take_body(headers: SipHeaders, rest: bytes) -> bytes:
    lengths = headers.get_all("Content-Length")
    if not lengths:
        return rest
    if len(set(lengths)) != 1:
        raise SipError(f"conflicting Content-Length headers {sorted(set(lengths))}")
    text = lengths[0]
    if not text.isascii() or not text.isdigit():
        raise SipError(f"Content-Length {text[:30]!r} is not a non-negative decimal number")
    if len(text.lstrip("0")) > MAX_BODY_DIGITS:
        raise SipError(f"Content-Length {text[:30]} is larger than any message")
    length = int(text)
    if length > len(rest):
        raise SipError(f"Content-Length {length} exceeds the {len(rest)} bytes after the headers")
    return rest[:length]  # §18.3: on UDP, bytes past Content-Length are discarded


def response_to(
    request: SipRequest,
    status: int,
    reason: str = "",
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response as a UAS builds it (RFC 3261 §8.2.6.2): Via, From, Call-ID, CSeq copied, To with our tag
    added when it has none (§8.2.6.2, not on 100 Trying), Record-Route copied for a dialog (§12.1.1).

    `headers` go after those (Contact, Content-Type, ...); a Content-Type belongs there when `body` is given.
    """
    copied: list[tuple[str, str]] = [("Via", via) for via in request.headers.get_all("Via")]
    copied.append(("From", request.headers.require("From")))
    to_value = request.headers.require("To")
    if to_tag is not None and status > 100:
        to_value = parse_name_addr(to_value, "To").with_tag(to_tag).format() if _tagless(to_value) else to_value
    copied.append(("To", to_value))
    copied.append(("Call-ID", request.call_id))
    copied.append(("CSeq", request.headers.require("CSeq")))
    if 100 < status < 300:
        copied.extend(("Record-Route", route) for route in request.headers.get_all("Record-Route"))
    return SipResponse(
        status=status,
        reason=reason,
        headers=SipHeaders((*copied, *headers)),
        body=body,
    )


def _tagless(value: str) -> bool:
    return parse_name_addr(value, "To").tag is None


__all__ = [  # SipHeaders and canonical_name live in headers.py; callers import them from here too
    "MAX_MESSAGE_BYTES",
    "REASON_PHRASES",
    "SipHeaders",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "canonical_name",
    "parse_message",
    "response_to",
]
