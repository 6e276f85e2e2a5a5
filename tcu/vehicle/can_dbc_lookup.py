"""What a mapping key names in the CAN database: the `Message.Signal` lookup, the raw values a signal can
carry, and raw keys written as VAL_ names or integers. Every fault is a `ConfigError` naming `where`.
"""

from __future__ import annotations

import math
from typing import Any

from tcu.errors import ConfigError


def split_key(key: str, where: str) -> tuple[str, str]:
    message, dot, signal = key.partition(".")
    if not dot or not message or not signal or "." in signal:
        raise ConfigError(f'{where}: expected "Message.Signal" as the key, got {key!r}')
    return message, signal


def find_signal(database: Any, key: str, where: str) -> tuple[Any, Any]:
    message_name, signal_name = split_key(key, where)
    try:
        message = database.get_message_by_name(message_name)
    except KeyError:
        raise ConfigError(f"{where}: no message {message_name!r} in the CAN database") from None
    try:
        return message, message.get_signal_by_name(signal_name)
    except KeyError:
        names = ", ".join(s.name for s in message.signals)
        raise ConfigError(f"{where}: message {message_name} has no signal {signal_name!r} (it has {names})") from None


def raw_bounds(signal: Any) -> tuple[float, float]:
    """Raw values a signal can carry, narrowed to its DBC [min|max] (a [0|0] range means none)."""
    low, high = (-math.inf, math.inf) if signal.is_float else _integer_range(signal)
    minimum, maximum = signal.minimum, signal.maximum
    if (minimum is None and maximum is None) or minimum == maximum == 0:
        return low, high
    scale, offset = float(signal.scale), float(signal.offset)
    if scale == 0 or not math.isfinite(scale) or not math.isfinite(offset):
        raise ConfigError(f"signal {signal.name}: factor {scale:g} and offset {offset:g} do not make a physical value")
    ends = [(float(b) - offset) / scale for b in (minimum, maximum) if b is not None]
    slack = 1e-9 * max(1.0, *(abs(e) for e in ends))
    if minimum is not None:
        bound = (float(minimum) - offset) / scale
        low, high = (max(low, bound - slack), high) if scale > 0 else (low, min(high, bound + slack))
    if maximum is not None:
        bound = (float(maximum) - offset) / scale
        low, high = (low, min(high, bound + slack)) if scale > 0 else (max(low, bound - slack), high)
    return low, high


def raw_key(signal: Any, key: str | int, where: str) -> int:
    """A `values`/`invalid` key: a VAL_ name of the signal, or a raw integer ("3" or 3)."""
    choices = {str(name): int(raw) for raw, name in (signal.choices or {}).items()}
    if isinstance(key, str) and key in choices:
        return choices[key]
    raw: int | None = None
    if type(key) is int:
        raw = key
    elif isinstance(key, str) and key.strip().lstrip("+-").isdecimal() and key.isascii():
        raw = int(key)
    if raw is None:  # a float (1.9 would silently be raw 1), a bool, a list, a table, an unknown name
        known = ", ".join(choices) or "none: the signal has no VAL_ table"
        raise ConfigError(
            f"{where}: {key!r} is neither a VAL_ name of {signal.name} (names: {known}) nor a raw integer"
        )
    low, high = _integer_range(signal)
    if not low <= raw <= high:
        raise ConfigError(f"{where}: raw value {raw} does not fit the {signal.length}-bit signal {signal.name}")
    return raw


def _integer_range(signal: Any) -> tuple[int, int]:
    """The raw integers a signal's bits can hold."""
    if signal.is_signed:
        return -(1 << (signal.length - 1)), (1 << (signal.length - 1)) - 1
    return 0, (1 << signal.length) - 1
