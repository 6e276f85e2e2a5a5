"""multipart/mixed bodies (RFC 2046 §5.1) as the NG-eCall INVITE, its answer and INFO carry them.

Parts travel with Content-Transfer-Encoding binary where they need it: the MSD is UPER bytes and must
arrive bit for bit, so the builder picks a boundary that occurs in no part and the parser never touches
a part's bytes (only base64, which some peers use, is decoded). Parsing is total: a missing or malformed
boundary, a body without its close delimiter, too many parts or broken part headers raise `SipError`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from telematics_wire.errors import SipError
from telematics_wire.sip.header_syntax import check_token, param, parse_media_type
from telematics_wire.sip.headers import SipHeaders

MULTIPART_MIXED: Final = "multipart/mixed"
MAX_PARTS: Final = 16
MAX_PART_HEADER_BYTES: Final = 4_096
# RFC 2046 §5.1.1 bchars, at most 70 of them, not ending in a space.
_BOUNDARY: Final = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_PART_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_TRANSFER_ENCODINGS: Final = frozenset({"binary", "8bit", "7bit", "base64"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyPart:
    """One part: its media type (parameters kept as written), Content-ID without <>, disposition, bytes."""

    content_type: str
    data: bytes
    content_id: str | None = None
    disposition: str | None = None
    transfer_encoding: str | None = None  # "binary" for the MSD; None writes no header

    def __post_init__(self) -> None:
        parse_media_type(self.content_type)
        if not isinstance(self.data, bytes):
            raise SipError(f"part data must be bytes, got {type(self.data).__name__}")
        if self.content_id is not None and not re.fullmatch(r"[^\s<>\"]+", self.content_id):
            raise SipError(f"Content-ID {self.content_id!r} holds whitespace, quotes or angle brackets")
        if self.transfer_encoding is not None and self.transfer_encoding.lower() not in _TRANSFER_ENCODINGS:
            raise SipError(f"Content-Transfer-Encoding {self.transfer_encoding!r} is not supported")

    @property
    def media_type(self) -> str:
        """'type/subtype' lowercased, without parameters: what to compare."""
        return parse_media_type(self.content_type)[0]

    def header_fields(self) -> list[tuple[str, str]]:
        fields = [("Content-Type", self.content_type)]
        if self.content_id is not None:
            fields.append(("Content-ID", f"<{self.content_id}>"))
        if self.disposition is not None:
            fields.append(("Content-Disposition", self.disposition))
        if self.transfer_encoding is not None:
            fields.append(("Content-Transfer-Encoding", self.transfer_encoding))
        SipHeaders(fields)  # the same checks as SIP headers: no line breaks smuggled into a part
        return fields


def new_boundary() -> str:
    return "ecall-" + secrets.token_hex(12)


def build_multipart(parts: Sequence[BodyPart], *, boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type header value, body) for `parts`; the boundary is checked against every part's bytes."""
    if not parts:
        raise SipError("a multipart body needs at least one part")
    if len(parts) > MAX_PARTS:
        raise SipError(f"{len(parts)} parts exceed {MAX_PARTS}")
    chosen = boundary if boundary is not None else new_boundary()
    if _BOUNDARY.fullmatch(chosen) is None:
        raise SipError(f"boundary {chosen!r} breaks RFC 2046's boundary rules")
    delimiter = b"--" + chosen.encode()
    if any(delimiter in part.data for part in parts):
        if boundary is not None:
            raise SipError(f"boundary {chosen!r} occurs inside a part")
        return build_multipart(parts)  # a random boundary inside the data: draw another
    chunks: list[bytes] = []
    for part in parts:
        head = "".join(f"{name}: {value}\r\n" for name, value in part.header_fields())
        chunks.append(delimiter + b"\r\n" + head.encode() + b"\r\n" + part.data + b"\r\n")
    chunks.append(delimiter + b"--\r\n")
    quoted = chosen if re.fullmatch(r"[0-9A-Za-z\-._]+", chosen) else f'"{chosen}"'
    return f"{MULTIPART_MIXED};boundary={quoted}", b"".join(chunks)


