"""What the backend store can hold and read back: a record's sequence number, kind, creation time and
body, and the signals that may become a last value.

A record outside these bounds is refused at ingest (`UnstorableError`, one rejection); a signal that
cannot be a last value stays in its record's body and is named to the caller (`signal_problem`;
`usable_signals` for a record's signals at once).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import cbor2

from backend_stub.errors import UnstorableError
from telematics_wire.envelope import MAX_KIND_CHARS
from telematics_wire.records import MAX_MILLIS, ReceivedRecord, from_millis, to_millis
from telematics_wire.signal_values import MAX_LIST_ITEM_CHARS, MAX_LIST_ITEMS
from telematics_wire.strict_cbor import describe

MAX_STORED_SEQ = 2**63 - 1  # SQLite's INTEGER; the protocol's own bound is lower (envelope.MAX_SEQ)
MAX_PATH_CHARS = 256  # VSS paths are well under 100 characters
_MAX_INT_VALUE = 2**64  # CBOR's own integers (major types 0 and 1); bignums are not signal values
_PLAIN_VALUE_TYPES = frozenset({bool, float, str})  # a value of these types is a reading as it is


def signal_problem(path: object, item: object) -> str | None:
    """Why this `signals` entry cannot be a last value, or None when it can (docs/protocol.md)."""
    if not isinstance(path, str) or not 1 <= len(path) <= MAX_PATH_CHARS:
        return f"path is not text of 1..{MAX_PATH_CHARS} characters"
    if "\0" in path:  # PostgreSQL's text cannot hold it (the record store may be there)
        return "path holds the character U+0000"
    if not isinstance(item, dict) or "v" not in item:
        return 'not a map with a value "v"'
    stamp = item.get("t")
    if type(stamp) is not int or not 0 <= stamp <= MAX_MILLIS:
        return f'time "t" is {describe(stamp)}, not milliseconds since 1970 up to year 9999'
    value = item["v"]
    if type(value) is list:
        return _list_problem(value)
    if type(value) not in (bool, int, float, str):
        return f"value is {describe(value)}, not bool, int, float or text, nor an array of text"
    if type(value) is int and not -_MAX_INT_VALUE <= value < _MAX_INT_VALUE:
        return f"value is {describe(value)}, beyond a CBOR integer"
    return None


def usable_signals(signals: dict[Any, Any]) -> tuple[Collection[str], tuple[str, ...]]:
    """(the paths whose entries may be a last value, a reason for each other entry) of a `signals` map.

    The common case, every entry a plain reading, is checked in one pass without building a reason;
    anything else goes through `signal_problem` entry by entry, which words the reasons."""
    for path, item in signals.items():
        # Only what `signal_problem` accepts passes here; a list value (or anything odd) takes the long way.
        if type(path) is not str or not 0 < len(path) <= MAX_PATH_CHARS or "\0" in path or type(item) is not dict:
            break
        stamp = item.get("t")
        value: Any = item.get("v")  # None when missing: no reading either
        if type(stamp) is not int or not 0 <= stamp <= MAX_MILLIS:
            break
        kind = type(value)
        if kind not in _PLAIN_VALUE_TYPES and (kind is not int or not -_MAX_INT_VALUE <= value < _MAX_INT_VALUE):
            break
    else:
        return signals.keys(), ()
    paths, skipped = [], []
    for path, item in signals.items():
        problem = signal_problem(path, item)
        if problem is None:
            paths.append(path)
        else:
            skipped.append(f"signal {describe(path)}: {problem}")
    return paths, tuple(skipped)


def _list_problem(value: list[Any]) -> str | None:
    """An array value is a VSS string[] (stored DTC codes): at most a few short strings."""
    if len(value) > MAX_LIST_ITEMS:
        return f"value is an array of {len(value)} items, more than {MAX_LIST_ITEMS}"
    for index, element in enumerate(value):
        if type(element) is not str:
            return f"value is an array whose item {index} is {describe(element)}, not text"
        if not 1 <= len(element) <= MAX_LIST_ITEM_CHARS:
            chars = f"1..{MAX_LIST_ITEM_CHARS} characters"
            return f"value is an array whose item {index} is {describe(element)}, not {chars}"
    return None


def storable(record: ReceivedRecord) -> tuple[str, int, bytes]:
    """(kind as sent, creation ms, encoded body) of a record the store can hold and read back."""
    if type(record.seq) is not int or not 1 <= record.seq <= MAX_STORED_SEQ:
        raise UnstorableError(f"sequence number {describe(record.seq)} outside 1..{MAX_STORED_SEQ}")
    kind = record.kind_name or record.kind.value
    if not 1 <= len(kind) <= MAX_KIND_CHARS:
        raise UnstorableError(f"record kind {describe(kind)} is not 1..{MAX_KIND_CHARS} characters")
    if "\0" in kind:
        raise UnstorableError(f"record kind {describe(kind)} holds the character U+0000")
    created = to_millis(record.created)
    if not 0 <= created <= MAX_MILLIS:
        raise UnstorableError(f"creation time {created} ms is outside 1970..9999")
    try:
        body = cbor2.dumps(dict(record.body))
        cbor2.loads(body)
    except (cbor2.CBOREncodeError, cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise UnstorableError(f"record body does not encode and decode again ({type(exc).__name__})") from exc
    return kind, created, body


def stored_moment(millis: int) -> datetime:
    # Rows written before the store checked times may hold any integer: reading never fails on them.
    return from_millis(min(max(millis, 0), MAX_MILLIS))
