"""The header values that identify a SIP transaction and dialog (RFC 3261 §8.1.1, §12, §18.2.1, §20):
Call-ID, tags and branches, Via (branch, rport, received), CSeq, From/To/Contact name-addrs and SIP URIs.

Fresh identifiers come from `secrets`: a Call-ID, tag or branch a peer can guess lets it inject BYEs.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from typing import Final

from telematics_wire.errors import SipError
from telematics_wire.sip.header_syntax import (
    TOKEN_PATTERN,
    Params,
    check_token,
    format_params,
    param,
    parse_params,
    quote,
    read_quoted,
)

BRANCH_COOKIE: Final = "z9hG4bK"  # RFC 3261 §8.1.1.7: marks a branch as globally unique
MAX_CSEQ: Final = 2**31 - 1  # §8.1.1.5: the sequence number is below 2**31
_VIA: Final = re.compile(rf"\s*SIP\s*/\s*2\.0\s*/\s*({TOKEN_PATTERN})\s+([^\s;]+)\s*", re.IGNORECASE)
_HOST_PORT: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?")
_CSEQ: Final = re.compile(rf"\s*([0-9]{{1,10}})\s+({TOKEN_PATTERN})\s*")
_SIP_URI: Final = re.compile(
    r"(sips?):(?:([^@;?]+)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?([^?]*)(\?.*)?", re.IGNORECASE
)
_URI_CHARS: Final = re.compile(r"[^\s<>\"\x00-\x1f\x7f]+")


def new_call_id(host: str | None = None) -> str:
    """A fresh Call-ID: 128 random bits, with `@host` when given (RFC 3261 §8.1.1.4)."""
    local = secrets.token_hex(16)
    return f"{local}@{host}" if host else local


def new_tag() -> str:
    """A fresh From/To tag: 64 random bits (§19.3 asks for at least 32)."""
    return secrets.token_hex(8)


def new_branch() -> str:
    """A fresh Via branch starting with the magic cookie z9hG4bK (§8.1.1.7)."""
    return BRANCH_COOKIE + secrets.token_hex(12)


def _port(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    port = int(text)
    if not 1 <= port <= 65_535:
        raise SipError(f"{what}: port {port} is outside 1..65535")
    return port


def parse_host_port(text: str, what: str) -> tuple[str, int | None]:
    """`host[:port]` with IPv6 in brackets → (host, port|None)."""
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None:
        raise SipError(f"{what}: {text[:60]!r} is not host[:port]")
    return match.group(1), _port(match.group(2), what)


def format_host_port(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Via:
    """One Via value: `SIP/2.0/<transport> <host>[:<port>];params`."""

    transport: str = "UDP"
    host: str
    port: int | None = None
    params: Params = ()

    def __post_init__(self) -> None:
        check_token(self.transport, "Via transport")
        parse_host_port(format_host_port(self.host, self.port), "Via sent-by")

    @property
    def branch(self) -> str | None:
        return param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return param(self.params, "received")

    @property
    def rport(self) -> int | None:
        """The port the request came from, as a server filled it in (RFC 3581); None if absent or empty."""
        value = param(self.params, "rport")
        if not value:
            return None
        if not value.isascii() or not value.isdigit() or len(value) > 5:
            raise SipError(f"Via rport {value[:20]!r} is not a port")
        return _port(value, "Via rport")

    def with_param(self, name: str, value: str | None) -> Via:
        """This Via with `name` set to `value` (replacing any earlier one, keeping its place)."""
        lowered = name.lower()
        if any(key == lowered for key, _ in self.params):
            params = tuple((key, value if key == lowered else old) for key, old in self.params)
        else:
            params = (*self.params, (lowered, value))
        return replace(self, params=params)

    def format(self) -> str:
        return f"SIP/2.0/{self.transport.upper()} {format_host_port(self.host, self.port)}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    """One Via value (not a comma list: `SipHeaders.get_all("Via")` splits those)."""
    match = _VIA.match(text)
    if match is None:
        raise SipError(f"Via {text[:60]!r} is not 'SIP/2.0/<transport> <host>[:<port>]'")
    host, port = parse_host_port(match.group(2), "Via sent-by")
    params = parse_params(text[match.end() :], "Via")
    via = Via(transport=match.group(1).upper(), host=host, port=port, params=params)
    via.rport  # noqa: B018 - validates a filled-in rport now rather than at first use
    return via


@dataclass(frozen=True, slots=True, kw_only=True)
class CSeq:
    number: int
    method: str

    def __post_init__(self) -> None:
        if isinstance(self.number, bool) or not isinstance(self.number, int) or not 0 <= self.number <= MAX_CSEQ:
            raise SipError(f"CSeq number {self.number!r} is outside 0..2**31-1")
        check_token(self.method, "CSeq method")

    def format(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    match = _CSEQ.fullmatch(text)
    if match is None:
        raise SipError(f"CSeq {text[:60]!r} is not '<number> <method>'")
    return CSeq(number=int(match.group(1)), method=match.group(2))


@dataclass(frozen=True, slots=True, kw_only=True)
class NameAddr:
    """A From, To or Contact value: optional display name, the URI, header parameters (tag, expires...)."""

    uri: str
    display_name: str | None = None
    params: Params = ()

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or _URI_CHARS.fullmatch(self.uri) is None:
            raise SipError(f"URI {self.uri!r} is empty or holds whitespace, quotes or angle brackets")

    @property
    def tag(self) -> str | None:
        return param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        check_token(tag, "tag")
        kept = tuple((key, value) for key, value in self.params if key != "tag")
        return replace(self, params=(*kept, ("tag", tag)))

    def format(self) -> str:
        name = f"{quote(self.display_name)} " if self.display_name else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str, what: str = "name-addr") -> NameAddr:
    """`"Name" <uri>;params`, `Name <uri>;params` or a bare `uri;params` (§20.10: params then belong to the header)."""
    text = text.strip()
    display: str | None = None
    if text.startswith('"'):
        display, index = read_quoted(text, 0, what)
        text = text[index:].lstrip()
        if not text.startswith("<"):
            raise SipError(f"{what}: display name without <uri>")
    if "<" in text.split(";", 1)[0] or text.startswith("<"):
        before, _, rest = text.partition("<")
        if display is None and before.strip():
            display = before.strip()
        uri, closed, after = rest.partition(">")
        if not closed:
            raise SipError(f"{what}: '<' without '>'")
        return NameAddr(uri=uri.strip(), display_name=display, params=parse_params(after, what))
    uri, _, after = text.partition(";")
    return NameAddr(uri=uri.strip(), params=parse_params(";" + after if after else "", what))


@dataclass(frozen=True, slots=True, kw_only=True)
class SipUri:
    """`sip:[user@]host[:port][;params]`: where to send a request (Contact, Route, Request-URI)."""

    scheme: str = "sip"
    user: str | None = None
    host: str
    port: int | None = None
    params: Params = ()

    def format(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}:{user}{format_host_port(self.host, self.port)}{format_params(self.params)}"


def parse_sip_uri(text: str) -> SipUri:
    match = _SIP_URI.fullmatch(text.strip())
    if match is None:
        raise SipError(f"{text[:60]!r} is not a sip: or sips: URI")
    params = parse_params(match.group(5), "SIP URI")
    return SipUri(
        scheme=match.group(1).lower(),
        user=match.group(2),
        host=match.group(3),
        port=_port(match.group(4), "SIP URI"),
        params=params,
    )