def boundary_of(content_type: str) -> str:
    media_type, params = parse_media_type(content_type)
    if not media_type.startswith("multipart/"):
        raise SipError(f"Content-Type {media_type} is not multipart")
    boundary = param(params, "boundary")
    if not boundary or _BOUNDARY.fullmatch(boundary) is None:
        raise SipError(f"Content-Type {media_type} has no valid boundary parameter")
    return boundary


def parse_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    """The parts of a multipart body, in order; preamble and epilogue are ignored as RFC 2046 says."""
    delimiter = b"--" + boundary_of(content_type).encode()
    # A delimiter line starts the body or follows a line break; what ends a part's data is CRLF--boundary.
    starts = [match.start() for match in re.finditer(rb"(?:^|(?<=\n))" + re.escape(delimiter), body)]
    if not starts:
        raise SipError("multipart body has no boundary line")
    parts: list[BodyPart] = []
    for index, start in enumerate(starts):
        after = start + len(delimiter)
        line_end = body.find(b"\n", after)
        tail = body[after : len(body) if line_end < 0 else line_end].rstrip(b"\r")
        if tail.startswith(b"--"):
            if tail[2:].strip(b" \t"):
                raise SipError("text after the close delimiter on its line")
            return parts  # the close delimiter: the rest is epilogue
        if tail.strip(b" \t") or line_end < 0:
            raise SipError("boundary line carries text after the boundary")  # linear white space only (§5.1.1)
        if index + 1 >= len(starts):
            break
        end = starts[index + 1]
        data_end = end - 2 if body[end - 2 : end] == b"\r\n" else end - 1  # the CRLF before -- belongs to it
        parts.append(_parse_part(body[line_end + 1 : data_end]))
        if len(parts) > MAX_PARTS:
            raise SipError(f"multipart body has more than {MAX_PARTS} parts")
    raise SipError("multipart body has no close delimiter")


def _parse_part(raw: bytes) -> BodyPart:
    if raw.startswith(b"\r\n") or raw.startswith(b"\n"):
        head_text, data = "", raw[2:] if raw.startswith(b"\r\n") else raw[1:]
    else:
        head_end = _PART_HEAD_END.search(raw, 0, MAX_PART_HEADER_BYTES + 4)
        if head_end is None:
            raise SipError("body part has no empty line after its headers (or headers over 4 KiB)")
        try:
            head_text = raw[: head_end.start()].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SipError("body part headers are not UTF-8") from exc
        data = raw[head_end.end() :]
    fields: list[tuple[str, str]] = []
    for line in re.split(r"\r?\n", head_text) if head_text else []:
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipError(f"body part header {line[:60]!r} is not 'name: value'")
        fields.append((check_token(name.strip(), "body part header name"), value.strip()))
    headers = SipHeaders(fields)
    content_id = headers.get("Content-ID")
    encoding = headers.get("Content-Transfer-Encoding")
    if encoding is not None and encoding.lower() not in _TRANSFER_ENCODINGS:
        raise SipError(f"body part Content-Transfer-Encoding {encoding!r} is not supported")
    if encoding is not None and encoding.lower() == "base64":
        try:
            data = base64.b64decode(re.sub(rb"\s+", b"", data), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SipError("body part is not valid base64") from exc
    return BodyPart(
        content_type=headers.get("Content-Type") or "text/plain",  # RFC 2046 §5.1: the default
        data=data,
        content_id=_strip_angles(content_id) if content_id is not None else None,
        disposition=headers.get("Content-Disposition"),
        transfer_encoding=encoding,
    )


def _strip_angles(content_id: str) -> str:
    text = content_id.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        raise SipError("empty Content-ID")
    return text
