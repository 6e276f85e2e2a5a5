"""TOML for the config files a bench writes (agent and backend), from the config dataclasses.

The one place hil turns values into TOML text: `toml_table` writes a table of plain values, and
`config_table` the fields of a config dataclass (`tcu.config.UplinkConfig`, `QueueConfig`, ...) that
differ from the field's default, so a written file reads like one a person wrote, and a value the
agent would refuse (a negative interval, a queue below its minimum) is refused here already, by the
dataclass. A value TOML cannot hold, or one the agent would read back as something else (NaN, an
infinity, a string with a lone surrogate), raises ValueError naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

TomlScalar = str | bool | int | float | Path
TomlValue = TomlScalar | Sequence[TomlScalar]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_key(key: str) -> str:
    """A key as TOML writes it, each part bare when it can be, else quoted; a dotted key
    ("timers.t5_s") is a key of a sub-table, as in TOML."""
    return ".".join(part if _BARE_KEY.fullmatch(part) else toml_string(part, where="a key") for part in key.split("."))


def toml_string(text: str, *, where: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped, the rest as it is."""
    out = []
    for char in text:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"{where}: {text!r} holds a lone surrogate (U+{code:04X}), which TOML cannot hold")
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: object, *, where: str) -> str:
    """One value; `where` names it in an error (e.g. "uplink.ack_timeout_s")."""
    if isinstance(value, bool):  # before int: True is an int to Python, a boolean to TOML
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{where}: {value} is outside TOML's 64-bit integers")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return toml_string(value, where=where)
    if isinstance(value, Path):
        return toml_string(str(value), where=where)
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item, where=f"{where}[{i}]") for i, item in enumerate(value)) + "]"
    raise ValueError(
        f"{where}: {type(value).__name__} {value!r} has no TOML form here (a number, string, bool or list)"
    )


def toml_table(name: str, values: Mapping[str, TomlValue | None]) -> str:
    """`[name]` and its `key = value` lines, in the mapping's order; None values are left out.
    A dotted `name` ("sources.can") is a sub-table; its parts are written as keys are."""
    header = toml_key(name)
    lines = "".join(
        f"{toml_key(key)} = {toml_value(value, where=f'{name}.{key}')}\n"
        for key, value in values.items()
        if value is not None
    )
    return f"[{header}]\n{lines}"


def toml_lines(values: Mapping[str, TomlValue | None], *, where: str) -> str:
    """`key = value` lines, without a header (the top of a file); None values are left out."""
    return "".join(
        f"{toml_key(key)} = {toml_value(value, where=f'{where}.{key}')}\n"
        for key, value in values.items()
        if value is not None
    )


def changed_fields(config: DataclassInstance, *, always: Collection[str] = ()) -> dict[str, Any]:
    """The fields of `config` that differ from their defaults (and those named in `always`), in
    declaration order: what a person would write in that section."""
    changed: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.default is not dataclasses.MISSING:
            default: object = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = dataclasses.MISSING
        if item.name in always or value != default:
            changed[item.name] = value
    return changed


def config_table(name: str, config: DataclassInstance, *, always: Collection[str] = ()) -> str:
    """The `[name]` table of a config dataclass: its fields that differ from their defaults."""
    return toml_table(name, changed_fields(config, always=always))
