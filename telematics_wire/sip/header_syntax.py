"""The lexical pieces SIP and MIME header values share (RFC 3261 §25.1, RFC 2045 §5.1): tokens, quoted
strings, `;name=value` parameters and comma-separated lists that respect quotes and angle brackets.

Everything here is total: text that breaks the grammar raises `SipError` naming the header and the fault.
"""

from __future__ import annotations

import re
from typing import Final

from telematics_wire.errors import SipError

# RFC 3261 token: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
TOKEN_PATTERN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 - RFC 3261's "token", no secret
_TOKEN: Final = re.compile(TOKEN_PATTERN)
# A parameter value may be a token, a host (IPv6 in brackets) or a quoted string.
_PARAM_VALUE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]/@?&=$]+")
MAX_PARAMS: Final = 32  # more parameters than any header of ours carries: a flood, refused

Params = tuple[tuple[str, str | None], ...]


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def check_token(text: str, what: str) -> str:
    if not is_token(text):
        raise SipError(f"{what} {text[:60]!r} is not a token")
    return text


def quote(text: str) -> str:
    """A quoted-string for a display name or parameter: backslash escapes for quote and backslash."""
    if any(ord(character) < 0x20 and character != "\t" for character in text) or "\x7f" in text:
        raise SipError(f"control character in quoted text {text[:60]!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_quoted(text: str, start: int, what: str) -> tuple[str, int]:
    """The quoted-string opening at `start` (a '"'): its unescaped content and the index after the close."""
    pieces: list[str] = []
    index = start + 1
    while index < len(text):
        character = text[index]
        if character == "\\":
            if index + 1 >= len(text):
                break
            pieces.append(text[index + 1])
            index += 2
            continue
        if character == '"':
            return "".join(pieces), index + 1
        pieces.append(character)
        index += 1
    raise SipError(f"{what}: unterminated quoted string")


def split_list(value: str, what: str) -> list[str]:
    """A comma-separated header value split into its elements (commas inside quotes or <...> kept)."""
    elements: list[str] = []
    current: list[str] = []
    index = 0
    in_angle = False
    while index < len(value):
        character = value[index]
        if character == '"':
            _, end = read_quoted(value, index, what)
            current.append(value[index:end])
            index = end
            continue
        if character == "<":
            in_angle = True
        elif character == ">":
            in_angle = False
        elif character == "," and not in_angle:
            elements.append("".join(current).strip())
            current = []
            index += 1
            continue
        current.append(character)
        index += 1
    if in_angle:
        raise SipError(f"{what}: '<' without '>'")
    elements.append("".join(current).strip())
    if any(not element for element in elements):
        raise SipError(f"{what}: empty element in a comma-separated list")
    return elements


def parse_params(text: str, what: str) -> Params:
    """`;name=value;flag` (the leading ';' included, or empty text) → ((name lowercased, value|None), ...)."""
    params: list[tuple[str, str | None]] = []
    index = 0
    text = text.strip()
    while index < len(text):
        if text[index] != ";":
            raise SipError(f"{what}: expected ';' before a parameter, got {text[index : index + 20]!r}")
        index += 1
        while index < len(text) and text[index] in " \t":
            index += 1
        name_match = _TOKEN.match(text, index)
        if name_match is None:
            raise SipError(f"{what}: parameter without a name at {text[index : index + 20]!r}")
        name = name_match.group().lower()
        index = _skip_space(text, name_match.end())
        value: str | None = None
        if index < len(text) and text[index] == "=":
            index = _skip_space(text, index + 1)
            if index < len(text) and text[index] == '"':
                value, index = read_quoted(text, index, what)
            else:
                value_match = _PARAM_VALUE.match(text, index)
                if value_match is None:
                    raise SipError(f"{what}: parameter {name} has no value after '='")
                value = value_match.group()
                index = value_match.end()
            index = _skip_space(text, index)
        params.append((name, value))
        if len(params) > MAX_PARAMS:
            raise SipError(f"{what}: more than {MAX_PARAMS} parameters")
    return tuple(params)


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t":
        index += 1
    return index


def format_params(params: Params) -> str:
    """((name, value|None), ...) → ';name=value;flag', quoting values that are not plain tokens."""
    pieces: list[str] = []
    for name, value in params:
        check_token(name, "parameter name")
        if value is None:
            pieces.append(f";{name}")
        elif _PARAM_VALUE.fullmatch(value):
            pieces.append(f";{name}={value}")
        else:
            pieces.append(f";{name}={quote(value)}")
    return "".join(pieces)


def param(params: Params, name: str) -> str | None:
    """The value of the first parameter called `name` (case-insensitive); '' for a flag without a value."""
    wanted = name.lower()
    for key, value in params:
        if key == wanted:
            return "" if value is None else value
    return None


def parse_media_type(text: str, what: str = "Content-Type") -> tuple[str, Params]:
    """`type/subtype;params` → ('type/subtype' lowercased, params). MIME types compare case-insensitively."""
    match = re.match(rf"\s*({TOKEN_PATTERN})\s*/\s*({TOKEN_PATTERN})\s*", text)
    if match is None:
        raise SipError(f"{what} {text[:60]!r} is not type/subtype")
    return f"{match.group(1)}/{match.group(2)}".lower(), parse_params(text[match.end() :], what)
