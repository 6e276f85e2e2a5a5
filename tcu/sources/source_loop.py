"""How a device source (ELM327, SLCAN, python-can, NMEA, modem) reconnects: `tcu.reconnect.ReconnectLoop`
with the sources' rule for what ends a session.

A `SourceError` (device gone, timeouts, protocol), an `OSError` or pyserial's `SerialException` (an
`OSError` subclass) is a device failure. Anything else is a bug: it is logged with its traceback and
retried too, since one broken source must never take the vehicle picture down with it. A session
proves itself by calling `loop.healthy()` once the device works (initialised, first answer, first frame)
and then staying up for the backoff's cap.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from tcu.backoff import Backoff
from tcu.errors import SourceError
from tcu.reconnect import ReconnectLoop, Sleep


def device_failure_reason(exc: Exception) -> str | None:
    """The reason a device session ended, or None for a bug."""
    if isinstance(exc, SourceError | OSError):
        return f"{type(exc).__name__}: {exc}"
    return None


def source_reconnect_loop(
    *,
    name: str,
    backoff: Backoff,
    on_down: Callable[[str], None],
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
    log_retries: bool = True,
) -> ReconnectLoop:
    return ReconnectLoop(
        name=name,
        backoff=backoff,
        rng=rng or random.Random(),  # noqa: S311 - backoff jitter, not cryptography
        on_down=on_down,
        failure_reason=device_failure_reason,
        sleep=sleep,
        log_retries=log_retries,
    )
