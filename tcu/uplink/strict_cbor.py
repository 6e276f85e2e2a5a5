"""Strict CBOR decoding for the wire protocol: one item, well-formed, no duplicate map keys.

cbor2 is lenient in two ways a protocol boundary must not be: it ignores bytes after the first item,
and it lets a repeated map key silently overwrite the first, so two decoders could read one message
differently. `loads_strict` rejects both with a reason. When the bytes are exactly what cbor2 itself
would write for the decoded value (this protocol's own encoder), neither can have happened; anything
else is walked structurally (heads and lengths, RFC 8949 §3 and Appendix C) before it is accepted.
"""

from __future__ import annotations

from typing import Any

import cbor2

from tcu.errors import CborError

MAX_DEPTH = 16
_BREAK = 0xFF


def loads_strict(data: bytes, what: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode exactly one well-formed CBOR item from `data`, or raise `CborError` naming `what`."""
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError, MemoryError) as exc:
        raise CborError(f"malformed CBOR in {what}: {exc}") from exc
    if _encodes_back(value, data):
        return value  # the usual case: what cbor2 writes (this protocol's own encoder) holds no duplicates
    end = _Walker(data, what, max_depth).item(0, 0)
    if end != len(data):
        raise CborError(f"malformed {what}: {len(data) - end} byte(s) after the CBOR item")
    return value


def _encodes_back(value: Any, data: bytes) -> bool:
    """True when `data` is exactly cbor2's encoding of `value`: one item, unique keys, nothing after.

    Ten times cheaper than the structural walk, which runs only for what another encoder wrote.
    """
    try:
        return bool(cbor2.dumps(value) == data)
    except (cbor2.CBOREncodeError, ValueError, TypeError, RecursionError, OverflowError):
        return False


class _Walker:
    def __init__(self, data: bytes, what: str, max_depth: int) -> None:
        self._data = data
        self._what = what
        self._max_depth = max_depth

    def _fail(self, reason: str) -> CborError:
        return CborError(f"malformed CBOR in {self._what}: {reason}")

    def _head(self, pos: int) -> tuple[int, int, int | None, int]:
        """(major type, additional info, argument or None when indefinite, position after the head)."""
        data = self._data
        if pos >= len(data):
            raise self._fail("truncated")
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        pos += 1
        if info < 24:
            return major, info, info, pos
        if info <= 27:
            size = 1 << (info - 24)
            if pos + size > len(data):
                raise self._fail("truncated")
            return major, info, int.from_bytes(data[pos : pos + size], "big"), pos + size
        if info == 31 and major in (2, 3, 4, 5, 7):
            return major, info, None, pos
        raise self._fail(f"reserved additional information {info} at byte {pos - 1}")

    def item(self, pos: int, depth: int) -> int:
        """Position after the item that starts at `pos`."""
        if depth > self._max_depth:
            raise self._fail(f"nested deeper than {self._max_depth} levels")
        major, info, arg, pos = self._head(pos)
        if major in (0, 1):
            return pos
        if major in (2, 3):
            return self._string(major, arg, pos)
        if major == 4:
            return self._array(arg, pos, depth)
        if major == 5:
            return self._map(arg, pos, depth)
        if major == 6:
            return self.item(pos, depth + 1)
        if arg is None:
            raise self._fail("unexpected break code")
        if info == 24 and arg < 32:
            raise self._fail("simple value in two bytes below 32")
        return pos

    def _string(self, major: int, length: int | None, pos: int) -> int:
        if length is not None:
            if pos + length > len(self._data):
                raise self._fail("truncated string")
            return pos + length
        while self._peek(pos) != _BREAK:  # indefinite: definite chunks of the same major type
            chunk_major, _, chunk_length, pos = self._head(pos)
            if chunk_major != major or chunk_length is None:
                raise self._fail("bad chunk in an indefinite-length string")
            pos = self._string(major, chunk_length, pos)
        return pos + 1

    def _array(self, count: int | None, pos: int, depth: int) -> int:
        if count is None:
            while self._peek(pos) != _BREAK:
                pos = self.item(pos, depth + 1)
            return pos + 1
        for _ in range(count):
            pos = self.item(pos, depth + 1)
        return pos

    def _map(self, count: int | None, pos: int, depth: int) -> int:
        seen: set[object] = set()
        index = 0
        while (count is None and self._peek(pos) != _BREAK) or (count is not None and index < count):
            key, pos = self._key(pos, depth)
            if key in seen:
                raise self._fail(f"duplicate map key {describe(key)}")
            seen.add(key)
            pos = self.item(pos, depth + 1)
            index += 1
        return pos if count is not None else pos + 1

    def _key(self, pos: int, depth: int) -> tuple[object, int]:
        """A key's identity: its value for integers and definite text (the keys of this protocol), its
        encoded bytes for anything else."""
        major, _, arg, end = self._head(pos)
        if major == 0 and arg is not None:
            return arg, end
        if major == 1 and arg is not None:
            return -1 - arg, end
        if major == 3 and arg is not None:
            if end + arg > len(self._data):
                raise self._fail("truncated map key")
            try:
                return self._data[end : end + arg].decode("utf-8"), end + arg
            except UnicodeDecodeError as exc:
                raise self._fail("map key is not valid UTF-8") from exc
        end = self.item(pos, depth + 1)
        return ("encoded", self._data[pos:end]), end

    def _peek(self, pos: int) -> int:
        if pos >= len(self._data):
            raise self._fail("truncated: missing break code")
        return self._data[pos]


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
