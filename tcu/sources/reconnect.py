"""Reconnecting a serial device source: the loop every reader shares (the backoff is tcu.backoff).

A serial reader (ELM327, SLCAN, NMEA, modem) lives as one coroutine under the app's TaskGroup:

    loop = ReconnectLoop(name="obd", backoff=Backoff(base_s=0.5, cap_s=30.0), rng=random.Random(),
                         on_down=lambda reason: state.mark_stale("obd", clock))
    await loop.run(session)   # session: async () -> None, opens the port and serves until it fails

`session` calls `loop.healthy()` once the device has proven itself (initialised, first answer): only
that resets the backoff. Opening a port is not proof — a pty can open while the adapter behind it is
mute — and resetting on open would hammer a dead device at the base rate forever.

Failures that end a session: any `SourceError` (device gone, timeouts, protocol), `OSError` and
pyserial's `SerialException` (an `OSError` subclass). Anything else is a bug: it is logged with its
traceback and retried too, since one broken source must never take the vehicle picture down with it.
Only cancellation ends `run`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import NoReturn

from tcu.backoff import Backoff
from tcu.errors import SourceError

_LOGGER = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class ReconnectLoop:
    """Run a device session again and again, waiting a capped, jittered backoff between failures."""

    def __init__(
        self,
        *,
        name: str,
        backoff: Backoff,
        rng: random.Random,
        on_down: Callable[[str], None],
        sleep: Sleep = asyncio.sleep,
        log_retries: bool = True,
    ) -> None:
        self._name = name
        # False: the owner's `on_down` tells people about an outage once; each retry is only debug.
        self._retry_level = logging.WARNING if log_retries else logging.DEBUG
        self._backoff = backoff
        self._rng = rng
        self._on_down = on_down
        self._sleep = sleep
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Failures since the last healthy session."""
        return self._attempt

    def healthy(self) -> None:
        """The current session works: the next failure starts the backoff from the base again."""
        self._attempt = 0

    async def run(self, session: Callable[[], Awaitable[None]]) -> NoReturn:
        while True:
            try:
                await session()
                reason = "session ended"
            except (SourceError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug; keep the rest of the agent alive and say so loudly
                _LOGGER.exception("%s: unexpected failure", self._name)
                reason = f"unexpected {type(exc).__name__}: {exc}"
            try:
                self._on_down(reason)
            except Exception:
                _LOGGER.exception("%s: on_down callback failed", self._name)
            delay = self._backoff.delay(self._attempt, self._rng)
            self._attempt += 1
            _LOGGER.log(
                self._retry_level, "%s: %s; retrying in %.2f s (attempt %d)", self._name, reason, delay, self._attempt
            )
            await self._sleep(delay)
