"""How the backend's commands print rows: `key=value` lines for people, or JSON with `--json`.

What a vehicle sent is printed too, so every value is made printable first, bounded: a body is
whatever a vehicle sent, and printing it must not fail (`str()` of a 5,000-digit integer raises; JSON
keys must be text; a deeply nested body must not exhaust the stack).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from telematics_wire.strict_cbor import describe

_MAX_PRINT_DEPTH = 32


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def printable(value: Any, depth: int = 0) -> Any:
    """`value` as JSON holds it, bounded (see the module's docstring)."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 64 else describe(value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if depth >= _MAX_PRINT_DEPTH:
        return describe(value)
    if isinstance(value, dict):
        return {_printable_key(key): printable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [printable(item, depth + 1) for item in value]
    return describe(value)


def _printable_key(key: object) -> str:
    return key if isinstance(key, str) else describe(key)


def emit(rows: list[dict[str, Any]], as_json: bool) -> None:
    shown = [printable(row) for row in rows]
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    for row in shown:
        print("  ".join(f"{key}={value}" for key, value in row.items()))
