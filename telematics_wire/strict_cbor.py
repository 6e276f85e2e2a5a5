"""Strict CBOR for every message of the wire protocol, both directions.

cbor2's defaults are lenient in ways a protocol boundary must not be: `loads` ignores bytes after the
first item, a repeated map key silently overwrites the first (two decoders could then read one message
differently), and tags turn into datetimes, sets, regular expressions or shared references that can
build cyclic values. `loads_strict` takes exactly one item, refuses duplicate keys, nesting deeper than
`MAX_DEPTH` and every tag except bignums (2, 3) and those the caller allows, and turns *whatever*
cbor2 raises on hostile input into one `CborError` with the reason.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from typing import Any

import cbor2

from telematics_wire.errors import CborError

MAX_DEPTH = 16  # the deepest message of the protocol nests 5 levels; deeper attacks the decoder
_MAX_REASON_CHARS = 120


def _refusing(number: int) -> Any:
    def refuse(*_args: object) -> Any:
        raise ValueError(f"CBOR tag {number} is not allowed in this protocol")

    return refuse


# Tags cbor2 decodes itself (datetimes, decimals, regular expressions, MIME messages, UUIDs, sets, IP
# addresses, shared references); any other tag reaches `tag_hook`. Bignums decode to plain ints.
_SEMANTIC_TAGS = (0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 256, 258, 260, 261)
_REFUSED_SEMANTICS = {tag: _refusing(tag) for tag in _SEMANTIC_TAGS}


def loads_strict(data: bytes, what: str, *, allowed_tags: Collection[int] = ()) -> Any:
    """Decode exactly one strict CBOR item from `data`, or raise `CborError` naming `what`.

    A tag in `allowed_tags` is returned as a `cbor2.CBORTag` wherever it stands; the caller checks
    where it may stand (COSE_Sign1's tag 18 only on top).
    """

    def tag_hook(tag: cbor2.CBORTag, _immutable: bool) -> Any:
        if tag.tag not in allowed_tags:
            raise ValueError(f"CBOR tag {describe(tag.tag)} is not allowed in this protocol")
        return tag

    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream,
            allow_duplicate_keys=False,
            max_depth=MAX_DEPTH,
            semantic_decoders=_REFUSED_SEMANTICS,
            tag_hook=tag_hook,
        ).decode()
    except Exception as exc:  # cbor2 raises its own errors, ValueError, OverflowError, MemoryError, ...
        raise CborError(f"malformed CBOR in {what}: {_reason(exc)}") from exc
    if stream.tell() != len(data):
        raise CborError(f"malformed {what}: {len(data) - stream.tell()} byte(s) after the CBOR item")
    return value


def _reason(exc: BaseException) -> str:
    try:
        text = str(exc)
        cause = exc.__cause__ or exc.__context__
        if cause is not None:  # cbor2 wraps what a tag decoder raised: say that too
            text = f"{text}: {cause}"
    except Exception:  # a message built from a hostile value may itself fail to print
        text = type(exc).__name__
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS] + "…"


def describe(value: object, limit: int = 40) -> str:
    """A short, always-safe rendering of a foreign value for a rejection reason.

    `str()` of a 10,000-digit integer raises (Python's int-to-str limit) and a forged container can be
    arbitrarily large, so only small scalars are shown as they are.
    """
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return f"a {type(value).__name__}"
